"""The ``ketamine-fhir`` command line."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from service.config import Settings

__all__ = ["main"]


def _settings() -> Settings:
    return Settings.from_env()


def _session(settings: Settings):
    from service.db import make_engine, session_factory
    from service.sync import outbox  # noqa: F401  (listens to the write path: every write reaches the outbox)

    return session_factory(make_engine(settings.database_url), settings)()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ketamine-fhir")
def main() -> None:
    """ketamine-fhir: FHIR integration service for ketamine clinics."""
    from service import logs

    logs.protect_command_line()  # an error's traceback must not print the patient data in its message


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
    if not os.environ.get("KETAMINE_FHIR_PUBLIC_URL"):  # absolute URLs name where we listen
        shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        settings = dataclasses.replace(settings, public_url=f"http://{shown}:{port}")
    migrate(settings)
    on_default = _check_base_uri(settings)
    # Echo the command as it was typed (e.g. .venv/bin/ketamine-fhir) so the hint works when pasted.
    cli = sys.argv[0] if Path(sys.argv[0]).name == "ketamine-fhir" else "ketamine-fhir"
    click.echo(f"ketamine-fhir listening on http://{host}:{port}  (data: {settings.data_dir}, "
               f"database: {_safe_url(settings.database_url)})")
    click.echo(f"  clinic API  http://{host}:{port}/api/v1   OpenAPI  http://{host}:{port}/api/v1/openapi.json")
    click.echo(f"  get an API token:  {cli} token create --name me --scope '*'")
    if on_default:
        from service.base_uri import WARNING

        click.secho(WARNING, err=True, fg="yellow", bold=True)
    run(settings, host, port, workers, threads)


def _check_base_uri(settings: Settings) -> bool:
    """Refuse to serve stored resources under the example base URI; True while it is in use."""
    from sqlalchemy.orm import Session

    from service.base_uri import DEFAULT_BASE_URI, start_problem
    from service.db import make_engine

    engine = make_engine(settings.database_url)
    try:
        with Session(engine) as db:
            problem = start_problem(settings, db)
    finally:
        engine.dispose()
    if problem:
        raise click.ClickException(problem)
    return settings.base_uri == DEFAULT_BASE_URI


@main.group()
def token() -> None:
    """Create, list, rotate and revoke API bearer tokens."""


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _duration(text: str, option: str) -> timedelta:
    """``90d``, ``12h``, ``30m``, ``45s``, ``2w`` (or ``0``) as a timedelta."""
    match = re.fullmatch(r"(\d+)([smhdw])|0", text.strip().lower())
    if match is None:
        raise click.BadParameter(f"{text!r} is not a duration such as 90d, 12h, 30m", param_hint=option)
    return timedelta(0) if match[0] == "0" else timedelta(seconds=int(match[1]) * _DURATION_UNITS[match[2]])


def _expiry(expires_in: str | None, expires_at: str | None) -> datetime | None:
    """The expiry the options ask for; None when neither is given."""
    if expires_in and expires_at:
        raise click.UsageError("give --expires-in or --expires-at, not both")
    if expires_in:
        lifetime = _duration(expires_in, "--expires-in")
        if not lifetime:
            raise click.BadParameter("must be longer than 0", param_hint="--expires-in")
        return datetime.now(UTC) + lifetime
    if not expires_at:
        return None
    try:
        at = datetime.fromisoformat(expires_at)
    except ValueError:
        raise click.BadParameter(f"{expires_at!r} is not an ISO 8601 time", param_hint="--expires-at") from None
    if at.tzinfo is None:
        raise click.BadParameter("needs a UTC offset, e.g. 2027-01-31T00:00:00Z", param_hint="--expires-at")
    return at


def _expiry_options(command):
    """``--expires-in`` / ``--expires-at`` for ``token create`` and ``token rotate``."""
    command = click.option("--expires-at", help="When the token stops working: ISO 8601 with offset "
                                                "(2027-01-31T00:00:00Z).")(command)
    return click.option("--expires-in", help="Lifetime from now: 90d, 12h, 30m, 2w.")(command)


@token.command("create")
@click.option("--name", required=True, help="A name for the token's holder (unique).")
@click.option("--scope", "scopes", required=True, multiple=True,
              help="Scope(s): clinic:read, clinic:write, admin, *, or SMART system scopes for /fhir "
                   "such as 'system/*.rs' (repeat or space-separate).")
@_expiry_options
def token_create(name: str, scopes: tuple[str, ...], expires_in: str | None, expires_at: str | None) -> None:
    """Create a token and print it (it is shown only this once). No expiry unless asked."""
    from service.auth import TokenError, create_token
    from service.db import migrate

    expiry = _expiry(expires_in, expires_at)
    settings = _settings()
    migrate(settings)
    with _session(settings) as db:
        try:
            secret = create_token(db, name, scopes, expires_at=expiry)
        except TokenError as exc:
            raise click.UsageError(str(exc)) from None
    click.echo(secret)


@token.command("list")
def token_list() -> None:
    """List tokens (names, scopes, state, created, expiry; never secrets)."""
    from service.auth import list_tokens

    now = datetime.now(UTC)
    with _session(_settings()) as db:
        for t in list_tokens(db):
            expired = t.expires_at is not None and t.expires_at <= now
            state = "revoked" if t.revoked_at else "expired" if expired else "active"
            expiry = f"expires {t.expires_at.isoformat()}" if t.expires_at else "no expiry"
            line = f"{t.name}\t{t.scopes}\t{state}\t{t.created_at.isoformat()}\t{expiry}"
            if t.previous_expires_at is not None and t.previous_expires_at > now and not t.revoked_at:
                line += f"\told secret until {t.previous_expires_at.isoformat()}"
            click.echo(line)


@token.command("rotate")
@click.option("--name", required=True, help="The token to give a new secret.")
@_expiry_options
@click.option("--grace", default="0", show_default=True,
              help="How long the old secret keeps working (1h, 30m), so a deployment can switch over.")
def token_rotate(name: str, expires_in: str | None, expires_at: str | None, grace: str) -> None:
    """Print a new secret for NAME (same name and scopes; shown only this once) and end the old one,
    at once or after --grace. Without --expires-in/--expires-at the new secret gets the old lifetime."""
    from service.auth import TokenError, rotate_token

    expiry, grace_period = _expiry(expires_in, expires_at), _duration(grace, "--grace")
    with _session(_settings()) as db:
        try:
            secret = rotate_token(db, name, expires_at=expiry, grace=grace_period)
        except TokenError as exc:
            raise click.ClickException(str(exc)) from None
        until = db.scalar(_previous_expiry(name))
    click.echo(secret)  # stdout: the secret alone, for $(...); what happened goes to stderr
    old = f"works until {until.isoformat()}" if until else "no longer works"
    click.echo(f"rotated {name}: the old secret {old}", err=True)


def _previous_expiry(name: str):
    from sqlalchemy import select

    from service.models import ApiToken

    return select(ApiToken.previous_expires_at).where(ApiToken.name == name)


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
    from service.clinic.importer import import_lines, read_lines
    from service.db import ANALYZE_AFTER_LINES, analyze, migrate

    settings = _settings()
    migrate(settings)
    with _session(settings) as db:
        report = import_lines(db, read_lines(file, settings.max_import_line_bytes),
                              max_line_bytes=settings.max_import_line_bytes, max_errors=settings.max_import_errors)
        db.commit()
        if report["created"] + report["updated"] >= ANALYZE_AFTER_LINES:
            analyze(db)
    click.echo(json.dumps(report, indent=2))
    if report["rejected"]:
        sys.exit(1)


@main.command()
def remap() -> None:
    """Map every stored clinic record again and store what changed (after an upgrade that changes
    the mappings, or a change of KETAMINE_FHIR_CONFIDENTIALITY/_SENSITIVITY/_PART2).

    Changed resources get a new version and are queued for every destination. Prints counts as JSON.
    """
    from service.db import migrate
    from service.fhir_store import remap as remap_all

    settings = _settings()
    migrate(settings)
    with _session(settings) as db:
        counts = remap_all(db, datetime.now(UTC))
    click.echo(json.dumps(counts))


@main.command("map")
@click.argument("file", type=click.File("rb"), default="-")
@click.option("--bundle", "as_bundle", is_flag=True,
              help="Write one transaction Bundle (conditional updates on identifiers) instead of NDJSON.")
@click.option("--output", "-o", type=click.File("w"), default="-", help="Where to write (default stdout).")
@click.option("--provenance", "with_provenance", is_flag=True,
              help="Also write a Provenance per record (author, transmitter), recorded now.")
def map_file(file, as_bundle: bool, output, with_provenance: bool) -> None:
    """Map clinic records in /import NDJSON (FILE or stdin) to FHIR R4, without a server or database.

    Writes one resource a line (or a Bundle with --bundle). Bad lines are reported on stderr with
    their line number and field errors; good lines still map. Exits 1 when any line was bad.
    """
    import orjson

    from mappings.bundle import transaction_bundle
    from service.mapfile import map_lines

    settings = _settings()
    recorded = datetime.now(UTC).isoformat(timespec="seconds") if with_provenance else None
    result = map_lines(file, settings.base_uri, settings.clinic_name, settings.security, recorded)
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


# --- sync destinations: the CLI face of the /admin API (service/admin, service/sync/status.py) ---

#: the option each of a destination's fields comes from, to point field errors at it
_OPTION_OF = {"name": "--name", "url": "--url", "mode": "--mode", "auth.kind": "--auth", "auth.token": "--token",
              "auth.client_id": "--client-id", "auth.token_url": "--token-url", "auth.kid": "--kid",
              "auth.private_key": "--private-key-file", "auth.scopes": "--scopes", "auth": "--auth",
              "resource_types": "--types", "patients": "--patients", "max_bundle_entries": "--max-entries",
              "rate_limit": "--rate-limit"}


def _destination_options(command):
    """The settings ``destination add`` and ``destination update`` share."""
    options = [
        click.option("--mode", type=click.Choice(["transaction", "batch", "individual"]),
                     help="How resources go out: transaction or batch Bundles, or one request each."),
        click.option("--auth", "auth_kind", type=click.Choice(["none", "bearer", "smart"]),
                     help="How to authenticate (default: bearer with --token, smart with --client-id, else none)."),
        click.option("--token", help="Bearer token (--auth bearer)."),
        click.option("--client-id", help="SMART Backend Services client_id (--auth smart)."),
        click.option("--token-url", help="The destination's OAuth token endpoint (--auth smart)."),
        click.option("--private-key-file", type=click.File("r"),
                     help="PEM private key signing the SMART client assertion: RSA (RS384) or EC P-384 (ES384)."),
        click.option("--kid", help="The key's id in the JWKS registered at the destination (--auth smart)."),
        click.option("--scopes", help="SMART scopes to ask for, e.g. 'system/*.cruds' (--auth smart)."),
        click.option("--types", help="Comma-separated FHIR resource types to send, e.g. Patient,Observation."),
        click.option("--patients", help="all, referred-by:<practitioner id> or identifier-system:<system>."),
        click.option("--max-entries", type=int, help="Most entries per Bundle."),
        click.option("--rate-limit", type=float, help="Most requests per second."),
        click.option("--pull/--no-pull", default=None, help="Also pull referrals from the destination."),
        click.option("--enabled/--disabled", default=None, help="Whether the destination receives anything."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _patients_option(value: str) -> dict[str, str]:
    kind, _, arg = value.partition(":")
    field = {"referred-by": "practitioner_id", "identifier-system": "system"}.get(kind)
    return {"kind": kind, field: arg} if field and arg else {"kind": kind}


def _auth_option(options: dict) -> dict | None:
    given = {k: options[k] for k in ("token", "client_id", "token_url", "kid", "scopes") if options.get(k) is not None}
    if options.get("private_key_file") is not None:
        given["private_key"] = options["private_key_file"].read()
    kind = options.get("auth_kind") or ("smart" if set(given) - {"token"} else "bearer" if given else None)
    return None if kind is None else {"kind": kind, **given}


def _destination_data(options: dict) -> dict:
    """The API body the options describe; an option not given is left out (update changes only those)."""
    renamed = {"name": "name", "url": "url", "mode": "mode", "max_entries": "max_bundle_entries",
               "rate_limit": "rate_limit", "pull": "pull", "enabled": "enabled"}
    data = {field: options[opt] for opt, field in renamed.items() if options.get(opt) is not None}
    if options.get("types") is not None:
        data["resource_types"] = [t.strip() for t in options["types"].split(",") if t.strip()]
    if options.get("patients") is not None:
        data["patients"] = _patients_option(options["patients"])
    auth = _auth_option(options)
    if auth is not None:
        data["auth"] = auth
    return data


def _save_destination(db, dest, options: dict, settings: Settings):
    """Create or update through the code the API uses (the URL policy too); field errors are
    printed one a line, exit 2."""
    from datetime import UTC, datetime

    from marshmallow import ValidationError

    from service.admin import save_destination
    from service.errors import flatten_errors

    try:
        return save_destination(db, dest, _destination_data(options), datetime.now(UTC), settings)
    except ValidationError as exc:
        for path, messages in flatten_errors(exc.messages).items():
            where = next((opt for key, opt in _OPTION_OF.items() if path == key or path.startswith(key + ".")), path)
            click.echo(f"{where}: {' '.join(messages)}", err=True)
        sys.exit(2)


def _find_destination(db, key: str):
    from service.sync.destinations import get

    dest = get(db, key)
    if dest is None:
        raise click.ClickException(f"no destination {key!r}")
    return dest


def _echo_json(data) -> None:
    click.echo(json.dumps(data, indent=2))


def _table(headers: list[str], rows: list[list]) -> None:
    """Columns padded to their widest cell; the last one (often long) is not padded."""
    cells = [headers, *[["-" if v is None else str(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row[:-1], widths[:-1], strict=True)) + "  " + row[-1])


def _when(iso: str | None) -> str | None:
    """An ISO 8601 UTC time, to the second, for tables."""
    from datetime import UTC, datetime

    return None if iso is None else datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _age(seconds: int | None) -> str | None:
    if seconds is None:
        return None
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if seconds >= size:
            return f"{seconds // size}{unit}{seconds % size // sub_size:02d}{sub}"
    return f"{seconds}s"


@main.group()
def destination() -> None:
    """Add, list, show, change and remove sync destinations (external FHIR servers)."""


@destination.command("add")
@click.option("--name", required=True, help="A unique name: letters, digits, '.', '_' or '-'.")
@click.option("--url", required=True, help="The destination's FHIR base URL.")
@_destination_options
def destination_add(**options) -> None:
    """Add a destination, paused, and queue the clinic's current data for it (the initial load).

    The URL's host must be in KETAMINE_FHIR_DESTINATION_HOSTS. Nothing is sent until it is
    enabled with `ketamine-fhir destination update NAME --enabled`.
    """
    from service.db import migrate

    settings = _settings()
    migrate(settings)
    with _session(settings) as db:
        dest, queued = _save_destination(db, None, options, settings)
        click.echo(f"added destination {dest.name} (id {dest.id}): {queued} resource(s) queued")
        click.echo(f"it is paused: nothing is sent until `ketamine-fhir destination update {dest.name} --enabled`")


@destination.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print what GET /admin/destinations answers.")
def destination_list(as_json: bool) -> None:
    """List destinations: name, id, URL, mode, auth, enabled, circuit."""
    views = _destination_views()
    if as_json:
        _echo_json({"destinations": views})
        return
    _table(["NAME", "ID", "MODE", "AUTH", "ENABLED", "CIRCUIT", "URL"],
           [[v["name"], v["id"], v["mode"], v["auth"]["kind"], v["enabled"], v["circuit"], v["url"]] for v in views])


def _destination_views() -> list[dict]:
    from datetime import UTC, datetime

    from sqlalchemy import select

    from service.models import Destination
    from service.sync.status import describe

    now = datetime.now(UTC)
    with _session(_settings()) as db:
        return [describe(db, d, now) for d in db.scalars(select(Destination).order_by(Destination.name))]


@destination.command("show")
@click.argument("key", metavar="NAME_OR_ID")
@click.option("--json", "as_json", is_flag=True, help="Print what GET /admin/destinations/<id> answers.")
def destination_show(key: str, as_json: bool) -> None:
    """Show a destination's settings (never its secrets) and status."""
    from datetime import UTC, datetime

    from service.sync.status import describe

    with _session(_settings()) as db:
        view = describe(db, _find_destination(db, key), datetime.now(UTC))
    if as_json:
        _echo_json(view)
        return
    for path, value in _flat(view):
        click.echo(f"{path}: {'-' if value is None else value}")


def _flat(data: dict, prefix: str = ""):
    for key, value in data.items():
        if isinstance(value, dict) and value:
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", ", ".join(map(str, value)) if isinstance(value, list) else value


@destination.command("update")
@click.argument("key", metavar="NAME_OR_ID")
@click.option("--name", help="A new name.")
@click.option("--url", help="A new FHIR base URL.")
@_destination_options
def destination_update(key: str, **options) -> None:
    """Change the settings given; a wider selection (--types, --patients) queues what it adds.
    A new --url or auth pauses the destination unless --enabled is given too."""
    settings = _settings()
    with _session(settings) as db:
        dest, queued = _save_destination(db, _find_destination(db, key), options, settings)
        click.echo(f"updated destination {dest.name}: {queued} resource(s) queued")


@destination.command("remove")
@click.argument("key", metavar="NAME_OR_ID")
def destination_remove(key: str) -> None:
    """Remove a destination with its queue, attempt log and what it is known to hold."""
    from service.admin import remove_destination

    with _session(_settings()) as db:
        dest = _find_destination(db, key)
        name = dest.name
        remove_destination(db, dest)
    click.echo(f"removed destination {name}")


@main.group("secrets")
def secrets_group() -> None:
    """Destination secrets at rest (encrypted with KETAMINE_FHIR_ENCRYPTION_KEYS or <data>/encryption.key)."""


@secrets_group.command("rotate")
def secrets_rotate() -> None:
    """Re-encrypt every destination secret with the first key (and encrypt any stored in plaintext).

    Rotation: prepend a new key to KETAMINE_FHIR_ENCRYPTION_KEYS, restart, run this, then drop the old key.
    """
    from cryptography.fernet import InvalidToken
    from sqlalchemy import select

    from service.models import Destination
    from service.sync.destinations import SECRET_FIELDS, rotate_auth

    with _session(_settings()) as db:
        dests = list(db.scalars(select(Destination).order_by(Destination.name)))
        count = 0
        for dest in dests:
            try:
                # a new dict: the JSON column sees an assignment, not an in-place change
                dest.auth_config = rotate_auth(dest.auth_config or {}, db.info["encryption"])
            except InvalidToken:
                name = dest.name
                db.rollback()
                raise click.ClickException(f"no configured key opens the secrets of destination {name}: "
                                           "keep its key in KETAMINE_FHIR_ENCRYPTION_KEYS; nothing changed") from None
            count += sum(key in dest.auth_config for key in SECRET_FIELDS)
        db.commit()
    click.echo(f"re-encrypted {count} secret(s) of {len(dests)} destination(s) with the first key")


@main.group()
def sync() -> None:
    """Sync status, dead letters and the delivery attempt log."""


@sync.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print what GET /admin/destinations answers.")
def sync_status(as_json: bool) -> None:
    """One line per destination: queue depth, how far behind it is, and its health."""
    views = _destination_views()
    if as_json:
        _echo_json({"destinations": views})
        return
    headers = ["NAME", "ENABLED", "CIRCUIT", "PENDING", "IN FLIGHT", "DELIVERED", "DEAD LETTERS", "OLDEST PENDING",
               "LAST SUCCESS", "LAST ERROR"]
    rows = []
    for v in views:
        s = v["status"]
        error = f"{_when(s['last_error_at'])} {s['last_error'] or ''}".strip() if s["last_error_at"] else None
        rows.append([v["name"], v["enabled"], s["circuit"], s["pending"], s["in_flight"], s["delivered"],
                     s["dead_letters"], _age(s["oldest_pending_age_seconds"]), _when(s["last_success_at"]), error])
    _table(headers, rows)


@sync.command("dead-letters")
@click.argument("key", metavar="NAME_OR_ID")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True, help="Print the dead letters as the API lists them.")
def sync_dead_letters(key: str, limit: int, as_json: bool) -> None:
    """A destination's dead letters, oldest first: what it refused and why."""
    from service.sync.status import dead_letters

    with _session(_settings()) as db:
        rows = dead_letters(db, _find_destination(db, key).id, limit)
    if as_json:
        _echo_json({"dead_letters": rows})
        return
    _table(["ID", "RESOURCE", "VERSION", "ATTEMPTS", "STATUS", "CREATED", "ERROR"],
           [[r["id"], f"{r['resource_type']}/{r['resource_id']}", r["version_id"], r["attempts"], r["last_status"],
             _when(r["created_at"]), r["last_error"]] for r in rows])


@sync.command("waiting")
@click.argument("key", metavar="NAME_OR_ID")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True, help="Print the listing as the API gives it.")
def sync_waiting(key: str, limit: int, as_json: bool) -> None:
    """What holds each waiting lane of a destination up, oldest first, and why."""
    from service.sync.status import waiting

    with _session(_settings()) as db:
        rows = waiting(db, _find_destination(db, key).id, limit)
    if as_json:
        _echo_json({"waiting": rows})
        return
    _table(["ID", "LANE", "RESOURCE", "STATUS", "ATTEMPTS", "NEXT", "BEHIND", "WHY"],
           [[r["id"], r["lane"], f"{r['resource_type']}/{r['resource_id']}", r["status"], r["attempts"],
             _when(r["next_attempt_at"]), r["behind"], r["last_error"] or ""] for r in rows])


@sync.command("replay")
@click.argument("key", metavar="NAME_OR_ID")
@click.option("--id", "ids", multiple=True, type=click.IntRange(1), help="A dead letter's id (repeatable).")
@click.option("--all", "replay_all", is_flag=True, help="Every dead letter of the destination.")
def sync_replay(key: str, ids: tuple[int, ...], replay_all: bool) -> None:
    """Send dead letters again (after fixing what the destination refused)."""
    from datetime import UTC, datetime

    from service.sync.outbox import replay

    if bool(ids) == replay_all:
        raise click.UsageError("give either --id (one or more) or --all")
    with _session(_settings()) as db:
        dest = _find_destination(db, key)
        replayed = replay(db, dest.id, None if replay_all else list(ids), datetime.now(UTC))
        db.commit()
    click.echo(f"replayed {replayed} dead letter(s)")


@sync.command("attempts")
@click.argument("key", metavar="NAME_OR_ID")
@click.option("--message", "message_id", type=click.IntRange(1), help="Only this outbox message's attempts.")
@click.option("--result", type=click.Choice(["delivered", "unchanged", "retry", "dead", "deferred", "split"]),
              help="Only attempts with this result.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True, help="Print the attempts as the API lists them.")
def sync_attempts(key: str, message_id: int | None, result: str | None, limit: int, as_json: bool) -> None:
    """A destination's delivery attempts, newest first."""
    from service.sync.status import attempts

    with _session(_settings()) as db:
        rows = attempts(db, _find_destination(db, key).id, message_id=message_id, result=result, limit=limit)
    if as_json:
        _echo_json({"attempts": rows})
        return
    _table(["ID", "AT", "MESSAGE", "RESOURCE", "REQUEST", "STATUS", "RESULT", "MS", "ERROR"],
           [[r["id"], _when(r["at"]), r["message_id"], f"{r['resource_type']}/{r['resource_id']}", r["request"],
             r["status_code"], r["result"], r["duration_ms"], r["error"]] for r in rows])


def _register_worker_commands() -> None:
    from service.sync.commands import beat, worker

    main.add_command(worker)
    main.add_command(beat)


_register_worker_commands()
