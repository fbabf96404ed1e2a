"""Backups that restore, on the native twin: `stackctl backup` / `stackctl restore` run
scripts/pg-backup (the script compose's `backup` service runs) as the owner role, with the
host's PostgreSQL client, against the twin's database while api-svc serves it."""

import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import sql

from stackctl.addresses import REPO
from stackctl.native import DB_NAME, OWNER, READER, NativeStack, client_bin
from testkit import wait_for

# Every row, in order, to the byte: what a backup must give back.
FINGERPRINT = (
    "SELECT count(*), md5(string_agg(id || ':' || text || ':' || created_at, E'\\n' ORDER BY id))"
    " FROM messages"
)
# The readable messages and a few of the seeded ones.
IDS = (1, 5, 10, 4242, 499_999)
SCRATCH = f"{DB_NAME}_restore"


def _connect(stack: NativeStack, user: str, database: str = DB_NAME) -> psycopg.Connection:
    """As the owner, the read-only role, or (any other name) the superuser."""
    secrets_ = stack.state.secrets()
    password = {OWNER: secrets_["owner"], READER: secrets_["reader"]}.get(user)
    if password is None:
        return psycopg.connect(stack.cluster().conninfo(database), autocommit=True)
    return psycopg.connect(
        host="127.0.0.1",
        port=stack.port("postgres", 5432),
        user=user,
        password=password,
        dbname=database,
        autocommit=True,
        connect_timeout=5,
    )


def _url(stack: NativeStack, user: str, database: str) -> str:
    password = stack.state.secrets()["reader" if user == READER else "owner"]
    return f"postgresql://{user}:{password}@127.0.0.1:{stack.port('postgres', 5432)}/{database}"


def _client(stack: NativeStack, program: str) -> str:
    """The host's pg_dump/pg_restore that stackctl picks for the stack's server."""
    return str(client_bin(stack.cluster()) / program)


def _fingerprint(stack: NativeStack) -> tuple[int, str]:
    with _connect(stack, OWNER) as conn:
        row = conn.execute(FINGERPRINT).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def _databases(stack: NativeStack) -> set[str]:
    with _connect(stack, "postgres", "postgres") as conn:
        return {row[0] for row in conn.execute("SELECT datname FROM pg_database")}


def _answers(gateway: httpx.Client) -> dict[int, object]:
    answers = {}
    for message_id in IDS:
        response = gateway.get(f"/message/{message_id}")
        assert response.status_code == 200, (message_id, response.text)
        answers[message_id] = response.json()
    return answers


def _stackctl(stack: NativeStack, *args: str) -> subprocess.CompletedProcess[str]:
    """The command line `make native-backup` / `make native-restore` run."""
    return subprocess.run(
        [sys.executable, "-m", "stackctl.cli", *args, "--state-dir", str(stack.state.root)],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _pg_backup(
    stack: NativeStack, user: str, *args: str, backup_dir: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """scripts/pg-backup as ``user`` (what stackctl runs as the owner)."""
    secrets_ = stack.state.secrets()
    env = {
        "PATH": "/usr/bin:/bin",
        "PGHOST": "127.0.0.1",
        "PGPORT": str(stack.port("postgres", 5432)),
        "PGUSER": user,
        "PGPASSWORD": secrets_["reader"] if user == READER else secrets_["owner"],
        "PGDATABASE": DB_NAME,
        "PG_BIN": str(client_bin(stack.cluster())),
    }
    if backup_dir is not None:
        env["BACKUP_DIR"] = str(backup_dir)
    return subprocess.run(
        ["bash", str(REPO / "scripts/pg-backup"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _one_sentence(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.fixture(scope="module")
def backup_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("backups")


@pytest.fixture(scope="module")
def dump(stack: NativeStack, backup_dir: Path) -> Path:
    """One backup of the twin's database, made while api-svc answered requests."""
    statuses: list[int] = []
    done = threading.Event()

    def keep_reading() -> None:
        with httpx.Client(base_url=stack.gateway_url, timeout=10) as client:
            while not done.is_set():
                statuses.append(client.get("/message/7").status_code)

    api_pid = stack.pid("api-svc")
    reader = threading.Thread(target=keep_reading)
    reader.start()
    try:
        result = _stackctl(stack, "backup", "--dir", str(backup_dir))
    finally:
        done.set()
        reader.join(timeout=30)
    assert result.returncode == 0, result.stderr
    # api-svc kept serving, and was never restarted, while the dump ran.
    assert statuses
    assert set(statuses) == {200}, set(statuses)
    assert stack.pid("api-svc") == api_pid
    path = Path(result.stdout.strip().splitlines()[-1])
    assert path.parent == backup_dir
    return path


def test_a_backup_is_a_compressed_timestamped_custom_format_dump(
    stack: NativeStack, dump: Path
) -> None:
    assert re.fullmatch(r"messages-\d{8}T\d{6}Z\.dump", dump.name), dump.name
    assert dump.stat().st_mode & 0o777 == 0o600, "the dump holds every row: owner only"
    listing = subprocess.run(
        [_client(stack, "pg_restore"), "--list", str(dump)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert re.search(r"^;\s+Format: CUSTOM$", listing, re.MULTILINE)
    compression = re.search(r"^;\s+Compression: (\S+)$", listing, re.MULTILINE)
    assert compression, listing
    assert compression[1] not in {"0", "none"}
    assert re.search(r"TABLE DATA public messages ", listing)
    with _connect(stack, OWNER) as conn:
        row = conn.execute("SELECT pg_table_size('messages')").fetchone()
    assert row is not None
    assert dump.stat().st_size < row[0] / 2, "compressed: smaller than half the table"


def test_a_backup_restores_into_a_dropped_and_recreated_database(
    stack: NativeStack, gateway: httpx.Client, dump: Path
) -> None:
    before = _fingerprint(stack)
    assert before[0] > 500_000
    answers = _answers(gateway)
    api_pid = stack.pid("api-svc")
    # Gone, and back empty: what a lost volume leaves.
    with _connect(stack, "postgres", "postgres") as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(DB_NAME)))
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(DB_NAME), sql.Identifier(OWNER)
            )
        )
    assert gateway.get("/message/1").status_code != 200
    result = _stackctl(stack, "restore", str(dump))
    assert result.returncode == 0, result.stderr
    assert _fingerprint(stack) == before
    # api-svc (its pool reconnects; nothing restarted) answers exactly as before.
    wait_for(lambda: gateway.get("/message/1").status_code == 200, timeout=10, interval=0.2)
    assert _answers(gateway) == answers
    assert stack.pid("api-svc") == api_pid
    # The migrations check passes on the restored database, the scratch one is gone, and the
    # read-only role has its grants back.
    assert SCRATCH not in _databases(stack)
    with _connect(stack, READER) as conn:
        row = conn.execute("SELECT count(*) FROM messages").fetchone()
    assert row is not None
    assert row[0] == before[0]
    with _connect(stack, "postgres") as conn:
        extensions = {r[0] for r in conn.execute("SELECT extname FROM pg_extension")}
    assert "pg_stat_statements" in extensions


@pytest.fixture(scope="module")
def bad_backups(stack: NativeStack, dump: Path, backup_dir: Path) -> Iterator[dict[str, Path]]:
    """What a restore must refuse: a file that is not there, half a real dump, a file that is
    no dump at all, and a complete dump of a database that is not api-svc's (no migrations)."""
    truncated = backup_dir / "truncated.dump"
    truncated.write_bytes(dump.read_bytes()[: dump.stat().st_size // 2])
    not_a_dump = backup_dir / "notes.dump"
    not_a_dump.write_text("not a backup\n")
    with _connect(stack, OWNER, "postgres") as conn:
        conn.execute("DROP DATABASE IF EXISTS not_messages")
        conn.execute("CREATE DATABASE not_messages")
    with _connect(stack, OWNER, "not_messages") as conn:
        conn.execute("CREATE TABLE messages (id int PRIMARY KEY, text text)")
        conn.execute("INSERT INTO messages VALUES (1, 'someone else''s')")
    foreign = backup_dir / "foreign.dump"
    subprocess.run(
        [_client(stack, "pg_dump"), "--format=custom", f"--file={foreign}",
         f"--dbname={_url(stack, OWNER, 'not_messages')}"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    try:
        yield {
            "missing": backup_dir / "messages-19700101T000000Z.dump",
            "truncated": truncated,
            "not-a-dump": not_a_dump,
            "not-an-api-svc-database": foreign,
        }
    finally:
        with _connect(stack, OWNER, "postgres") as conn:
            conn.execute("DROP DATABASE IF EXISTS not_messages")


@pytest.mark.parametrize(
    ("kind", "says"),
    [
        ("missing", "no such backup file"),
        ("truncated", "does not restore (could not read from input file: end of file)"),
        ("not-a-dump", "is not a pg_dump custom-format archive"),
        ("not-an-api-svc-database", "records no migrations"),
    ],
)
def test_a_bad_backup_is_refused_in_one_sentence_and_changes_nothing(
    stack: NativeStack, gateway: httpx.Client, bad_backups: dict[str, Path], kind: str, says: str
) -> None:
    before = _fingerprint(stack)
    answers = _answers(gateway)
    result = _stackctl(stack, "restore", str(bad_backups[kind]))
    assert result.returncode == 1, result.stderr
    line = _one_sentence(result.stderr)
    assert says in line, line
    assert line.endswith(f"{DB_NAME} was not changed."), line
    assert _fingerprint(stack) == before
    assert _answers(gateway) == answers
    assert SCRATCH not in _databases(stack)


def test_apply_restores_only_the_file_that_was_staged_and_checked(
    stack: NativeStack, dump: Path, bad_backups: dict[str, Path]
) -> None:
    """The compose recipe runs stage, check and apply as three containers: apply refuses a
    file other than the one staged (a different or edited FILE between the steps)."""
    before = _fingerprint(stack)
    staged = _pg_backup(stack, OWNER, "stage", str(dump))
    assert staged.returncode == 0, staged.stderr
    try:
        other = _pg_backup(stack, OWNER, "apply", str(bad_backups["not-an-api-svc-database"]))
        assert other.returncode == 1
        assert "was not staged and checked" in _one_sentence(other.stderr)
        assert _fingerprint(stack) == before
    finally:
        assert _pg_backup(stack, OWNER, "discard").returncode == 0
    assert SCRATCH not in _databases(stack)


def test_the_read_only_role_reads_every_row_but_can_neither_back_up_nor_restore(
    stack: NativeStack, dump: Path, tmp_path: Path
) -> None:
    """api_reader may SELECT (it serves the rows), so it can copy the table out with COPY;
    pg_dump needs the identity sequence too, which it may not read, and a restore needs to
    create a database and to drop and create tables, which it may not do."""
    before = _fingerprint(stack)
    with _connect(stack, READER) as conn, conn.cursor() as cursor:
        with cursor.copy("COPY messages TO STDOUT") as copy:
            copied = sum(bytes(chunk).count(b"\n") for chunk in copy)
        assert copied == before[0]
        grants = {
            (row[0], row[1])
            for row in cursor.execute(
                "SELECT table_name, privilege_type FROM information_schema.role_table_grants"
                " WHERE grantee = %s",
                (READER,),
            )
        }
        assert grants == {("messages", "SELECT"), ("alembic_version", "SELECT")}
        sequence = cursor.execute(
            "SELECT has_sequence_privilege(%s, 'messages_id_seq', 'SELECT')", (READER,)
        ).fetchone()
        assert sequence == (False,)

    # Back up: the script, and pg_dump of the one table it can read.
    backed_up = _pg_backup(stack, READER, "backup", backup_dir=tmp_path)
    assert backed_up.returncode == 1
    line = _one_sentence(backed_up.stderr)
    assert "permission denied for sequence messages_id_seq" in line, line
    assert list(tmp_path.iterdir()) == [], "nothing, not even a partial file, is left"
    table_only = subprocess.run(
        [_client(stack, "pg_dump"), "--format=custom", "--table=messages", "--data-only",
         f"--file={tmp_path / 'table.dump'}", f"--dbname={_url(stack, READER, DB_NAME)}"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert table_only.returncode != 0
    assert "permission denied for sequence messages_id_seq" in table_only.stderr

    # Restore: no scratch database for it, and the restore itself is refused.
    staged = _pg_backup(stack, READER, "stage", str(dump))
    assert staged.returncode == 1
    assert "permission denied to create database" in _one_sentence(staged.stderr)
    applied = subprocess.run(
        [_client(stack, "pg_restore"), "--clean", "--if-exists", "--single-transaction",
         "--exit-on-error", f"--dbname={_url(stack, READER, DB_NAME)}", str(dump)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert applied.returncode != 0
    assert "must be owner of" in applied.stderr, applied.stderr
    assert _fingerprint(stack) == before
    assert SCRATCH not in _databases(stack)
