"""DeepRec: deep recommenders behind an HTTP API."""

__version__ = "0.1.0"
