"""FHIR search (R4 search.html): parameter registry, index, request parser and paged execution.

The blueprint calls ``parse_search`` then ``run_search``; ``SEARCH_PARAMS`` is what the
CapabilityStatement advertises; ``fhir_store`` calls ``index_resource`` on every write.
"""

from __future__ import annotations

from service.fhir.search.index import index_resource
from service.fhir.search.params import SEARCH_PARAMS, SearchParam
from service.fhir.search.query import ResponseBudget, SearchResult, apply_elements, run_search, time_limit
from service.fhir.search.request import DEFAULT_COUNT, MAX_COUNT, PAGE_TOKEN_PARAM, SearchRequest, parse_search

__all__ = [
    "DEFAULT_COUNT",
    "MAX_COUNT",
    "PAGE_TOKEN_PARAM",
    "SEARCH_PARAMS",
    "ResponseBudget",
    "SearchParam",
    "SearchRequest",
    "SearchResult",
    "apply_elements",
    "index_resource",
    "parse_search",
    "run_search",
    "time_limit",
]
