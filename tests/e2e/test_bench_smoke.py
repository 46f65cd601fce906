"""The benchmark harness never rots: `bench/run.sh --smoke` runs every measurement at a tiny
volume against the real Kafka and ClickHouse and writes a complete report.

The figures of a smoke run mean nothing; this only checks that each section is there with
numbers in it. The full benchmark (`make bench`) stays out of the test suite.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from e2e_support import LOADGEN_BIN, REPO

SMOKE_TIMEOUT_S = 180

SECTIONS = [
    "## Machine",
    "### Gateway vs a trivial HTTP handler",
    "### Gateway latency at a fixed rate",
    "### Gateway vs raw librdkafka",
    "### Worker vs raw ClickHouse insert",
    "### Freshness: HTTP ack to visible in `event_log`",
    "### Peak memory (VmHWM)",
    "### Memory while Kafka or ClickHouse is slow",
    "### Takeover, restart and reads at scale",
    "## Targets (issues 5 and 11)",
    "## Commands",
]

NUMBER = re.compile(r"^-?[\d,]+(\.\d+)?%?( ms)?$")


def section(text: str, heading: str) -> str:
    start = text.index(heading) + len(heading)
    end = text.find("\n#", start)
    return text[start : end if end != -1 else len(text)]


def tables(body: str) -> list[list[list[str]]]:
    """Data rows of each Markdown table in `body`, in order (header and rule skipped)."""
    found: list[list[str]] = []
    current: list[str] = []
    for line in body.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            found.append(current)
            current = []
    return [[[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]] for rows in found]


def table_rows(body: str) -> list[list[str]]:
    """Data rows of the first Markdown table in `body`."""
    return tables(body)[0]


def req_s(cell: str) -> float:
    return float(cell.replace(",", ""))


def positive(cell: str) -> bool:
    value = cell.replace(",", "").removesuffix(" ms").removesuffix("%")
    return float(value) > 0


def test_smoke_benchmark_writes_every_section_with_numbers(services, tmp_path):
    if not os.access(LOADGEN_BIN, os.X_OK):
        pytest.fail(f"{LOADGEN_BIN} is missing: build it with `make build`")
    out = tmp_path / "BENCHMARKS.md"
    try:
        run = subprocess.run(
            [str(REPO / "bench" / "run.sh"), "--smoke", "--out", str(out)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=SMOKE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"bench/run.sh --smoke took over {SMOKE_TIMEOUT_S}s:\n{exc.stderr}")
    assert run.returncode == 0, f"bench/run.sh --smoke failed ({run.returncode}):\n{run.stderr[-4000:]}"
    text = out.read_text()

    assert "Smoke run" in text
    for heading in SECTIONS:
        assert heading in text, f"missing section {heading!r}"

    # Every result table has rows, and every cell of its numeric columns is a positive number.
    numeric_columns = {
        "### Gateway vs a trivial HTTP handler": [3],
        "### Gateway latency at a fixed rate": [1, 2, 3, 4, 5, 6],
        "### Worker vs raw ClickHouse insert": [1],
        "### Freshness: HTTP ack to visible in `event_log`": [0, 2, 3, 6, 8],
        "### Peak memory (VmHWM)": [2],
        "### Memory while Kafka or ClickHouse is slow": [3, 4],
    }
    for heading, columns in numeric_columns.items():
        rows = table_rows(section(text, heading))
        assert rows, f"{heading}: no results table"
        for row in rows:
            for c in columns:
                assert NUMBER.match(row[c]) and positive(row[c]), f"{heading}: {row[c]!r} in {row}"
    # Each side's max is its best run over the connection sweep, which is listed whole.
    best, runs = tables(section(text, "### Gateway vs a trivial HTTP handler"))[:2]
    assert [row[0] for row in best] == ["1", "10", "100"], best
    assert sorted({row[1] for row in runs}) == ["4", "8"], runs
    for row in best:
        swept = [r for r in runs if r[0] == row[0]]
        for column, side in ((1, 2), (2, 3)):
            figure = re.match(r"^([\d,]+) \((\d+)\)$", row[column])
            assert figure, f"{row[column]!r} is not 'req/s (connections)'"
            top = max(req_s(r[side]) for r in swept)
            assert req_s(figure.group(1)) == top and top > 0, (row, swept)
            assert (figure.group(2), figure.group(1)) in [(r[1], r[side]) for r in swept], (row, swept)
    # The floor (trivial handler + Kafka acknowledgement) ran the same sweep with single events.
    floor_runs = [r for r in runs if r[0] == "1"]
    floor_text = re.search(r"Single-event requests: ([\d,]+) req/s\s+\((\d+) connections\)", text)
    assert floor_text, "no floor figure in the gateway section"
    assert req_s(floor_text.group(1)) == max(req_s(r[4]) for r in floor_runs) > 0, (floor_text.group(0), floor_runs)
    kafka_rows = table_rows(section(text, "### Gateway vs raw librdkafka"))
    assert len(kafka_rows) == 2 and all(positive(r[1]) for r in kafka_rows), kafka_rows

    # Every acknowledged event of the freshness run became visible.
    fresh_runs = table_rows(section(text, "### Freshness: HTTP ack to visible in `event_log`"))
    assert [row[1] for row in fresh_runs] == ["`event_log`", "`event_log`", "`events`"], fresh_runs
    for fresh in fresh_runs:
        assert fresh[4] == "0" and fresh[2] == fresh[3], fresh
    # The workers stored every preloaded record, all accepted (the generated events are valid).
    for row in table_rows(section(text, "### Worker vs raw ClickHouse insert"))[1:]:
        accepted, rejected = (int(x.replace(",", "")) for x in row[3].split(" / "))
        assert accepted > 0 and rejected == 0, row

    # The slowed-down worker still stored rows, through the proxy that held its INSERTs back.
    memory_rows = table_rows(section(text, "### Memory while Kafka or ClickHouse is slow"))
    slow_worker = memory_rows[2]
    assert re.match(r"^[1-9][\d,]* rows stored$", slow_worker[2]), slow_worker
    # Beside the slow clients, every normal request was answered 200.
    slow_clients = memory_rows[1]
    assert re.match(r'^normal requests: \{"200": \d+\}, latency p99 [\d.]+ ms; slow ones', slow_clients[2]), slow_clients

    # Takeover at scale, beside the unkeyed queries of before; restart under the same name
    # and under a new one (the new name waits out the old session: longer).
    scale = {row[0]: row[1] for row in table_rows(section(text, "### Takeover, restart and reads at scale"))}
    assert len(scale) == 8, scale
    seconds = {name: float(re.match(r"^([\d.]+) (m?s)$", value).group(1)) for name, value in scale.items()}
    assert all(v > 0 for v in seconds.values()), scale
    same = seconds["restart after kill -9 to partitions owned, same worker name (static membership)"]
    renamed = seconds["the same under a new name (the group waits out the old session)"]
    assert same < renamed, scale

    targets = table_rows(section(text, "## Targets (issues 5 and 11)"))
    assert len(targets) >= 5 and all(r[1] for r in targets), targets

    # The open loop at half of max ran three times, and its target reads the median p99.
    open_rows = table_rows(section(text, "### Gateway latency at a fixed rate"))
    labels = [row[0] for row in open_rows]
    assert labels == [f"50% of max, run {i}" for i in (1, 2, 3)] + ["80% of max"] + [
        f"floor, 50% of the gateway's max, run {i}" for i in (1, 2, 3)
    ], labels
    assert open_rows[0][1] == open_rows[4][1], "the floor ran at another rate than the gateway"
    median_p99 = sorted((row[4] for row in open_rows[:3]), key=float)[1]
    half_target = [r for r in targets if r[0].startswith("gateway p99 ack latency at half of the gateway's max")]
    assert [r[1] for r in half_target] == [f"{median_p99} ms"], (half_target, open_rows)
    # Next to the targets, what the floor reaches on the two measures it bounds.
    allowed = tables(section(text, "## Targets (issues 5 and 11)"))[1]
    assert [r[0].split(" (")[0] for r in allowed] == [
        "single-event req/s vs trivial handler",
        "p99 ack latency at half of the gateway's max",
    ], allowed
    for row in allowed:
        assert all(NUMBER.match(c) and positive(c) for c in row[1:3]), row
    floor_p99 = sorted((row[4] for row in open_rows[4:]), key=float)[1]
    assert allowed[1][1] == f"{floor_p99} ms", (allowed, open_rows)
    assert "powehi-loadgen" in section(text, "## Commands")
