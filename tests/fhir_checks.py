"""Checks every emitted FHIR resource must pass: fhir.resources R4B models, the independent
validator in ../shared/peer-fhir (Medplum + FHIR.js), and the clinical reference's codes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
PEER_SRC = SHARED / "peer-fhir"
PEER = ROOT / ".cache" / "peer-fhir"  # a writable copy: shared/ may be read-only
REFERENCE = SHARED / "domain" / "clinical-reference.md"

#: FHIR-core code systems the spec's own bindings need (not clinical terminology)
FHIR_CORE_SYSTEMS = {
    "http://terminology.hl7.org/CodeSystem/v2-0203",
    "http://terminology.hl7.org/CodeSystem/adverse-event-severity",
    "http://terminology.hl7.org/CodeSystem/condition-ver-status",
    "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
    # US Core 6.1's own code for the ProvenanceTransmitter slice (its fixed pattern; R4 has no transmitter)
    "http://hl7.org/fhir/us/core/CodeSystem/us-core-provenance-participant-type",
    # AuditEvent's own bindings (mappings/terminology.py, "audit_event")
    "http://terminology.hl7.org/CodeSystem/audit-event-type",
    "http://hl7.org/fhir/restful-interaction",
    "http://dicom.nema.org/resources/ontology/DCM",
    "http://terminology.hl7.org/CodeSystem/audit-entity-type",
    "http://terminology.hl7.org/CodeSystem/object-role",
}


@cache
def peer_fhir() -> Path:
    """Install (once, idempotently) a copy of the peer FHIR tools and return its folder."""
    if not (PEER / "node_modules").exists():
        if PEER.exists():
            shutil.rmtree(PEER)
        shutil.copytree(PEER_SRC, PEER, ignore=shutil.ignore_patterns("node_modules", ".node"))
    subprocess.run([str(PEER / "install.sh")], check=True, capture_output=True, text=True)
    return PEER


def validate_with_peer(resources: Iterable[dict[str, Any]], workdir: Path) -> list[str]:
    """Run ../shared/peer-fhir/validate.sh over the resources; return its error lines ([] = valid)."""
    path = workdir / "resources.ndjson"
    path.write_text("".join(json.dumps(r) + "\n" for r in resources))
    result = subprocess.run([str(peer_fhir() / "validate.sh"), str(path)], capture_output=True, text=True)
    if result.returncode == 0:
        return []
    return [line for line in (result.stdout + result.stderr).splitlines() if "ERROR" in line] or [result.stdout]


def validate_with_models(resource: dict[str, Any]) -> None:
    """Parse with fhir.resources' R4B models (never the default R5 ones); raises on failure."""
    from fhir.resources.R4B import get_fhir_model_class

    get_fhir_model_class(resource["resourceType"]).model_validate(resource)


def codings(value: Any) -> Iterator[dict[str, Any]]:
    """Every Coding (a dict with system and code) anywhere inside a resource."""
    if isinstance(value, dict):
        if "system" in value and "code" in value:
            yield value
        for child in value.values():
            yield from codings(child)
    elif isinstance(value, list):
        for child in value:
            yield from codings(child)


@cache
def _reference_text() -> str:
    return REFERENCE.read_text()


def terminology_problems(resource: dict[str, Any], base_uri: str,
                         passthrough: Iterable[tuple[str, str]] = ()) -> list[str]:
    """Codes, systems or displays that the clinical reference does not contain.

    UCUM units are checked against the reference's unit list; the clinic's own CodeSystems
    (under ``<base_uri>/CodeSystem/``) and FHIR-core systems are allowed, and so are the
    ``passthrough`` (system, code) pairs: codes the clinic itself sent, which mappings pass on
    unchanged (a SNOMED adverse-event code, an ICD-10-CM diagnosis).
    """
    allowed = set(passthrough)
    text = _reference_text()
    problems = []
    for c in codings(resource):
        system, code, display = c["system"], str(c["code"]), c.get("display")
        if system.startswith(f"{base_uri}/CodeSystem/") or system in FHIR_CORE_SYSTEMS or (system, code) in allowed:
            continue
        if system not in text:
            problems.append(f"system {system} not in the reference")
        if not re.search(rf"(?<![\w.-]){re.escape(code)}(?![\w-])", text):
            problems.append(f"code {system}|{code} not in the reference")
        if display and display not in text:
            problems.append(f"display {display!r} of {code} not in the reference")
    return problems
