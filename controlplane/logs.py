"""Structured logs: one line per event, ``event key=value ...``, quiet by default.

Modules log ``log.info("event.name key=%s", value)``; this module only decides the line's frame
(time, level, logger) and whether it is text for people or JSON for collectors.
"""

from __future__ import annotations

import json
import logging
import sys
import time


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        line = f"{ts} {record.levelname:<7} {record.name} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body = {
            "time": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body)


def setup(level: str = "info", fmt: str = "text") -> None:
    """Configure the root logger once; grpc and asyncio stay at WARNING unless asked for debug."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    if level.lower() != "debug":
        for noisy in ("asyncio", "grpc", "watchfiles", "aiohttp"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
