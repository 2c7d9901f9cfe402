"""Process logging: one JSON object per line for the service (what log shippers parse), plain text for people.

Records keep their `extra=` fields as JSON keys, so a request or job can be followed by its id.
"""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def json_formatter() -> logging.Formatter:
    return JsonFormatter(
        "{asctime}{levelname}{name}{message}",
        style="{",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        datefmt="%Y-%m-%dT%H:%M:%S%z",
        reserved_attrs=[*RESERVED_ATTRS, "color_message"],  # uvicorn's ANSI copy of the message
    )


def configure_logging(fmt: str = "text", level: str | int = "WARNING") -> None:
    """Send every logger (uvicorn's included) to stderr in `fmt` ('json' or 'text')."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(json_formatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []  # propagate to the root handler, one format for all
        logging.getLogger(name).propagate = True
    if fmt == "json":  # progress bars are not log lines: they would break a JSON-lines stream
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
