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


def wait_ready(base: str, tries: int = 200) -> None:
    """Poll ``/readyz`` until the served app answers 200 (a refused connection means not yet)."""
    for _ in range(tries):
        try:
            if requests.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{base} never became ready")
