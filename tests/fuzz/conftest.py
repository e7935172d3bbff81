"""Fuzz-test fixtures: the usual app, without rate limits (a fuzzer sends hundreds of requests a
second from one token; the limits have tests of their own in tests/service)."""

from __future__ import annotations

import dataclasses

import pytest

from service.config import Settings


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, rate_limits=False)
