"""Mapping throughput: clinic records to FHIR R4 resources, against the costs around it.

Measured in one run on the same resources of a synthetic clinic (service.synthetic):
  * map           -- mappings.resources_for over every record (pure dict building), the work the
                     service does once per write;
  * map + check   -- ``ketamine-fhir map``'s whole path: NDJSON parse, marshmallow validation,
                     reference checks, clinical checks and mapping;
  * R4B validate  -- fhir.resources R4B ``model_validate`` of the mapped resources (what the service
                     does NOT do at runtime: mappings are proven valid in tests instead);
  * R4B validate + dump -- plus ``model_json()`` serialisation through the models;
  * orjson dumps  -- plain serialisation of the same dicts: the floor.
Figures are resources/s and the time per resource as a ratio to the orjson floor.

Run: .venv/bin/python bench/mapping.py [--patients 200] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fhir.resources.R4B import get_fhir_model_class

from mappings.resources import resources_for
from service.mapfile import map_lines
from service.synthetic import clinic_lines

BASE = "https://clinic.example.org/fhir"


def _best(fn: Callable[[], object], repeat: int) -> float:
    """The best of ``repeat`` timings (least disturbed by the other core's load)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    lines = list(clinic_lines(args.patients))
    result = map_lines(lines, BASE, "Synthetic Ketamine Clinic")
    if result.errors:
        raise SystemExit(f"the synthetic clinic has bad lines: {result.errors[:3]}")
    resources = result.resources
    n = len(resources)

    # map only: the records as map_lines left them (validated, warnings attached), same context
    from mappings.context import MappingContext
    from service.mapfile import _Memory  # the dry run's in-memory context

    memory = _Memory()
    from service.clinic.collections import COLLECTIONS
    from service.clinic.importer import parse_json
    from service.clinic.store import load

    for line in lines:
        envelope = parse_json(line)
        record = load(COLLECTIONS[envelope["type"]], envelope["record"])
        if COLLECTIONS[envelope["type"]].parent:
            record["patient_id"] = memory.lookup("sessions", record["session_id"])["patient_id"]
        memory.add(envelope["type"], record)
    ctx = MappingContext(base_uri=BASE, lookup=memory.lookup, children=memory.children)

    def map_only() -> None:
        for collection, record_id in memory.order:
            resources_for(collection, memory.records[collection][record_id], ctx)

    def validate() -> None:
        for r in resources:
            get_fhir_model_class(r["resourceType"]).model_validate(r)

    def validate_dump() -> None:
        for r in resources:
            get_fhir_model_class(r["resourceType"]).model_validate(r).model_dump_json()

    rows = [
        ("orjson dumps (floor)", _best(lambda: [orjson.dumps(r) for r in resources], args.repeat)),
        ("map", _best(map_only, args.repeat)),
        ("map + check (ketamine-fhir map)", _best(lambda: map_lines(lines, BASE, "Clinic"), args.repeat)),
        ("R4B validate", _best(validate, max(1, args.repeat - 2))),
        ("R4B validate + dump", _best(validate_dump, max(1, args.repeat - 2))),
    ]
    floor = rows[0][1]
    print(f"mapping benchmark: {args.patients} patients, {len(lines)} records -> {n} resources "
          f"(best of {args.repeat})\n")
    print(f"{'path':34} {'seconds':>8} {'resources/s':>12} {'x orjson':>9}")
    print("-" * 66)
    for name, seconds in rows:
        print(f"{name:34} {seconds:8.3f} {n / seconds:12,.0f} {seconds / floor:9.1f}")
    print("\n'x orjson' = time per resource as a multiple of plain orjson serialisation of the same dicts.")


if __name__ == "__main__":
    main()
