"""``api-svc-db``: the one-shot database step that runs, as the owner, before api-svc starts.

api-svc-db setup          migrations, the read-only role, the seed (idempotent)
api-svc-db fix-search     apply the trigram index migration (the bottleneck's fix)
api-svc-db unfix-search   revert it, to measure before and after again
api-svc-db check          the database's migrations are the ones this code expects (the main
                          branch at its head); exits 1 with one sentence otherwise.
                          --staged: check <database>_restore instead, where
                          `scripts/pg-backup stage` restores a backup before it replaces
                          <database>; --database NAME: any other database of the server
"""

import argparse
import sys
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from psycopg import sql
from sqlalchemy import Connection, create_engine, make_url
from sqlalchemy.exc import OperationalError

from api_svc.config import Settings, get_settings
from api_svc.db import libpq_conninfo
from service_kit.logs import configure_logging, get_logger

_log = get_logger("db_setup")
_MIGRATIONS = Path(__file__).parent / "migrations"

# The readable messages: ids 1..10 are what the README and the tests fetch.
READABLE_MESSAGES = (
    "Hello from api-svc: this row came from PostgreSQL.",
    "Every request carries an X-Request-ID you can find in the logs.",
    "Latency histograms are labelled by route template, not by raw path.",
    "Traces continue across the gateway with the W3C traceparent header.",
    "The search route is slow on purpose; the README shows how to find out why.",
    "A trigram index turns the sequential scan into an index scan.",
    "Alerts fire on burn rates, not on single slow requests.",
    "Gunicorn workers share their metrics through multiprocess files.",
    "Logs are JSON lines, one object per line, shipped to Loki by Alloy.",
    "Grafana shows all of it on one dashboard.",
)
# Words for the bulk rows: realistic text a substring search has to read through.
_WORDS = (
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
    "uniform", "victor", "whiskey", "xray", "yankee", "zulu", "metric", "trace", "span", "log",
    "gateway", "worker", "latency", "budget", "replica", "scrape", "bucket", "label", "query",
    "index",
)  # fmt: skip


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _owner_url(settings: Settings) -> str:
    if not settings.migration_database_url:
        sys.exit("MIGRATION_DATABASE_URL (the owner role) is required for api-svc-db")
    return settings.migration_database_url


def _run_alembic(settings: Settings, action: str, target: str) -> None:
    engine = create_engine(_owner_url(settings))
    try:
        with engine.begin() as connection:
            getattr(command, action)(_alembic_config(connection), target)
    finally:
        engine.dispose()


def ensure_reader_role(conn: psycopg.Connection, settings: Settings) -> None:
    """Create (or update) the role api-svc serves with: it can connect and SELECT, no more."""
    reader = make_url(settings.database_url)
    if not reader.username:
        sys.exit("DATABASE_URL must name the read-only role api-svc connects as")
    role = sql.Identifier(reader.username)
    password = sql.Literal(reader.password or "")
    exists = conn.execute(
        "SELECT 1 FROM pg_roles WHERE rolname = %s", (reader.username,)
    ).fetchone()
    verb = sql.SQL("ALTER") if exists else sql.SQL("CREATE")
    # A new role has no SUPERUSER/CREATEDB/CREATEROLE by default; only the grants below.
    conn.execute(sql.SQL("{} ROLE {} LOGIN PASSWORD {}").format(verb, role, password))
    database = sql.Identifier(conn.info.dbname)
    for statement in (
        "GRANT CONNECT ON DATABASE {database} TO {role}",
        "GRANT USAGE ON SCHEMA public TO {role}",
        "REVOKE CREATE ON SCHEMA public FROM {role}",
        "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}",
        "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {role}",
    ):
        conn.execute(sql.SQL(statement).format(database=database, role=role))


def enable_pg_stat_statements(conn: psycopg.Connection) -> None:
    """The slowest-statements view the dashboard reads (the server must preload the library).

    Creating this extension needs a superuser; with a lesser owner the step is logged and skipped,
    and whoever runs the server creates it instead.
    """
    try:
        with conn.transaction():
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    except psycopg.errors.InsufficientPrivilege:
        _log.warning("pg_stat_statements_needs_superuser")


def seed(conn: psycopg.Connection, bulk_rows: int) -> None:
    """Insert the readable messages and the bulk rows that are missing; safe to run again."""
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO messages (id, text) OVERRIDING SYSTEM VALUE VALUES (%s, %s) "
            "ON CONFLICT (id) DO NOTHING",
            list(enumerate(READABLE_MESSAGES, start=1)),
        )
        first = len(READABLE_MESSAGES) + 1
        # Deterministic pseudo-random sentences of six words (PostgreSQL's own integer hash);
        # older rows get older timestamps.
        cur.execute(
            """
            INSERT INTO messages (id, text, created_at) OVERRIDING SYSTEM VALUE
            SELECT i,
                   initcap(w[1 + abs(hashint4(i * 6)) %% n]) || ' '
                   || w[1 + abs(hashint4(i * 6 + 1)) %% n] || ' '
                   || w[1 + abs(hashint4(i * 6 + 2)) %% n] || ' '
                   || w[1 + abs(hashint4(i * 6 + 3)) %% n] || ' '
                   || w[1 + abs(hashint4(i * 6 + 4)) %% n] || ' '
                   || w[1 + abs(hashint4(i * 6 + 5)) %% n] || ' #' || i,
                   now() - make_interval(secs => i)
            FROM generate_series(%(first)s::int, %(last)s::int) AS i,
                 (SELECT %(words)s::text[] AS w, %(n)s::int AS n) AS words
            ON CONFLICT (id) DO NOTHING
            """,
            {
                "first": first,
                "last": first + bulk_rows - 1,
                "words": list(_WORDS),
                "n": len(_WORDS),
            },
        )
        cur.execute(
            "SELECT setval(pg_get_serial_sequence('messages', 'id'), "
            "(SELECT coalesce(max(id), 1) FROM messages))"
        )
        cur.execute("ANALYZE messages")


def setup(settings: Settings) -> None:
    _run_alembic(settings, "upgrade", "main@head")
    with psycopg.connect(libpq_conninfo(_owner_url(settings)), autocommit=True) as conn:
        enable_pg_stat_statements(conn)
        ensure_reader_role(conn, settings)
        seed(conn, settings.seed_rows)
        count = conn.execute("SELECT count(*) FROM messages").fetchone()
    _log.info("database_ready", messages=count[0] if count else 0)


# Where `scripts/pg-backup stage` restores a backup: the live database's name plus this.
STAGED_SUFFIX = "_restore"


class MigrationsNotCurrentError(Exception):
    """The database is not at the migrations this code expects; the message says why."""


def _applied_revisions(script: ScriptDirectory, recorded: tuple[str, ...]) -> set[str]:
    """Every revision that the recorded heads imply: down revisions and dependencies (after
    fix-search, alembic_version holds only 1001, whose dependency 0001 is applied too)."""
    applied: set[str] = set()
    todo = list(recorded)
    while todo:
        revision = script.get_revision(todo.pop())
        if revision is None or revision.revision in applied:
            continue
        applied.add(revision.revision)
        for parent in (revision.down_revision, revision.dependencies):
            if parent:
                names = (parent,) if isinstance(parent, str) else tuple(parent)
                todo.extend(r.revision for r in script.get_revisions(names) if r is not None)
    return applied


def check_migrations(url: str) -> tuple[str, ...]:
    """The revisions recorded in ``url``'s database, if its main branch is at the head of this
    code's migrations and it records nothing this code does not know; else raises
    MigrationsNotCurrentError. The search_index branch (fix-search) may be either way."""
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    script = ScriptDirectory.from_config(config)
    name = make_url(url).database
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            recorded = tuple(MigrationContext.configure(connection).get_current_heads())
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise MigrationsNotCurrentError(f"cannot connect to database {name} ({reason})") from None
    finally:
        engine.dispose()
    if not recorded:
        raise MigrationsNotCurrentError(
            f"database {name} records no migrations (no alembic_version): not an api-svc database"
        )
    try:
        applied = _applied_revisions(script, recorded)
    except CommandError:
        raise MigrationsNotCurrentError(
            f"database {name} is at revision {', '.join(recorded)}, which this code does not "
            "know (made by a newer api-svc?)"
        ) from None
    head = script.get_revision("main@head")
    if head is None or head.revision not in applied:
        expected = head.revision if head else "?"
        raise MigrationsNotCurrentError(
            f"database {name} is at revision {', '.join(recorded)}, behind the head {expected} "
            "this code expects (run `api-svc-db setup` to migrate it)"
        )
    return recorded


def check(settings: Settings, database: str | None = None, *, staged: bool = False) -> None:
    url = make_url(_owner_url(settings))
    name = database or f"{url.database}{STAGED_SUFFIX if staged else ''}"
    target = url.set(database=name).render_as_string(hide_password=False)
    try:
        recorded = check_migrations(target)
    except MigrationsNotCurrentError as exc:
        sys.exit(f"api-svc-db check: {exc}.")
    _log.info("migrations_current", database=name, revisions=list(recorded))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="api-svc-db", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=("setup", "fix-search", "unfix-search", "check"))
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--database", help="check: this database of the server instead")
    target.add_argument(
        "--staged", action="store_true", help=f"check: <database>{STAGED_SUFFIX} instead"
    )
    args = parser.parse_args(argv)
    if args.action != "check" and (args.database or args.staged):
        parser.error("--database and --staged apply to check only")
    settings = get_settings()
    configure_logging(settings.service_name, settings.log_level)
    if args.action == "check":
        check(settings, args.database, staged=args.staged)
    elif args.action == "setup":
        setup(settings)
    elif args.action == "fix-search":
        _run_alembic(settings, "upgrade", "search_index@head")
        _log.info("search_index_applied")
    else:
        _run_alembic(settings, "downgrade", "search_index@base")
        _log.info("search_index_reverted")


if __name__ == "__main__":
    main()
