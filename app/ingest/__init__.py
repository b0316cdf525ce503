"""Bulk ingestion from files and generators: MovieLens, generic CSV, synthetic demo data."""
