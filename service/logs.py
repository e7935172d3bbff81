"""Logging that keeps patient data out of the logs.

Log lines are written by our code (ids, codes, counts, route patterns: never record content) and by
libraries, and tracebacks are where data leaks in: an exception's *message* may quote anything —
PostgreSQL's ``DETAIL: Key (mrn)=(MRN-0001) already exists``, SQL parameters, marshmallow's
messages, a JSON decode error quoting its input, gunicorn's ``Invalid Request Line 'GET
/fhir/Patient?name=...'``. So every handler the service installs (or finds) gets
:class:`RedactFilter`, and prints tracebacks as frames (file, line, function) and exception
*classes* only: never a message, source text or locals.

Wired from ``create_app`` (web workers), the gunicorn master (:class:`GunicornLogger`, gunicorn's
``logger_class``), the CLI and the sync workers (``configure``), and Celery (``setup_logging``).
"""

from __future__ import annotations

import logging
import sys
import traceback
from types import TracebackType
from typing import IO, Any

from flask.logging import default_handler as flask_default_handler
from gunicorn.glogging import Logger as _GunicornBaseLogger

__all__ = ["FORMAT", "GunicornLogger", "RedactFilter", "RedactingFormatter", "configure", "make_handler", "protect",
           "protect_command_line", "redacted_traceback"]

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
WITHHELD = "(message withheld: it may carry patient data)"
_CAUSE = "The above exception was the direct cause of the following exception:"
_CONTEXT = "During handling of the above exception, another exception occurred:"
_MARK = "_ketamine_fhir"  # on the handlers we made, so configure() is idempotent
#: libraries whose DEBUG lines print request URLs, whose queries name patients
#: (``Patient?identifier=<system>|<MRN>``): never below INFO
_URL_LOGGERS = ("urllib3",)


def _class_name(exc: BaseException) -> str:
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _chain(exc: BaseException) -> list[tuple[BaseException, str]]:
    """The exception and the ones it was raised from or while handling, oldest first as Python
    prints them, each with the sentence printed before it (none before the oldest)."""
    newest_first: list[tuple[BaseException, str]] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None:
        seen.add(id(current))
        older, sentence = None, ""
        if current.__cause__ is not None:
            older, sentence = current.__cause__, _CAUSE
        elif current.__context__ is not None and not current.__suppress_context__:
            older, sentence = current.__context__, _CONTEXT
        if older is not None and id(older) in seen:  # a cycle: stop here
            older, sentence = None, ""
        newest_first.append((current, sentence))
        current = older
    return newest_first[::-1]


def _frames(tb: TracebackType | None) -> list[str]:
    # lookup_lines=False: no source lines; capture_locals=False: no values
    stack = traceback.StackSummary.extract(traceback.walk_tb(tb), lookup_lines=False, capture_locals=False)
    return [f'  File "{frame.filename}", line {frame.lineno}, in {frame.name}' for frame in stack]


def redacted_traceback(exc: BaseException | None) -> str:
    """A traceback as Python prints it, minus every exception message."""
    if exc is None:
        return ""
    out: list[str] = []
    for current, sentence in _chain(exc):
        if sentence:
            out.extend(["", sentence, ""])
        out.append("Traceback (most recent call last):")
        out.extend(_frames(current.__traceback__))
        out.append(f"{_class_name(current)} {WITHHELD}")
    return "\n".join(out)


class RedactingFormatter(logging.Formatter):
    """The service's formatter: tracebacks without exception messages."""

    def __init__(self, fmt: str | None = FORMAT, datefmt: str | None = None):
        super().__init__(fmt, datefmt)

    def formatException(self, ei: Any) -> str:
        return redacted_traceback(ei[1] if ei else None)

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info:
            # another handler may already have cached the full text on the record
            record.exc_text = self.formatException(record.exc_info)
        return super().format(record)


class RedactFilter(logging.Filter):
    """Rewrites records whose message quotes request or exception text. Never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_redacted", False):  # a record goes through every handler: rewrite it once
            return True
        record._redacted = True
        if record.exc_info:
            record.exc_text = redacted_traceback(record.exc_info[1])
        if record.name == "gunicorn.error":
            _gunicorn(record)
        elif record.name == "celery.app.trace":
            _celery(record)
        record.args = _safe_args(record.args)
        return True


def _safe_args(args: Any) -> Any:
    # log.warning("... %s", exc) would print the exception's message: print its class
    if isinstance(args, tuple):
        return tuple(f"<{_class_name(a)}>" if isinstance(a, BaseException) else a for a in args)
    if isinstance(args, dict):
        return {k: f"<{_class_name(v)}>" if isinstance(v, BaseException) else v for k, v in args.items()}
    return args


def _gunicorn(record: logging.LogRecord) -> None:
    """gunicorn's worker quotes the request line or the header it could not parse
    (``Invalid request from ip=X: Invalid Request Line 'GET /fhir/Patient?name=...'``) and logs the
    URI of a request that failed (``Error handling request GET /path?query``)."""
    msg = str(record.msg)
    if msg.startswith("Invalid request from ip="):
        ip = msg[len("Invalid request from ip="):].partition(": ")[0]
        record.msg, record.args = "Invalid request from ip=%s (the request text is withheld)", (ip,)
    elif msg.startswith("Error handling request"):
        method = record.args[0] if isinstance(record.args, tuple) and len(record.args) == 2 else "(unknown method)"
        record.msg, record.args = "Error handling request %s (the URI is withheld)", (method,)


def _celery(record: logging.LogRecord) -> None:
    """Celery's task failure line prints ``repr(exc)`` and carries the full traceback text."""
    if isinstance(record.args, dict):
        exc = record.exc_info[1] if record.exc_info else None
        safe = {**record.args, "exc": f"<{_class_name(exc)}>" if exc else WITHHELD, "traceback": ""}
        record.args = safe
        if isinstance(getattr(record, "data", None), dict):
            record.data = safe


def protect(handler: logging.Handler) -> None:
    """Make ``handler`` redact (idempotent)."""
    if not any(isinstance(f, RedactFilter) for f in handler.filters):
        handler.addFilter(RedactFilter())


def make_handler(stream: IO[str] | None = None) -> logging.Handler:
    """A stream handler (stderr by default) with the service's formatter and filter."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(RedactingFormatter())
    protect(handler)
    setattr(handler, _MARK, True)
    return handler


def configure(level: str | int = "INFO") -> None:
    """Set up logging for a service process (idempotent).

    Like ``logging.basicConfig``, a root logger that already has handlers (a host's own logging
    configuration, pytest) keeps them and its level; but every one of them redacts from now on.
    """
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(make_handler())
        root.setLevel(level)
    for handler in root.handlers:
        protect(handler)
    if logging.lastResort is not None:  # what prints WARNING+ when nothing is configured
        protect(logging.lastResort)
    protect(flask_default_handler)  # Flask's, should app.logger ever find no handler above it
    for name in _URL_LOGGERS:
        url_logger = logging.getLogger(name)
        if url_logger.getEffectiveLevel() < logging.INFO:
            url_logger.setLevel(logging.INFO)


def protect_command_line() -> None:
    """For one-shot commands, which configure no logging (their output is their answer): what
    Python prints of a warning or an uncaught exception is redacted too."""
    if logging.lastResort is not None:
        protect(logging.lastResort)
    sys.excepthook = _excepthook


def _excepthook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc, tb)
        return
    print(redacted_traceback(exc.with_traceback(tb)), file=sys.stderr)


class GunicornLogger(_GunicornBaseLogger):
    """gunicorn's logger (``logger_class``), its handlers redacting; its error log keeps gunicorn's
    format so operators' parsers still work."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for handler in [*self.error_log.handlers, *self.access_log.handlers]:
            if type(handler.formatter) is logging.Formatter:
                handler.setFormatter(RedactingFormatter(handler.formatter._fmt, handler.formatter.datefmt))
            protect(handler)
