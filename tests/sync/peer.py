"""The real FHIR server and fault proxy of ../shared/peer-fhir, and checks of what a destination holds."""

from __future__ import annotations

import copy
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import requests
from sqlalchemy import select
from sqlalchemy.orm import Session

from mappings.bundle import business_identifier_of
from service import models
from service.sync.destinations import DEFAULT_TYPES
from tests.fhir_checks import peer_fhir

#: what a destination receives by default: every type the mappings emit but Provenance (a
#: hand-kept list here missed the types revision 2 added, so their references dangled)
SENT_TYPES = DEFAULT_TYPES


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def peer_server() -> Iterator[str]:
    """The third-party FHIR server (Medplum's router, in memory); yields its base URL."""
    port = free_port()
    proc = subprocess.Popen([str(peer_fhir() / "start.sh"), str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("ready"), line
        yield f"http://127.0.0.1:{port}/fhir"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextmanager
def fault_proxy(upstream_base: str, *args: str) -> Iterator[str]:
    """The fault-injecting proxy in front of the peer; yields the base URL to give the client."""
    port = free_port()
    upstream = upstream_base.rsplit("/fhir", 1)[0]
    proc = subprocess.Popen([sys.executable, str(peer_fhir() / "fault-proxy.py"), "--listen", str(port),
                             "--upstream", upstream, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("ready"), line
        yield f"http://127.0.0.1:{port}/fhir"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def reset(base: str) -> None:
    requests.post(f"{base}/$peer-reset", timeout=30).raise_for_status()


def fetch_all(base: str, resource_type: str) -> list[dict[str, Any]]:
    """Every resource of the type on the server (following next links)."""
    out: list[dict[str, Any]] = []
    url: str | None = f"{base}/{resource_type}?_count=1000"
    while url:
        bundle = requests.get(url, timeout=60).json()
        out += [e["resource"] for e in bundle.get("entry", [])]
        url = next((link["url"] for link in bundle.get("link", []) if link["relation"] == "next"), None)
    return out


def _normal(resource: dict[str, Any]) -> Any:
    """A resource as both sides must agree on: no server ids or versions, references by identifier."""
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if not (k == "reference" and "identifier" in value)}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    body = copy.deepcopy(resource)
    body.pop("id", None)
    meta = {k: v for k, v in body.pop("meta", {}).items() if k in ("profile", "tag")}
    if meta:
        body["meta"] = meta
    return strip(body)


def _key(resource: dict[str, Any]) -> tuple[str, str, str] | None:
    ident = business_identifier_of(resource)
    return (resource["resourceType"], ident["system"], ident["value"]) if ident else None


def assert_destination_holds_exactly_ours(db: Session, base: str, types: tuple[str, ...] = SENT_TYPES) -> int:
    """Every current resource of ours is on the server exactly once with equal content, nothing
    else of ours is there (deleted ones are gone), and every reference there resolves there.
    Returns how many resources were compared."""
    db.commit()  # a fresh snapshot: the test's session may still be reading one from before the sync
    db.expire_all()
    ours = {}
    for row in db.scalars(select(models.FhirResource).where(models.FhirResource.resource_type.in_(types),
                                                           models.FhirResource.deleted.is_(False))):
        resource = orjson.loads(row.content)
        ours[_key(resource)] = resource
    theirs: dict[tuple[str, str, str] | None, list[dict[str, Any]]] = {}
    ids: set[str] = set()
    for rtype in types:
        for resource in fetch_all(base, rtype):
            theirs.setdefault(_key(resource), []).append(resource)
            ids.add(f"{rtype}/{resource['id']}")
    duplicates = {k: len(v) for k, v in theirs.items() if len(v) > 1}
    assert not duplicates, f"{len(duplicates)} resources held more than once, e.g. {next(iter(duplicates.items()))}"
    missing = set(ours) - set(theirs)
    assert not missing, f"{len(missing)} of ours missing there, e.g. {sorted(missing)[:3]}"
    extra = set(theirs) - set(ours)
    assert not extra, f"{len(extra)} there that we do not hold (not deleted?), e.g. {sorted(extra, key=str)[:3]}"
    for key, resource in ours.items():
        assert _normal(theirs[key][0]) == _normal(resource), f"{key} differs there"
    dangling = [(r["resourceType"], ref) for rs in theirs.values() for r in rs for ref in _references(r)
                if ref not in ids]
    assert not dangling, f"{len(dangling)} references there do not resolve, e.g. {dangling[:3]}"
    return len(ours)


def _references(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        ref = value.get("reference")
        if isinstance(ref, str) and not ref.startswith("#"):
            yield ref
        for k, v in value.items():
            if k != "reference":
                yield from _references(v)
    elif isinstance(value, list):
        for v in value:
            yield from _references(v)


def wait_for(predicate, timeout: float, interval: float = 0.2, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


__all__ = ["SENT_TYPES", "assert_destination_holds_exactly_ours", "fault_proxy", "fetch_all", "free_port",
           "peer_server", "reset", "wait_for"]
ROOT = Path(__file__).resolve().parents[2]
