"""The ClickHouse migrations are valid and idempotent on current ClickHouse (chdb) and on
the 18.16 server (through the worker's runner, which adds columns 18.16 cannot add with
IF NOT EXISTS), bring a database of the previous layout up to date without losing rows,
and give analysts the documented tables and columns."""

from __future__ import annotations

import json
import re
import uuid
from typing import Callable

from e2e_support import REPO, ch_exec, ch_query, event, post, sql_str, worker_command

MIGRATIONS = REPO / "deploy" / "clickhouse" / "migrations"

# What analysts rely on (DESIGN.md, "ClickHouse"); more columns are welcome.
EVENTS_COLUMNS = {
    "event_id": "String",
    "scope": "String",
    "event_type": "String",
    "session_id": "String",
    "profile_id": "String",
    "event_time": "DateTime('UTC')",
    "event_time_ms": "UInt64",
    "sent_at": "Nullable(DateTime('UTC'))",
    "sent_at_ms": "Nullable(UInt64)",
    "received_at": "DateTime('UTC')",
    "received_at_ms": "UInt64",
    "properties": "String",
    "source_id": "String",
    "source_type": "String",
    "target_id": "String",
    "target_type": "String",
    "kafka_partition": "UInt32",
    "kafka_offset": "UInt64",
    "corrected_time": "DateTime('UTC')",
    "corrected_time_ms": "UInt64",
    "client_ip": "String",
    "user_agent": "String",
    "origin": "String",
    "referer": "String",
    "context": "String",
    "policy": "String",
    "replayed_at_ms": "UInt64",
    "rejected_at_ms": "UInt64",
    "replay_job": "String",
}
REJECTED_COLUMNS = {
    "event_id": "String",
    "scope": "String",
    "event_type": "String",
    "session_id": "String",
    "received_at": "DateTime('UTC')",
    "received_at_ms": "UInt64",
    "stage": "String",
    "reasons": "String",
    "raw": "String",
    "kafka_partition": "UInt32",
    "kafka_offset": "UInt64",
    "client_ip": "String",
    "user_agent": "String",
    "origin": "String",
    "referer": "String",
    "policy": "String",
    "replayed_at_ms": "UInt64",
    "replay_job": "String",
}
EVENT_LOG_COLUMNS = {
    "event_id", "scope", "event_type", "session_id", "status", "received_at", "reasons",
    "event_time_ms", "corrected_time_ms", "client_ip", "user_agent", "origin", "referer",
    "context", "policy",
    "rejected_at_ms", "replayed_at_ms", "replay_job",
}

# event_log as databases migrated before 0003_request_context.sql have it.
PREVIOUS_EVENT_LOG = """CREATE VIEW {database}.event_log AS
SELECT event_id, scope, event_type, session_id, profile_id, 'accepted' AS status,
    event_time, event_time_ms, received_at, received_at_ms, properties, '[]' AS reasons, '' AS raw,
    source_id, source_type, target_id, target_type, schema_version, kafka_partition, kafka_offset
FROM {database}.events FINAL
UNION ALL
SELECT event_id, scope, event_type, session_id, profile_id, 'rejected' AS status,
    event_time, event_time_ms, received_at, received_at_ms, '{{}}' AS properties, reasons, raw,
    '' AS source_id, '' AS source_type, '' AS target_id, '' AS target_type,
    toUInt32(0) AS schema_version, kafka_partition, kafka_offset
FROM {database}.rejected_events FINAL"""


def migration_statements(database: str) -> list[str]:
    """Every statement of every migration file, in file-name order, for `database`."""
    files = sorted(MIGRATIONS.glob("*.sql"))
    assert files, f"no migrations in {MIGRATIONS}"
    statements = []
    for path in files:
        text = path.read_text().replace("{database}", database)
        for chunk in re.split(r";[ \t]*$", text, flags=re.MULTILINE):
            code = "\n".join(line for line in chunk.splitlines() if not line.strip().startswith("--")).strip()
            if code:
                statements.append(chunk.strip())
    return statements


def plain_type(ch_type: str) -> str:
    """LowCardinality(T) reads like T for every query; the column contract is about T."""
    m = re.fullmatch(r"LowCardinality\((.*)\)", ch_type)
    return m.group(1) if m else ch_type


def check_schema(rows: list[dict]) -> None:
    """rows: system.columns (table, name, type) and system.tables (name, engine) of one database."""
    tables = {r["name"]: r["engine"] for r in rows if "engine" in r}
    assert {"events", "rejected_events", "event_log"} <= set(tables), f"objects: {tables}"
    assert tables["event_log"] == "View", f"event_log must be a view: {tables['event_log']}"
    columns: dict[str, dict[str, str]] = {}
    for r in rows:
        if "type" in r:
            columns.setdefault(r["table"], {})[r["name"]] = plain_type(r["type"])
    for table, wanted in (("events", EVENTS_COLUMNS), ("rejected_events", REJECTED_COLUMNS)):
        wrong = {c: (t, columns[table].get(c)) for c, t in wanted.items() if columns[table].get(c) != t}
        assert not wrong, f"{table}: (wanted, actual) types: {wrong}"
    missing = EVENT_LOG_COLUMNS - set(columns["event_log"])
    assert not missing, f"event_log lacks {missing}"


def schema_queries(database: str) -> list[str]:
    return [
        f"SELECT name, engine FROM system.tables WHERE database = {sql_str(database)}",
        f"SELECT table, name, type FROM system.columns WHERE database = {sql_str(database)}",
    ]


def apply_twice(run: Callable[[str], object], database: str) -> None:
    run(f"CREATE DATABASE IF NOT EXISTS {database}")
    for attempt in (1, 2):
        for stmt in migration_statements(database):
            try:
                run(stmt)
            except Exception as exc:  # noqa: BLE001 - say which statement, which round
                raise AssertionError(f"round {attempt}: {exc}\nstatement:\n{stmt}") from None


def sample_rows_sql(database: str) -> list[str]:
    """One accepted and one rejected row, naming only contract columns."""
    return [
        f"INSERT INTO {database}.events (event_id, scope, event_type, session_id, profile_id, event_time, "
        "event_time_ms, sent_at, sent_at_ms, received_at, received_at_ms, properties, source_id, source_type, "
        "target_id, target_type, kafka_partition, kafka_offset) VALUES ('e1', 'demo', 'view', 's1', '', "
        "toDateTime(1634298540, 'UTC'), 1634298540123, NULL, NULL, toDateTime(1634298541, 'UTC'), "
        "1634298541000, '{}', '_', '_', '_', '_', 0, 0)",
        f"INSERT INTO {database}.rejected_events (event_id, scope, event_type, session_id, received_at, "
        "received_at_ms, stage, reasons, raw, kafka_partition, kafka_offset) VALUES ('e2', 'demo', 'view', "
        "'s1', toDateTime(1634298542, 'UTC'), 1634298542000, 'gateway', "
        "'[{\"code\":\"missing_scope\",\"path\":\"scope\",\"message\":\"m\"}]', '{}', 0, 1)",
    ]


def test_migrations_apply_twice_on_current_clickhouse():
    """chdb (an in-process current ClickHouse) runs every migration twice without error,
    and the event log shows accepted and rejected rows together."""
    from chdb import session as chdb_session  # tests/requirements.txt

    database = f"powehi_chdb_{uuid.uuid4().hex[:8]}"
    sess = chdb_session.Session()
    try:
        apply_twice(lambda sql: sess.query(sql), database)

        def rows(sql: str) -> list[dict]:
            text = str(sess.query(sql, "JSONEachRow"))
            return [json.loads(line) for line in text.splitlines() if line.strip()]

        check_schema([r for q in schema_queries(database) for r in rows(q)])
        for sql in sample_rows_sql(database):
            sess.query(sql)
        statuses = rows(f"SELECT event_id, status FROM {database}.event_log ORDER BY event_id")
        assert statuses == [{"event_id": "e1", "status": "accepted"}, {"event_id": "e2", "status": "rejected"}]
    finally:
        sess.close()


def test_migrations_apply_twice_on_the_clickhouse_18_server(services):
    """The same files run twice on the real server that tests use (ClickHouse 18.16), through
    the worker's runner (`event-worker migrate`): 18.16 has no ADD COLUMN IF NOT EXISTS."""
    database = f"powehi_test_mig_{uuid.uuid4().hex[:8]}"
    try:
        worker_command(database, "migrate")
        worker_command(database, "migrate")
        check_schema([r for q in schema_queries(database) for r in ch_query(q)])
        for sql in sample_rows_sql(database):
            ch_exec(sql)
        statuses = ch_query(f"SELECT event_id, status FROM {database}.event_log ORDER BY event_id")
        assert statuses == [{"event_id": "e1", "status": "accepted"}, {"event_id": "e2", "status": "rejected"}]
    finally:
        ch_exec(f"DROP DATABASE IF EXISTS {database}")


def test_a_database_of_the_previous_layout_is_brought_up_to_date(services):
    """A database migrated before the request-context columns (0001, 0002 and the event_log
    of then, with rows): `migrate` adds the columns, replaces the view, and the old rows read
    with their timeStamp as corrected time, an empty request context, no `context` and no
    recorded policy (they were all ingested under reject/trim)."""
    database = f"powehi_test_mig_{uuid.uuid4().hex[:8]}"
    previous = [p for p in sorted(MIGRATIONS.glob("*.sql")) if p.name < "0003"]
    try:
        ch_exec(f"CREATE DATABASE {database}")
        for path in previous:
            text = path.read_text().replace("{database}", database)
            for chunk in re.split(r";[ \t]*$", text, flags=re.MULTILINE):
                if any(line.strip() and not line.strip().startswith("--") for line in chunk.splitlines()):
                    ch_exec(chunk)
        ch_exec(PREVIOUS_EVENT_LOG.format(database=database))
        for sql in sample_rows_sql(database):
            ch_exec(sql)

        worker_command(database, "migrate")
        check_schema([r for q in schema_queries(database) for r in ch_query(q)])
        rows = ch_query(
            f"SELECT event_id, status, event_time_ms, corrected_time_ms, client_ip, origin, context, policy "
            f"FROM {database}.event_log ORDER BY event_id"
        )
        assert rows == [
            {"event_id": "e1", "status": "accepted", "event_time_ms": 1634298540123,
             "corrected_time_ms": 1634298540123, "client_ip": "", "origin": "", "context": "", "policy": ""},
            {"event_id": "e2", "status": "rejected", "event_time_ms": 0,
             "corrected_time_ms": 0, "client_ip": "", "origin": "", "context": "", "policy": ""},
        ], rows
    finally:
        ch_exec(f"DROP DATABASE IF EXISTS {database}")


def test_worker_starts_again_on_its_existing_database(names, start_gateway, start_worker, store):
    """A second worker start on the same database succeeds (migrations are idempotent) and
    keeps the stored events."""
    gateway = start_gateway()
    worker = start_worker()
    ev = event(gateway.creds.client_id)
    assert post(gateway, {"events": [ev]}).status_code == 200
    store.wait_for_ids({ev["itemId"]}, timeout=15)
    worker.terminate()
    assert worker.wait_exit(30) == 0

    start_worker(wait="ready")
    tables = {
        r["name"]: r["engine"]
        for r in ch_query(f"SELECT name, engine FROM system.tables WHERE database = {sql_str(names.database)}")
    }
    assert {"events", "rejected_events", "event_log"} <= set(tables), tables
    check_schema([r for q in schema_queries(names.database) for r in ch_query(q)])
    assert store.id_counts() == {ev["itemId"]: 1}
