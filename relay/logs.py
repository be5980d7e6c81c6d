"""Log set-up: one line per record on stderr, as key=value text or as JSON."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = (f"{stamp}.{int(record.msecs):03d}Z {record.levelname.lower():7} "
                f"{record.name}: {record.getMessage()}")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Relay logs its own listener lines; uvicorn's start-up chatter would repeat them.
    logging.getLogger("uvicorn.error").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("uvicorn.access").disabled = True


# -- peer values in log lines -----------------------------------------------------------

#: How many characters of a peer's string reach a log line or an error message.
PEER_TEXT_LIMIT = 200

# C0 controls, DEL, C1 controls and the Unicode line/paragraph separators: anything that could
# start a new log line, move the cursor or hide text in a terminal is shown as an escape.
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
_ESCAPES.update({0x2028: "\\u2028", 0x2029: "\\u2029", ord("\\"): "\\\\"})


def peer_text(value: object, limit: int = PEER_TEXT_LIMIT) -> str:
    """A value a peer chose, made safe for one log line or error message.

    A string has its control characters and line separators escaped and is cut so that at
    most `limit` characters of it are shown (an escape is never cut in half), saying how long
    it was when it was cut; any other value is named by its type only, so a hostile structure
    (shared AMF references, deep nesting) is never walked to be printed."""
    if isinstance(value, str):
        if len(value) <= limit:
            shown = value.translate(_ESCAPES)
            if len(shown) <= limit:
                return shown
        kept: list[str] = []
        room = limit
        for char in value[:limit]:  # every character shows as one or more
            piece = _ESCAPES.get(ord(char), char)
            if len(piece) > room:
                break
            kept.append(piece)
            room -= len(piece)
        return f"{''.join(kept)}...({len(value)} characters)"
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    if value is None or isinstance(value, bool | int | float):
        return str(value)
    return f"<{type(value).__name__}>"


class LogLimiter:
    """At most one line per cause per `interval` seconds; the rest are counted.

    Causes are fixed names chosen by Relay's code ("rtmp-refused-per-ip"), never peer values,
    so the table stays small; `max_causes` bounds it anyway. The first line of a cause is
    written at once; lines held back are reported, with their count, on the next line of the
    same cause that is written."""

    def __init__(self, logger: logging.Logger, *, interval: float = 10.0,
                 clock: Callable[[], float] = time.monotonic, max_causes: int = 256) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self.max_causes = max_causes
        self.suppressed_total = 0
        self._causes: dict[str, list[float | int]] = {}  # cause -> [next allowed, held back]

    def log(self, level: int, cause: str, msg: str, *args: object) -> bool:
        """Log `msg % args` unless `cause` was logged in the last interval; True if written."""
        now = self.clock()
        entry = self._causes.get(cause)
        if entry is not None and now < entry[0]:
            entry[1] += 1
            self.suppressed_total += 1
            return False
        held = int(entry[1]) if entry is not None else 0
        if entry is None and len(self._causes) >= self.max_causes:
            self._causes.pop(next(iter(self._causes)))
        self._causes[cause] = [now + self.interval, 0]
        if held:
            msg += f" (and {held} more like it in the last {self.interval:g}s)"
        self.logger.log(level, msg, *args)
        return True

    def warning(self, cause: str, msg: str, *args: object) -> bool:
        return self.log(logging.WARNING, cause, msg, *args)

    def info(self, cause: str, msg: str, *args: object) -> bool:
        return self.log(logging.INFO, cause, msg, *args)
