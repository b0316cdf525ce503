"""One log format for every process (server, worker, CLI): JSON lines by default, text by a setting
(DEEPREC_LOG_FORMAT). One handler on the root logger writes to stderr; uvicorn's own loggers hand their
records to it rather than printing their own copy."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from typing import Any

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
_STD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STD_ATTRS and k != "request_id"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, request_id and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or request_id_var.get()
        if rid:
            out["request_id"] = rid
        out.update(_extras(record))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    """One line per record with its ``extra`` fields as key=value (request ids, job ids, models)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        fields = _extras(record)
        rid = getattr(record, "request_id", None) or request_id_var.get()
        if rid:
            fields = {"request_id": rid, **fields}
        extras = " ".join(f"{k}={v}" for k, v in fields.items())
        return f"{super().format(record)} {extras}".rstrip()


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time (test runners swap it)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


FORMATTERS = {"json": JsonFormatter, "text": TextFormatter}


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """The root logger writes each record once, in ``fmt``, to stderr: handlers that print to the
    console (logging.basicConfig's, an earlier call's) are replaced; others (files, test capture) stay.
    Idempotent, so the CLI and the app factory may both call it."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if type(h) in (logging.StreamHandler, StderrHandler):
            root.removeHandler(h)
    handler = StderrHandler()
    handler.setFormatter(FORMATTERS[fmt]())
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):  # through the root handler, once
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate, logger.disabled = True, False
    logging.getLogger("uvicorn.access").disabled = True  # deeprec.access writes one line per request
