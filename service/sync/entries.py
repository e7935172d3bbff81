"""What one resource becomes on the wire to one destination: a Bundle entry or a single request.

Pure: no database, no HTTP. The destination keeps its own ids, so a resource is sent

- as ``PUT Type/<their id>`` once we know their id (remembered from an earlier acknowledgement),
- else as a conditional update ``PUT Type?identifier=<system>|<value>`` on our business
  identifier, which creates it once and finds it on every retry (nothing duplicated),
- Provenance (no identifier in R4) as ``PUT Provenance/<our id>``.

References to our other resources are rewritten: to ``urn:uuid:<our id>`` when the target is in
the same transaction Bundle, to ``Type/<their id>`` when they acknowledged it, and dropped (the
reference's business identifier and display stay) when the destination does not receive that
type. Any other target is not there yet: the entry must wait (:class:`Unresolved`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Set
from dataclasses import dataclass, field
from typing import Any

from mappings.bundle import conditional_url

__all__ = ["Item", "Unresolved", "entry_for", "order", "references", "remote_id_of"]

_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_OUR_REF = re.compile(rf"^(?P<type>[A-Z][A-Za-z]+)/(?P<id>{_UUID})$")
_LOCATION = re.compile(r"(?:^|/)(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?/?$")


@dataclass
class Item:
    """One of our resources to deliver (the latest of one or more outbox messages)."""

    resource_type: str
    resource_id: str
    version_id: int
    content: dict[str, Any]
    content_hash: str
    deleted: bool
    remote_id: str | None = None
    message_ids: list[int] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str]:
        return self.resource_type, self.resource_id


class Unresolved(Exception):
    """The resource references one of ours the destination does not hold yet."""

    def __init__(self, target: tuple[str, str]):
        super().__init__(f"{target[0]}/{target[1]}")
        self.target = target


def references(content: Any) -> set[tuple[str, str]]:
    """Every reference to one of our resources (``Type/<uuid>``) in the content."""
    found: set[tuple[str, str]] = set()
    if isinstance(content, dict):
        for key, value in content.items():
            if key == "reference" and isinstance(value, str) and (m := _OUR_REF.match(value)):
                found.add((m["type"], m["id"]))
            else:
                found |= references(value)
    elif isinstance(content, list):
        for value in content:
            found |= references(value)
    return found


def order(items: Iterable[Item],
          refs: Callable[[Item], Set[tuple[str, str]]] = lambda i: references(i.content)) -> list[Item]:
    """Targets before the resources that reference them (stable otherwise); deletes last, after
    the updates that stop referring to them. A cycle keeps the given order. ``refs``: an item's
    references (the engine passes a cached lookup)."""
    items = list(items)
    live = [i for i in items if not i.deleted]
    keys = {i.key for i in live}
    deps = {i.key: refs(i) & keys - {i.key} for i in live}
    done: set[tuple[str, str]] = set()
    out: list[Item] = []
    pending = list(live)
    while pending:
        ready = [i for i in pending if deps[i.key] <= done] or pending[:1]  # a cycle: take the oldest
        for item in ready:
            out.append(item)
            done.add(item.key)
        pending = [i for i in pending if i.key not in done]
    return out + [i for i in items if i.deleted]


def _rewrite(value: Any, resolve: Callable[[tuple[str, str]], str | None]) -> Any:
    if isinstance(value, dict):
        if isinstance(value.get("reference"), str) and (m := _OUR_REF.match(value["reference"])):
            target = resolve((m["type"], m["id"]))
            out = {k: _rewrite(v, resolve) for k, v in value.items() if k != "reference"}
            if target is not None:
                out = {"reference": target, **out}
            return out
        return {k: _rewrite(v, resolve) for k, v in value.items()}
    if isinstance(value, list):
        return [_rewrite(v, resolve) for v in value]
    return value


def entry_for(item: Item, remote: Mapping[tuple[str, str], str], in_bundle: set[tuple[str, str]],
              sent_types: set[str]) -> dict[str, Any] | None:
    """The Bundle entry (``fullUrl``, ``resource``, ``request``) that delivers ``item``; None for a
    delete with nothing to delete.

    :param remote: their ids of our resources they acknowledged
    :param in_bundle: the resources of the same transaction Bundle (referenced as ``urn:uuid:``)
    :param sent_types: the resource types the destination receives
    :raise Unresolved: a referenced resource of ours is not at the destination yet
    """
    rtype = item.resource_type
    if item.deleted:
        url = f"{rtype}/{item.remote_id}" if item.remote_id else conditional_url(item.content)
        return {"request": {"method": "DELETE", "url": url}} if url else None

    def resolve(target: tuple[str, str]) -> str | None:
        if target in in_bundle:
            return f"urn:uuid:{target[1]}"
        if target in remote:
            return f"{target[0]}/{remote[target]}"
        if target[0] not in sent_types:
            return None  # not sent there: the identifier in the reference still says who
        raise Unresolved(target)

    body = _rewrite(item.content, resolve)  # builds new containers: the stored content stays as it was
    meta = {k: v for k, v in body.pop("meta", {}).items() if k not in ("versionId", "lastUpdated")}
    if meta:
        body["meta"] = meta
    if item.remote_id:
        body["id"] = item.remote_id
        url = f"{rtype}/{item.remote_id}"
    elif (url := conditional_url(item.content)) is not None:
        body.pop("id", None)  # the destination assigns its own id
    else:
        url = f"{rtype}/{item.resource_id}"
    body = {"resourceType": body.pop("resourceType"), **body}
    return {"fullUrl": f"urn:uuid:{item.resource_id}", "resource": body, "request": {"method": "PUT", "url": url}}


def remote_id_of(location: str | None, resource: Mapping[str, Any] | None = None) -> str | None:
    """Their id from a ``Location``/``response.location`` (``Type/id[/_history/v]``, maybe
    absolute) or from the returned resource."""
    if location and (m := _LOCATION.search(location.split("?")[0])):
        return m["id"]
    if resource and isinstance(resource.get("id"), str):
        return resource["id"]
    return None
