"""Structured logs: one line per event, ``event.name key=value ...``, quiet by default.

The one style every module logs in (tests/test_log_style.py checks the package's source):

* the message starts with the event: dotted, lower case, area first (``xds.nack``,
  ``file.invalid``, ``lease.acquired``);
* then only ``key=value`` pairs. A value is one token (a name, a number, a version); text that may
  hold spaces goes in with ``%r``, so that it stays one quoted value (``error='no such file'``);
  what happens next is a pair too (``then=retry``), not a sentence;
* ``log.info("event.name key=%s", value)``: arguments, not f-strings, so that nothing is
  formatted for a level that is off.

This module only decides the line's frame (time, level, logger) and whether it is text for people
or JSON for collectors.
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
