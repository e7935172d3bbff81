"""``ketamine-fhir serve``: the app under gunicorn, the production WSGI server."""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication

from service import create_app
from service.config import Settings

__all__ = ["run"]



class _Gunicorn(BaseApplication):
    def __init__(self, settings: Settings, options: dict[str, Any]):
        self.settings = settings
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        # runs in each gunicorn worker process (no preload): the embedded sync worker starts there
        from service.sync.worker import start_embedded

        app = create_app(self.settings)
        start_embedded(app.extensions["db_sessionmaker"], self.settings)
        return app


def run(settings: Settings, host: str, port: int, workers: int, threads: int) -> None:
    """Serve until stopped (SIGTERM/SIGINT)."""
    from service.gunicorn_worker import GuardedThreadWorker

    # the worker processes are forked from this one: they see these class attributes
    GuardedThreadWorker.header_timeout = settings.header_timeout
    GuardedThreadWorker.body_timeout = settings.body_timeout
    _Gunicorn(settings, {
        "bind": f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        # gthread whose event loop reads request heads, so slow clients cannot hold the threads
        "worker_class": "service.gunicorn_worker.GuardedThreadWorker",
        "keepalive": 5,  # an idle kept-alive connection costs a socket for at most this long
        "worker_connections": 1000,
        # gunicorn's access log would print paths with record ids; the app logs route patterns instead.
        "accesslog": None,
        "errorlog": "-",
        # its error log quotes unparsable request lines and tracebacks' messages: redact (service/logs.py)
        "logger_class": "service.logs.GunicornLogger",
        "timeout": 60,
        "graceful_timeout": 30,
        "forwarded_allow_ips": "127.0.0.1",
        # no control socket under $HOME: several instances (and read-only homes) must coexist
        "control_socket_disable": True,
    }).run()
