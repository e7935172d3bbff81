"""Helpers for tests that run `ketamine-fhir serve` as a real process."""

from __future__ import annotations

import socket
import time

import requests


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(base: str, deadline: float = 120.0) -> None:
    """Poll ``/readyz`` until the served app answers 200, for at most ``deadline`` seconds overall.

    A refused connection means not yet; so does a slow or failed answer (a busy 2-core CI machine
    starting gunicorn and migrating can take many seconds): only the overall deadline fails.
    """
    until = time.monotonic() + deadline
    while time.monotonic() < until:
        try:
            if requests.get(f"{base}/readyz", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{base} never became ready within {deadline:.0f} s")
