"""compose.yaml, the scale-out deployment README documents, asks for what the code provides:
real commands with valid options, settings the service reads, one beat, workers fed by the broker."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
import yaml

from service.cli import main
from service.config import Settings

COMPOSE = yaml.safe_load((Path(__file__).resolve().parents[2] / "compose.yaml").read_text())
OURS = ("web", "worker", "beat")


@pytest.mark.parametrize("name", OURS)
def test_each_of_our_services_runs_a_real_command_with_valid_options(name):
    command = COMPOSE["services"][name]["command"]
    assert command[0] == "ketamine-fhir"
    sub = main.commands[command[1]]
    with sub.make_context(command[1], list(command[2:]), resilient_parsing=False) as ctx:
        assert isinstance(ctx, click.Context)


def test_the_environment_sets_up_postgresql_a_broker_and_no_embedded_worker():
    env = COMPOSE["services"]["web"]["environment"]
    assert all(COMPOSE["services"][s]["environment"] == env for s in OURS)  # one configuration
    settings = Settings.from_env({k: str(v) for k, v in env.items()})
    assert settings.database_url.startswith("postgresql+psycopg://ketamine:ketamine@postgres:5432/")
    assert settings.broker_url == "redis://redis:6379/0" and settings.worker == "off"
    service_urls = {"postgres": "postgres:5432", "redis": "redis:6379"}
    for host, where in service_urls.items():
        assert host in COMPOSE["services"] and where in settings.database_url + settings.broker_url


def test_workers_and_beat_start_once_the_web_service_has_migrated_the_database():
    for name in ("worker", "beat"):
        assert COMPOSE["services"][name]["depends_on"]["web"] == {"condition": "service_healthy"}
    assert "deploy" not in COMPOSE["services"]["beat"]  # exactly one beat: never scaled
