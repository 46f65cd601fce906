"""Writes BENCHMARKS.md from the JSON lines bench/run.sh collected.

Usage (by bench/run.sh): report.py WORK_DIR OUT MODE KAFKA CLICKHOUSE RUSTC KERNEL NPROC MEMORY CPU COMMIT
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path

(work, out, mode, kafka_version, ch_version, rustc, kernel, nproc, memory, cpu, commit) = sys.argv[1:12]
WORK = Path(work)
SMOKE = mode == "smoke"


def load(name: str) -> dict:
    return json.loads((WORK / f"{name}.json").read_text().strip().splitlines()[-1])


def num(x: float, digits: int = 0) -> str:
    return f"{x:,.{digits}f}"


def ms(x: float) -> str:
    return f"{x:.2f}"


def ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


def pct(r: float) -> str:
    return f"{100 * r:.0f}%"


def mib(kb: float) -> str:
    return f"{kb / 1024:.1f}"


baseline = {b: load(f"baseline_b{b}") for b in (1, 10, 100)}
gateway = {b: load(f"gateway_b{b}") for b in (1, 10, 100)}


def sweep(name: str) -> dict[int, dict]:
    """The closed-loop runs of NAME by connection count (bench/run.sh measure_max)."""
    runs = (load(p.stem) for p in WORK.glob(f"{name}_c*.json"))
    return {o["connections"]: o for o in runs}


sweeps = {b: (sweep(f"baseline_b{b}"), sweep(f"gateway_b{b}")) for b in (1, 10, 100)}
swept = sorted(sweeps[1][1])


def runs_of(prefix: str) -> list[dict]:
    """PREFIX_1, PREFIX_2, … in the order they ran."""
    paths = sorted(WORK.glob(f"{prefix}_*.json"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    return [load(p.stem) for p in paths]


def median_p99(runs: list[dict]) -> dict:
    return sorted(runs, key=lambda o: o["latency_ms"]["p99"])[len(runs) // 2]


# The open loop at half of max ran several times; the target reads the median p99.
half_runs = runs_of("gateway_open50")
half = median_p99(half_runs)
open_loop = [(f"50% of max, run {i}", o) for i, o in enumerate(half_runs, 1)]
open_loop.append(("80% of max", load("gateway_open80")))
# The floor: the trivial handler forwarding each body to Kafka and answering on its ack.
floor, floor_sweep = load("floor_b1"), sweep("floor_b1")
floor_half_runs = runs_of("floor_open50")
floor_half = median_p99(floor_half_runs)
open_loop += [(f"floor, 50% of the gateway's max, run {i}", o) for i, o in enumerate(floor_half_runs, 1)]
kafka, clickhouse, preload = load("kafka"), load("clickhouse"), load("preload")
workers = {n: load(f"worker{n}") for n in (1, 2)}
fresh = load("freshness")
fresh_pipe, pipeline = load("freshness_pipeline"), load("pipeline_b1")
fresh_pipe_events = load("freshness_pipeline_events")
pipeline_cpu = load("pipeline_cpu")
gw_rss, fresh_rss = load("gateway_rss"), load("fresh_rss")
stall, stall_rss, slow = load("gateway_stall"), load("gateway_stall_rss"), load("worker_slow")
slow_clients, slow_clients_run = load("slow_clients"), load("gateway_slow_clients")
takeover, reads, restart = load("takeover"), load("reads"), load("restart")
commands = (WORK / "commands.txt").read_text().strip()

lines: list[str] = ["# Powehi benchmarks", ""]
if SMOKE:
    lines += [
        "> **Smoke run: these are not the real figures.** Every measurement ran, but at a",
        "> tiny volume (a few hundred events, about a second each) on a machine that was busy",
        "> with other work, only to prove the harness works. The real report comes from",
        "> `make bench` (that is `bench/run.sh`, the full sizes of issue 5) on a quiet machine.",
        "",
    ]
else:
    lines += [
        "Produced by `make bench` (`bench/run.sh`): every number below comes from that one",
        "command, run on the machine described here, baselines included.",
        "",
    ]
lines += [
    f"Run {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}, commit `{commit}`, mode `{mode}`.",
    "",
    "## Machine",
    "",
    "| | |",
    "|---|---|",
    f"| cores (`nproc`) | {nproc} |",
    f"| CPU | {cpu} |",
    f"| memory | {memory} |",
    f"| kernel | {kernel} |",
    f"| Kafka | {kafka_version} (single KRaft broker, `deploy/local/kafka.sh`) |",
    f"| ClickHouse | {ch_version} (`deploy/local/clickhouse.sh`) |",
    f"| rustc | {rustc} |",
    "",
    "The load generator (`powehi-loadgen`), the processes measured, Kafka and ClickHouse all",
    "share this machine.",
    "",
    "## Results",
    "",
    "### Gateway vs a trivial HTTP handler (closed loop, acks=all)",
    "",
    f"Each side's max is its best run at {' and '.join(map(str, swept))} connections (the count",
    "in brackets). A gateway request holds its connection until Kafka acknowledges it, about",
    "4 ms with the 2 ms linger, so a small count caps it whatever its CPU (Little's law).",
    "",
    "| batch | trivial handler req/s | gateway req/s | gateway events/s | gateway p50 / p99 ms | gateway / trivial |",
    "|---:|---:|---:|---:|---:|---:|",
]
for b in (1, 10, 100):
    g, t = gateway[b], baseline[b]
    lines.append(
        f"| {b} | {num(t['requests_per_s'])} ({t['connections']}) | {num(g['requests_per_s'])} ({g['connections']}) "
        f"| {num(g['events_per_s'])} | {ms(g['latency_ms']['p50'])} / {ms(g['latency_ms']['p99'])} "
        f"| {pct(ratio(g['requests_per_s'], t['requests_per_s']))} |"
    )
statuses = {b: gateway[b]["status"] for b in (1, 10, 100)}
floor_share = ratio(floor["requests_per_s"], baseline[1]["requests_per_s"])
lines += [
    "",
    f"Gateway answers by status (best runs): {json.dumps(statuses)}.",
    "",
    "**The floor of any gateway that answers once Kafka has the data**: the trivial handler",
    "forwarding each body to Kafka as one record, with the gateway's producer settings, and",
    "answering on its acknowledgement (`baseline-http --kafka-topic`; no parsing, no",
    f"authentication, no envelope). Single-event requests: {num(floor['requests_per_s'])} req/s",
    f"({floor['connections']} connections), {pct(floor_share)} of the trivial handler. The gateway",
    f"reaches {pct(ratio(gateway[1]['requests_per_s'], floor['requests_per_s']))} of this floor.",
    "",
    "Every run of the sweep, req/s:",
    "",
    "| batch | connections | trivial handler | gateway | floor |",
    "|---:|---:|---:|---:|---:|",
]
for b in (1, 10, 100):
    trivial_runs, gateway_runs = sweeps[b]
    for c in swept:
        floor_cell = num(floor_sweep[c]["requests_per_s"]) if b == 1 else ""
        lines.append(
            f"| {b} | {c} | {num(trivial_runs[c]['requests_per_s'])} | {num(gateway_runs[c]['requests_per_s'])} "
            f"| {floor_cell} |"
        )
lines.append("")

lines += [
    "### Gateway latency at a fixed rate (open loop, batch 1, coordinated-omission safe)",
    "",
    "Latency counts from each request's scheduled send time; `send lag` is how late the",
    "load generator itself sent (its pacer thread releases requests within 0.2 ms; a busy",
    "machine delays it more), included in the latency. The run at half of max is repeated",
    "(one stall can decide a p99 on a shared machine); the targets read the median p99.",
    "The floor (above) ran at the same rate, each of its runs right after the gateway's.",
    "",
    "| load | target req/s | achieved req/s | p50 ms | p99 ms | p99.9 ms | max ms | send lag p99 ms |",
    "|---|---:|---:|---:|---:|---:|---:|---:|",
]
for label, o in open_loop:
    lat = o["latency_ms"]
    lines.append(
        f"| {label} | {num(o['target_rate'])} | {num(o['requests_per_s'])} | {ms(lat['p50'])} "
        f"| {ms(lat['p99'])} | {ms(lat['p999'])} | {ms(lat['max'])} | {ms(o['send_lag_ms']['p99'])} |"
    )

kafka_ratio = ratio(gateway[100]["events_per_s"], kafka["events_per_s"])
lines += [
    "",
    "### Gateway vs raw librdkafka (same records, same broker)",
    "",
    "| producer | events/s | MB/s | share of raw |",
    "|---|---:|---:|---:|",
    f"| raw librdkafka (acks=all, idempotent, {kafka['compression']}, linger {kafka['linger_ms']} ms) | {num(kafka['events_per_s'])} | {kafka['mb_per_s']:.1f} | 100% |",
    f"| gateway, 100-event batches over HTTP | {num(gateway[100]['events_per_s'])} | | {pct(kafka_ratio)} |",
    "",
    f"Raw producer: {kafka['acked']:,} records of {kafka['mean_record_bytes']} bytes on average "
    f"(the gateway's envelopes), {kafka['failed']} failed.",
    "",
]

ch_rate = clickhouse["rows_per_s"]
lines += [
    "### Worker vs raw ClickHouse insert (same rows)",
    "",
    f"The worker reads {preload['records']:,} preloaded records (validation on) into a fresh",
    "database; raw insert: RowBinary over HTTP (LZ4) of the worker's rows into a table made",
    f"with the same migration, {clickhouse['batch']:,} rows per INSERT.",
    "",
    "| writer | events/s | share of raw | stored (accepted / rejected) | seconds from ready |",
    "|---|---:|---:|---:|---:|",
    f"| raw ClickHouse insert | {num(ch_rate)} | 100% | {clickhouse['stored']:,} | {clickhouse['elapsed_s']:.2f} |",
]
for n in (1, 2):
    w = workers[n]
    lines.append(
        f"| {n} worker{'s' if n > 1 else ''} | {num(w['events_per_s'])} | {pct(ratio(w['events_per_s'], ch_rate))} "
        f"| {w['accepted']:,} / {w['rejected']:,} | {w['seconds_from_ready']:.2f} |"
    )
lines += [
    "",
    "Worker events/s is measured from the first rows visible to the last; in runs too small",
    "for that (everything lands in one batch) it is measured from the workers being ready,",
    "which includes joining the consumer group.",
    "",
]

def fresh_row(run: dict, load_name: str, table: str = "event_log") -> str:
    f, a = run["freshness_ms"], run["ack_latency_ms"]
    return (
        f"| {num(run['rate'])} | `{table}` | {run['acked']:,} | {run['visible']:,} | {run['missing']} | {ms(f['p50'])} "
        f"| {ms(f['p99'])} | {ms(f['max'])} | {ms(a['p99'])} | {load_name} |"
    )


fl, ack = fresh["freshness_ms"], fresh["ack_latency_ms"]
pfl, pack = fresh_pipe["freshness_ms"], fresh_pipe["ack_latency_ms"]
lines += [
    "### Freshness: HTTP ack to visible in `event_log`",
    "",
    f"One gateway and one worker; single-event requests at a fixed rate; `event_log` polled every {fresh['poll_ms']} ms",
    "(visibility is counted at the start of the first poll that shows the event, so the figures",
    "over-state freshness by at most one poll interval).",
    "",
    "Two rates: half of the gateway's max measured above (no worker running then), and half of",
    f"the pipeline's max: {num(pipeline['requests_per_s'])} single-event req/s in a closed loop "
    f"({pipeline['connections']} connections) with the worker consuming and writing on the same machine",
    f"(the gateway alone: {num(gateway[1]['requests_per_s'])}). The worker caught up before each run.",
    f"CPU seconds spent during the pipeline-max runs ({pipeline_cpu['wall_s']:.0f} s of wall time on 2 cores, "
    f"the load generator taking the rest): gateway {pipeline_cpu['gateway_cpu_s']:.1f}, worker "
    f"{pipeline_cpu['worker_cpu_s']:.1f}, Kafka {pipeline_cpu['kafka_cpu_s']:.1f}, ClickHouse "
    f"{pipeline_cpu['clickhouse_cpu_s']:.1f}.",
    "The last row polls plain `events` instead of `event_log`: `event_log` reads `FINAL`, which on",
    "ClickHouse 18.16 merges the month's partition on every poll (the pipeline-max run just filled it),",
    "so the difference between the last two rows is what the exact view costs its reader, not the pipeline.",
    "",
    "| rate req/s | polled | acked | visible | missing | p50 ms | p99 ms | max ms | gateway ack p99 ms | load |",
    "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    fresh_row(fresh, "50% of the gateway's max"),
    fresh_row(fresh_pipe, "50% of the pipeline's max"),
    fresh_row(fresh_pipe_events, "50% of the pipeline's max", "events"),
    "",
    "### Peak memory (VmHWM)",
    "",
    "| process | during | peak RSS MiB |",
    "|---|---|---:|",
    f"| gateway | max load, batches of 1, 10, 100 and the open-loop runs | {mib(gw_rss['gateway_peak_rss_kb'])} |",
    f"| worker (1 of 1) | draining the preloaded topic | {mib(workers[1]['peak_rss_kb'])} |",
    f"| worker (largest of 2) | draining the preloaded topic | {mib(workers[2]['peak_rss_kb'])} |",
    f"| gateway | pipeline max and freshness runs | {mib(fresh_rss['gateway_peak_rss_kb'])} |",
    f"| worker | freshness runs | {mib(fresh_rss['worker_peak_rss_kb'])} |",
    "",
    "### Memory while Kafka or ClickHouse is slow",
    "",
    "Both processes bound what they hold, whatever the speed of what is behind them: the",
    "gateway holds the requests in flight (one per connection) and a bounded producer queue;",
    "the worker holds the batch being written, the batch filling, and a bounded prefetch.",
    "",
    "| process | slowdown | during it | peak RSS MiB | same at full speed |",
    "|---|---|---|---:|---:|",
    f"| gateway | broker paused (SIGSTOP) {stall_rss['stall_seconds']} s, 3 s into a closed-loop run of "
    f"100-event batches ({stall['elapsed_s']:.0f} s, {stall['connections']} connections) "
    f"| answers by status {json.dumps(stall['status'])}, latency max {ms(stall['latency_ms']['max'])} ms | {mib(stall_rss['gateway_peak_rss_kb'])} "
    f"| {mib(gw_rss['gateway_peak_rss_kb'])} |",
    f"| gateway | {slow_clients['clients']:,} connections declaring 1 MiB bodies and sending a byte a second "
    f"for {slow_clients['seconds']:.0f} s (`bench/slow_clients.py`), beside {num(slow_clients_run['target_rate'])} req/s "
    f"of normal single-event requests | normal requests: {json.dumps(slow_clients_run['status'])}, latency p99 "
    f"{ms(slow_clients_run['latency_ms']['p99'])} ms; slow ones answered and closed: {slow_clients['answered']:,} "
    f"| {mib(slow_clients['gateway_peak_rss_kb'])} | {mib(gw_rss['gateway_peak_rss_kb'])} |",
    f"| worker | every INSERT held back {slow['insert_delay_ms']} ms (`powehi-loadgen slow-proxy`) "
    f"for {slow['seconds']} s, draining the preloaded topic | {slow['stored']:,} rows stored "
    f"| {mib(slow['worker_peak_rss_kb'])} | {mib(workers[1]['peak_rss_kb'])} |",
    "",
]

lines += [
    "### Takeover, restart and reads at scale",
    "",
    f"A database already holding {takeover['rows']:,} rows (raw inserts as in the ClickHouse",
    "ceiling above, over 12 Kafka partitions). A worker that takes over all 12 partitions asks,",
    "per partition, which offsets past the committed one are stored and which itemIds fall in the",
    "dedup window (`powehi-loadgen takeover`: the worker's own calls, in turn). Beside it, the",
    "same questions asked of `events`/`rejected_events`, as before `stored_positions` existed.",
    "",
    "| measure | value |",
    "|---|---:|",
    f"| takeover queries, all 12 partitions | {takeover['seconds_all_partitions']:.3f} s |",
    f"| slowest partition | {takeover['slowest_partition_s']:.3f} s |",
    f"| the same questions without a position key (before) | {takeover['unkeyed_seconds_all_partitions']:.3f} s |",
    f"| `event-worker rebuild-profiles` over those rows | {reads['rebuild_profiles_s']:.2f} s |",
    f"| event-log page (`GET …/events?limit=100`, newest first; median of 5) | {reads['event_log_page_s'] * 1000:.0f} ms |",
    f"| profile read (`GET /v1/profiles/…`, {reads['profile_events']:,} events; median of 5) | {reads['profile_read_s'] * 1000:.0f} ms |",
    f"| restart after kill -9 to partitions owned, same worker name (static membership) | {restart['same_name_s']:.2f} s |",
    f"| the same under a new name (the group waits out the old session) | {restart['new_name_s']:.2f} s |",
    "",
]

half_p99s = ", ".join(ms(o["latency_ms"]["p99"]) for o in half_runs)
gateway_share = ratio(gateway[1]["requests_per_s"], baseline[1]["requests_per_s"])
targets = [
    ("gateway single-event req/s vs trivial handler", pct(gateway_share), "≥ 50%", gateway_share >= 0.5),
    ("gateway events/s (batch 100) vs raw librdkafka", pct(kafka_ratio), "≥ 60%", kafka_ratio >= 0.6),
    ("worker events/s (1 worker) vs raw ClickHouse rows/s", pct(ratio(workers[1]["events_per_s"], ch_rate)), "≥ 35%",
     ratio(workers[1]["events_per_s"], ch_rate) >= 0.35),
    ("worker events/s (2 workers) vs raw ClickHouse rows/s", pct(ratio(workers[2]["events_per_s"], ch_rate)), "≥ 35%",
     ratio(workers[2]["events_per_s"], ch_rate) >= 0.35),
    (f"gateway p99 ack latency at half of the gateway's max (open loop, no worker; median of "
     f"{len(half_runs)} runs: {half_p99s} ms)",
     f"{ms(half['latency_ms']['p99'])} ms", "≤ 10 ms", half["latency_ms"]["p99"] <= 10),
    ("freshness p99 at half of the gateway's max", f"{ms(fl['p99'])} ms", "≤ 2000 ms", fl["p99"] <= 2000),
    ("gateway p99 ack latency in that freshness run", f"{ms(ack['p99'])} ms", "≤ 10 ms", ack["p99"] <= 10),
    ("freshness p99 at half of the pipeline's max", f"{ms(pfl['p99'])} ms", "≤ 2000 ms", pfl["p99"] <= 2000),
    ("gateway p99 ack latency in that freshness run", f"{ms(pack['p99'])} ms", "≤ 10 ms", pack["p99"] <= 10),
    (f"takeover at {takeover['rows']:,} stored rows (issue 11)", f"{takeover['seconds_all_partitions']:.3f} s", "< 2 s",
     takeover["seconds_all_partitions"] < 2),
    ("restart after kill -9 to partitions owned (issue 11)", f"{restart['same_name_s']:.2f} s", "< 3 s",
     restart["same_name_s"] < 3),
]
lines += [
    "## Targets (issues 5 and 11)",
    "",
    "| target | measured | goal | met |",
    "|---|---:|---:|---|",
]
for name, measured, goal, met in targets:
    verdict = "not judged (smoke)" if SMOKE else ("yes" if met else "**no**")
    lines.append(f"| {name} | {measured} | {goal} | {verdict} |")

lines += [
    "",
    "What this machine allows: the floor (trivial handler + Kafka acknowledgement, above) next",
    "to the gateway, on the two measures of the targets it bounds.",
    "",
    "| measure | floor | gateway | goal |",
    "|---|---:|---:|---:|",
    f"| single-event req/s vs trivial handler | {pct(floor_share)} | {pct(gateway_share)} | ≥ 50% |",
    f"| p99 ack latency at half of the gateway's max (median of {len(floor_half_runs)}) "
    f"| {ms(floor_half['latency_ms']['p99'])} ms | {ms(half['latency_ms']['p99'])} ms | ≤ 10 ms |",
]

lines += [
    "",
    "## Commands",
    "",
    f"`bench/run.sh{' --smoke' if SMOKE else ''}` ran, in this order (binaries from",
    "`$CARGO_TARGET_DIR/release`, names with the run's random id):",
    "",
    "```sh",
    commands,
    "```",
    "",
    "The full report: `make bench` (Kafka and ClickHouse up, release build, then",
    "`bench/run.sh`). Sizes can be changed with the `BENCH_*` variables at the top of",
    "`bench/run.sh`.",
    "",
    "## Profiling",
    "",
    "Where the time went, what was changed, and the figures before and after:",
    "[bench/PROFILING.md](bench/PROFILING.md).",
    "",
]
Path(out).write_text("\n".join(lines))
