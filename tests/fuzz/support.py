"""Shared machinery of the schemathesis fuzz tests: the example budget and the
"a rejected request writes nothing" guard."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, settings
from sqlalchemy import Engine, select

from service.models import Base

#: examples per operation (hypothesis' generate phase); FUZZ_EXAMPLES=200 for a deeper run
FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "10"))

#: hypothesis settings of every fuzz test: bounded, no deadline (a busy CI machine is slow, not wrong),
#: no example database (a run must not depend on what an earlier run found)
FUZZ_SETTINGS = settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
                         suppress_health_check=list(HealthCheck))

#: tables a rejected request may write: the audit trail records refused requests too (that is its job)
WRITE_GUARD_EXCLUDED = frozenset({"audit_events", "audit_event_refs"})


def table_digests(engine: Engine) -> dict[str, str]:
    """Per table (but the audit trail), a SHA-256 over its rows in primary-key order."""
    out: dict[str, str] = {}
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            if table.name not in WRITE_GUARD_EXCLUDED:
                rows = conn.execute(select(table).order_by(*table.primary_key.columns)).all()
                out[table.name] = hashlib.sha256(repr(rows).encode()).hexdigest()
    return out


class WriteGuard:
    """For every response >= 400 the database must be as it was before the request.

    The digest after a rejected request is the next request's "before" (they were asserted
    equal), so a run of rejections costs one digest each, not two."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._known: dict[str, str] | None = None

    def __call__(self, call: Callable[[], Any]) -> Any:
        before = self._known if self._known is not None else table_digests(self.engine)
        self._known = None
        response = call()
        if response.status_code >= 400:
            after = table_digests(self.engine)
            changed = sorted(name for name in after if after[name] != before.get(name))
            assert not changed, (f"{response.request.method} {response.request.url} answered "
                                 f"{response.status_code} but changed {', '.join(changed)}")
            self._known = after
        return response
