"""Latency of a normal client while slow clients hold sockets open (security review, finding 3).

For each server -- ``ketamine-fhir serve`` (GuardedThreadWorker: the event loop reads request
heads and bodies before a thread takes them) and, as the baseline, the same app under stock
gunicorn gthread with the same processes and threads -- a normal client sends authenticated
``GET /api/v1/patients`` for ``--seconds``, first alone, then while ``--sockets`` attackers each
send one byte of a request head every 2 s (no token). Printed per run: requests answered, errors
(timeouts at 5 s, refused), p50 and p99 latency, and p99 as a ratio of the quiet p99 of the same
server in the same run.

Run (from the repository root)::

    .venv/bin/python bench/slow_clients.py [--seconds 15] [--sockets 30]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(data: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "KETAMINE_FHIR_PUBLIC_URL")}
    return keep | {"KETAMINE_FHIR_DATA": data, "KETAMINE_FHIR_RATE_LIMITS": "off", "KETAMINE_FHIR_WORKER": "off",
                   "KETAMINE_FHIR_LOG_LEVEL": "WARNING"}


def _start(kind: str, env: dict[str, str], port: int) -> subprocess.Popen:
    if kind == "serve":
        cmd = [str(BIN / "ketamine-fhir"), "serve", "--port", str(port), "--workers", "2", "--threads", "4"]
    else:  # the baseline: stock gthread, same processes, threads and keep-alive
        cmd = [sys.executable, "-m", "gunicorn", "-k", "gthread", "-w", "2", "--threads", "4", "--keep-alive", "5",
               "-b", f"127.0.0.1:{port}", "service:create_app()"]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except requests.RequestException:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"{kind} did not start")


def _slowloris(port: int, stop: threading.Event) -> None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            for byte in b"GET /api/v1/patients HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 10_000:
                if stop.is_set():
                    return
                sock.send(bytes([byte]))
                stop.wait(2.0)
    except OSError:
        return  # the server closed it


def _measure(port: int, token: str, seconds: float) -> tuple[list[float], int]:
    timings, errors = [], 0
    deadline = time.monotonic() + seconds
    with requests.Session() as http:
        while time.monotonic() < deadline:
            began = time.perf_counter()
            try:
                ok = http.get(f"http://127.0.0.1:{port}/api/v1/patients",
                              headers={"Authorization": f"Bearer {token}"}, timeout=5).status_code == 200
                errors += not ok
            except requests.RequestException:
                errors += 1
            timings.append(time.perf_counter() - began)
            time.sleep(0.05)
    return sorted(timings), errors


def _pct(timings: list[float], q: float) -> float:
    return timings[min(len(timings) - 1, int(len(timings) * q))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--sockets", type=int, default=30)
    args = parser.parse_args()
    print(f"{'server':<24}{'attack':>8}{'requests':>10}{'errors':>8}{'p50 ms':>9}{'p99 ms':>9}{'p99 x quiet':>13}")
    for kind in ("serve", "stock-gthread"):
        with tempfile.TemporaryDirectory() as data:
            env = _env(data)
            token = subprocess.run([str(BIN / "ketamine-fhir"), "token", "create", "--name", "bench", "--scope",
                                    "clinic:read"], env=env, check=True, capture_output=True, text=True).stdout.strip()
            port = _free_port()
            proc = _start(kind, env, port)
            try:
                quiet, quiet_errors = _measure(port, token, args.seconds)
                stop = threading.Event()
                attackers = [threading.Thread(target=_slowloris, args=(port, stop), daemon=True)
                             for _ in range(args.sockets)]
                for thread in attackers:
                    thread.start()
                time.sleep(2.5)  # every attacker has sent its first byte
                attacked, attacked_errors = _measure(port, token, args.seconds)
                stop.set()
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
            base = _pct(quiet, 0.99)
            runs = (("none", quiet, quiet_errors), (str(args.sockets), attacked, attacked_errors))
            for label, timings, errors in runs:
                print(f"{kind:<24}{label:>8}{len(timings):>10}{errors:>8}{_pct(timings, 0.5) * 1000:>9.1f}"
                      f"{_pct(timings, 0.99) * 1000:>9.1f}{_pct(timings, 0.99) / base:>12.1f}x")


if __name__ == "__main__":
    main()
