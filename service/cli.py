"""The ``ketamine-fhir`` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from service.config import Settings

__all__ = ["main"]


def _settings() -> Settings:
    return Settings.from_env()


def _session(settings: Settings):
    from service.db import make_engine, session_factory

    return session_factory(make_engine(settings.database_url), settings)()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ketamine-fhir")
def main() -> None:
    """ketamine-fhir: FHIR integration service for ketamine clinics."""


@main.command("init-db")
def init_db() -> None:
    """Create the database, or migrate it to the current schema."""
    from service.db import migrate

    settings = _settings()
    migrate(settings)
    click.echo(f"database ready: {_safe_url(settings.database_url)}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port to listen on.")
@click.option("--workers", default=2, show_default=True, type=int, help="gunicorn worker processes.")
@click.option("--threads", default=4, show_default=True, type=int, help="Threads per worker.")
def serve(host: str, port: int, workers: int, threads: int) -> None:
    """Migrate the database, then serve the API with gunicorn."""
    from service.db import migrate
    from service.server import run

    settings = _settings()
    migrate(settings)
    # Echo the command as it was typed (e.g. .venv/bin/ketamine-fhir) so the hint works when pasted.
    cli = sys.argv[0] if Path(sys.argv[0]).name == "ketamine-fhir" else "ketamine-fhir"
    click.echo(f"ketamine-fhir listening on http://{host}:{port}  (data: {settings.data_dir}, "
               f"database: {_safe_url(settings.database_url)})")
    click.echo(f"  clinic API  http://{host}:{port}/api/v1   OpenAPI  http://{host}:{port}/api/v1/openapi.json")
    click.echo(f"  get an API token:  {cli} token create --name me --scope '*'")
    run(settings, host, port, workers, threads)


@main.group()
def token() -> None:
    """Create, list and revoke API bearer tokens."""


@token.command("create")
@click.option("--name", required=True, help="A name for the token's holder (unique).")
@click.option("--scope", "scopes", required=True, multiple=True,
              help="Scope(s): clinic:read, clinic:write, admin, *, or SMART system scopes for /fhir "
                   "such as 'system/*.rs' (repeat or space-separate).")
def token_create(name: str, scopes: tuple[str, ...]) -> None:
    """Create a token and print it (it is shown only this once)."""
    from service.auth import TokenError, create_token
    from service.db import migrate

    settings = _settings()
    migrate(settings)
    with _session(settings) as db:
        try:
            secret = create_token(db, name, scopes)
        except TokenError as exc:
            raise click.UsageError(str(exc)) from None
    click.echo(secret)


@token.command("list")
def token_list() -> None:
    """List tokens (names and scopes, never secrets)."""
    from service.auth import list_tokens

    with _session(_settings()) as db:
        for t in list_tokens(db):
            state = "revoked" if t.revoked_at else "active"
            click.echo(f"{t.name}\t{t.scopes}\t{state}\t{t.created_at.isoformat()}")


@token.command("revoke")
@click.option("--name", required=True)
def token_revoke(name: str) -> None:
    """Revoke a token by name."""
    from service.auth import revoke_token

    with _session(_settings()) as db:
        if not revoke_token(db, name):
            raise click.ClickException(f"no active token named {name!r}")
    click.echo(f"revoked {name}")


@main.group()
def client() -> None:
    """Register, list and revoke SMART Backend Services clients (EHRs calling /fhir)."""


@client.command("register")
@click.option("--name", required=True, help="A name for the client (unique).")
@click.option("--jwks", "jwks_file", required=True, type=click.File("rb"),
              help="The client's public JWKS as a JSON file (RS384 or ES384 keys, each with a kid).")
@click.option("--scope", "scopes", required=True, multiple=True,
              help="SMART system scope(s) the client may be granted, e.g. 'system/*.rs' (repeat or space-separate).")
def client_register(name: str, jwks_file, scopes: tuple[str, ...]) -> None:
    """Register a client and print its client_id (the iss and sub of its signed assertions)."""
    from service.db import migrate
    from service.fhir.smart import ClientError, register_client

    try:
        jwks = json.loads(jwks_file.read())
    except ValueError as exc:
        raise click.UsageError(f"--jwks is not JSON: {exc}") from None
    settings = _settings()
    migrate(settings)
    with _session(settings) as db:
        try:
            registered = register_client(db, name, jwks, scopes)
        except ClientError as exc:
            raise click.UsageError(str(exc)) from None
        click.echo(registered.client_id)


@client.command("list")
def client_list() -> None:
    """List clients: name, client_id, allowed scopes, state, key ids."""
    from service.fhir.smart import list_clients

    with _session(_settings()) as db:
        for c in list_clients(db):
            state = "revoked" if c.revoked_at else "active"
            kids = ",".join(k.get("kid", "") for k in c.jwks.get("keys", []))
            click.echo(f"{c.name}\t{c.client_id}\t{c.scopes}\t{state}\t{kids}\t{c.created_at.isoformat()}")


@client.command("revoke")
@click.option("--name", required=True)
def client_revoke(name: str) -> None:
    """Revoke a client: no new tokens, and its current tokens stop working."""
    from service.fhir.smart import revoke_client

    with _session(_settings()) as db:
        if not revoke_client(db, name):
            raise click.ClickException(f"no active client named {name!r}")
    click.echo(f"revoked {name}")


@main.command("import")
@click.argument("file", type=click.File("rb"))
def import_file(file) -> None:
    """Import clinic records from an NDJSON FILE (``-`` for stdin), as POST /api/v1/import does.

    Prints the report as JSON; exits 1 when any line was rejected.
    """
    from service.clinic.importer import import_lines
    from service.db import ANALYZE_AFTER_LINES, analyze, migrate

    settings = _settings()
    migrate(settings)
    with _session(settings) as db:
        report = import_lines(db, file)
        db.commit()
        if report["created"] + report["updated"] >= ANALYZE_AFTER_LINES:
            analyze(db)
    click.echo(json.dumps(report, indent=2))
    if report["rejected"]:
        sys.exit(1)


@main.command("map")
@click.argument("file", type=click.File("rb"), default="-")
@click.option("--bundle", "as_bundle", is_flag=True,
              help="Write one transaction Bundle (conditional updates on identifiers) instead of NDJSON.")
@click.option("--output", "-o", type=click.File("w"), default="-", help="Where to write (default stdout).")
def map_file(file, as_bundle: bool, output) -> None:
    """Map clinic records in /import NDJSON (FILE or stdin) to FHIR R4, without a server or database.

    Writes one resource a line (or a Bundle with --bundle). Bad lines are reported on stderr with
    their line number and field errors; good lines still map. Exits 1 when any line was bad.
    """
    import orjson

    from mappings.bundle import transaction_bundle
    from service.mapfile import map_lines

    settings = _settings()
    result = map_lines(file, settings.base_uri, settings.clinic_name)
    if as_bundle:
        output.write(orjson.dumps(transaction_bundle(result.resources), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        for resource in result.resources:
            output.write(orjson.dumps(resource).decode() + "\n")
    for bad in result.errors:
        for path, messages in bad["errors"].items():
            click.echo(f"line {bad['line']}: {path}: {' '.join(messages)}", err=True)
    click.echo(f"map: {result.records} record(s) -> {len(result.resources)} resource(s); "
               f"{len(result.errors)} bad line(s)", err=True)
    if result.errors:
        sys.exit(1)


@main.command()
@click.option("--patients", default=10, show_default=True, type=int, help="Number of synthetic patients.")
@click.option("--seed", default=1, show_default=True, type=int)
def synth(patients: int, seed: int) -> None:
    """Print a synthetic clinic (no real patient data) as /import NDJSON."""
    from service.synthetic import clinic_lines

    for line in clinic_lines(patients, seed=seed):
        click.echo(line)


def _safe_url(url: str) -> str:
    """The database URL without its password."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
