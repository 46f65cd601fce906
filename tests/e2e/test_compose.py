"""Static checks of the Docker deployment: docker-compose.yml, deploy/Dockerfile,
Prometheus and Grafana provisioning.

No Docker engine is needed: `docker-compose config` validates and resolves the
file offline. Skipped only when the docker-compose binary is absent.

Requires PyYAML (to read the resolved compose file and the provisioning files).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "deploy" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
PROMETHEUS_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA_DATASOURCE = REPO / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
GRAFANA_DASHBOARD_PROVIDER = REPO / "deploy" / "grafana" / "provisioning" / "dashboards" / "powehi.yml"
GRAFANA_DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "powehi.json"

EXPECTED_SERVICES = {
    "kafka",
    "kafka-init",
    "clickhouse",
    "ingest-gateway",
    "event-worker",
    "prometheus",
    "grafana",
}
# Services that run once and exit; every other service must have a healthcheck.
ONE_SHOT_SERVICES = {"kafka-init"}

RAW_TOPIC = "powehi.events.raw"
CONFIG_TOPIC = "powehi.config"

# Metric families the processes export (keep in sync with the code).
COUNTERS = {
    "powehi_gateway_http_requests_total",
    "powehi_gateway_events_total",
    "powehi_gateway_kafka_delivery_errors_total",
    "powehi_worker_rows_inserted_total",
    "powehi_worker_records_consumed_total",
    "powehi_worker_records_skipped_total",
    "powehi_worker_poison_records_total",
    "powehi_worker_clickhouse_errors_total",
}
GAUGES = {
    "powehi_worker_consumer_lag",
    "powehi_worker_paused",
    "powehi_worker_assigned_partitions",
}
HISTOGRAMS = {
    "powehi_gateway_request_duration_seconds",
    "powehi_worker_clickhouse_insert_duration_seconds",
}
# Series Prometheus itself attaches to every scrape.
SYNTHETIC = {"up"}
# Classic histograms exist only as their _bucket/_sum/_count series.
KNOWN_SERIES = (
    COUNTERS
    | GAUGES
    | SYNTHETIC
    | {h + suffix for h in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")}
)
# The dashboard must show at least these families.
DASHBOARD_MUST_SHOW = {
    "powehi_gateway_http_requests_total",
    "powehi_gateway_events_total",
    "powehi_gateway_request_duration_seconds",
    "powehi_gateway_kafka_delivery_errors_total",
    "powehi_worker_rows_inserted_total",
    "powehi_worker_clickhouse_insert_duration_seconds",
    "powehi_worker_consumer_lag",
    "powehi_worker_paused",
}


# --------------------------------------------------------------------------
# docker-compose helpers
# --------------------------------------------------------------------------


COMPOSE_ADMIN_TOKEN = "operator-chosen-secret"


@pytest.fixture(scope="module")
def compose(tmp_path_factory):
    """Run `docker-compose -f docker-compose.yml <args>` with the file's own
    defaults: no POWEHI_*/GRAFANA_*/COMPOSE_* overrides from the caller's
    environment and no .env file."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose binary not installed")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("POWEHI_", "GRAFANA_", "COMPOSE_", "DOCKER_"))
    }
    # The one setting without a default (see test_the_admin_token_is_required).
    env["POWEHI_ADMIN_TOKEN"] = COMPOSE_ADMIN_TOKEN
    empty_env_file = tmp_path_factory.mktemp("compose") / "empty.env"
    empty_env_file.write_text("")

    def run(*args: str, without: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
        return subprocess.run(
            [binary, "-f", str(COMPOSE_FILE), "--env-file", str(empty_env_file), *args],
            cwd=REPO,
            env={k: v for k, v in env.items() if k not in without},
            capture_output=True,
            text=True,
            timeout=120,
        )

    return run


@pytest.fixture(scope="module")
def config(compose) -> dict:
    result = compose("config")
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


@pytest.fixture(scope="module")
def services(config) -> dict:
    return config["services"]


def _published_host_port(entry) -> str | None:
    """Host side of a `ports` entry (short or long syntax), None if none."""
    if isinstance(entry, dict):
        published = entry.get("published")
        return None if published in (None, "") else str(published)
    spec = str(entry).split("/", 1)[0]
    parts = spec.rsplit(":", 2)
    if len(parts) == 1:
        return None  # container port only: Docker picks no fixed host port
    return parts[-2]


def _host_ip(entry) -> str | None:
    if isinstance(entry, dict):
        return entry.get("host_ip")
    parts = str(entry).split("/", 1)[0].rsplit(":", 2)
    return parts[0] if len(parts) == 3 else None


def _target_port(entry) -> int:
    if isinstance(entry, dict):
        return int(entry["target"])
    return int(str(entry).split("/", 1)[0].rsplit(":", 1)[-1])


def _command_text(service: dict) -> str:
    """The shell text a service runs, as the shell sees it (`$$` unescaped)."""
    parts = []
    for key in ("entrypoint", "command"):
        value = service.get(key)
        if value is None:
            continue
        parts.extend(value if isinstance(value, list) else [value])
    return "\n".join(str(p) for p in parts).replace("$$", "$")


def _bind_sources(service: dict) -> list[tuple[str, str]]:
    """(host path, container path) of the bind mounts of a service."""
    out = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                out.append((volume["source"], volume["target"]))
            continue
        source, _, rest = str(volume).partition(":")
        if source.startswith(("/", ".", "~")):
            out.append((source, rest.split(":", 1)[0]))
    return out


# --------------------------------------------------------------------------
# Compose file
# --------------------------------------------------------------------------


def test_compose_config_is_valid(compose):
    result = compose("config", "-q")
    assert result.returncode == 0, f"docker-compose config -q failed:\n{result.stderr}"


def test_expected_services_exist(compose, services):
    result = compose("config", "--services")
    assert result.returncode == 0, result.stderr
    listed = set(result.stdout.split())
    assert EXPECTED_SERVICES <= listed, f"missing services: {EXPECTED_SERVICES - listed}"
    assert EXPECTED_SERVICES <= set(services)


def test_event_worker_can_scale(services):
    worker = services["event-worker"]
    assert "container_name" not in worker, "a fixed container_name prevents --scale"
    fixed = [p for p in worker.get("ports", []) if _published_host_port(p) is not None]
    assert not fixed, f"a fixed host port prevents --scale: {fixed}"
    assert "hostname" not in worker, "replicas would share one hostname"


def test_pipeline_services_run_the_built_image(services):
    gateway, worker = services["ingest-gateway"], services["event-worker"]
    for name, svc in (("ingest-gateway", gateway), ("event-worker", worker)):
        build = svc.get("build")
        assert build, f"{name} must be built from deploy/Dockerfile"
        assert Path(build["context"]).resolve() == REPO, f"{name}: build context must be the repo root"
        assert (REPO / build["dockerfile"]).resolve() == DOCKERFILE.resolve()
    assert gateway["image"] == worker["image"], "gateway and worker share one image"
    assert gateway["command"] in (["ingest-gateway"], "ingest-gateway")
    assert worker["command"] in (["event-worker"], "event-worker")


def test_kafka_init_creates_both_topics(services):
    init = services["kafka-init"]
    assert init["image"] == services["kafka"]["image"], "use the broker image's own CLI"
    assert str(init.get("restart", "no")) in ("no", "False", "false"), "one-shot service must not restart"
    assert init["depends_on"]["kafka"]["condition"] == "service_healthy"

    script = _command_text(init)
    # Resolve the variables the script assigns itself (e.g. topics=..., bs=...).
    assigned = dict(re.findall(r"^\s*(\w+)=(\S+)\s*$", script, flags=re.M))
    for name, value in assigned.items():
        script = re.sub(r"\$\{?" + name + r"\b\}?", value, script)
    script = script.replace("\\\n", " ")

    created: dict[str, dict] = {}
    for line in script.splitlines():
        if "kafka-topics.sh" not in line or "--create" not in line:
            continue
        args = shlex.split(line, comments=True)
        topic, partitions, configs = None, None, {}
        for i, arg in enumerate(args):
            nxt = args[i + 1] if i + 1 < len(args) else None
            if arg == "--topic":
                topic = nxt
            elif arg == "--partitions":
                partitions = int(nxt)
            elif arg == "--config":
                key, _, value = nxt.partition("=")
                configs[key] = value
            elif arg.startswith("--topic="):
                topic = arg.split("=", 1)[1]
            elif arg.startswith("--partitions="):
                partitions = int(arg.split("=", 1)[1])
        assert "--bootstrap-server" in line and "kafka:9092" in line, line
        created[topic] = {"partitions": partitions, "configs": configs}

    assert RAW_TOPIC in created, f"kafka-init does not create {RAW_TOPIC}: {script}"
    assert CONFIG_TOPIC in created, f"kafka-init does not create {CONFIG_TOPIC}: {script}"
    assert created[RAW_TOPIC]["partitions"] == 12
    assert created[CONFIG_TOPIC]["partitions"] == 1
    assert created[CONFIG_TOPIC]["configs"].get("cleanup.policy") == "compact"


def test_startup_order(services):
    deps = {
        "ingest-gateway": {
            "kafka": "service_healthy",
            "kafka-init": "service_completed_successfully",
        },
        "event-worker": {
            "kafka": "service_healthy",
            "kafka-init": "service_completed_successfully",
            "clickhouse": "service_healthy",
        },
    }
    for name, expected in deps.items():
        got = services[name].get("depends_on", {})
        assert isinstance(got, dict), f"{name}: depends_on needs conditions"
        for dep, condition in expected.items():
            assert got.get(dep, {}).get("condition") == condition, (name, dep, got)


def test_long_running_services_have_healthchecks(services):
    for name, svc in services.items():
        if name in ONE_SHOT_SERVICES:
            continue
        check = svc.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        assert not check.get("disable"), f"{name}: healthcheck disabled"
        test = check.get("test")
        assert test and test != ["NONE"], f"{name}: empty healthcheck"
        assert svc.get("restart") in ("unless-stopped", "always", "on-failure"), (
            f"{name} should restart"
        )


def test_pipeline_healthchecks_probe_readiness(services):
    for name, port in (("ingest-gateway", 8080), ("event-worker", 9091)):
        test = services[name]["healthcheck"]["test"]
        text = " ".join(test) if isinstance(test, list) else test
        assert f":{port}/readyz" in text, f"{name} healthcheck must probe /readyz on {port}"
        tool = test[1] if isinstance(test, list) and test[0] == "CMD" else text.split()[1]
        runtime = DOCKERFILE.read_text().split("AS runtime", 1)[-1]
        assert re.search(rf"apt-get install[^\n]*\b{re.escape(tool)}\b", runtime), (
            f"{name} healthcheck runs {tool!r}, which the runtime image must install"
        )


def test_gateway_environment_and_ports(services):
    gateway = services["ingest-gateway"]
    env = gateway["environment"]
    assert env["POWEHI_KAFKA_BROKERS"] == "kafka:9092"
    assert env["POWEHI_RAW_TOPIC"] == RAW_TOPIC
    assert env["POWEHI_CONFIG_TOPIC"] == CONFIG_TOPIC
    assert env["POWEHI_HTTP_ADDR"].endswith(":8080")
    # A non-loopback admin listener requires a token.
    assert env["POWEHI_ADMIN_ADDR"] == "0.0.0.0:8081"
    assert env.get("POWEHI_ADMIN_TOKEN") == COMPOSE_ADMIN_TOKEN, "the admin token comes from the operator"
    assert env["POWEHI_BOOTSTRAP"] == "/etc/powehi/bootstrap.json"

    ports = {_target_port(p): p for p in gateway["ports"]}
    assert 8080 in ports and _published_host_port(ports[8080]) is not None
    assert 8081 in ports, "admin API must be reachable from the host"
    assert _host_ip(ports[8081]) == "127.0.0.1", "admin API must be published on loopback only"


def test_worker_environment(services):
    env = services["event-worker"]["environment"]
    assert env["POWEHI_KAFKA_BROKERS"] == "kafka:9092"
    assert env["POWEHI_RAW_TOPIC"] == RAW_TOPIC
    assert env["POWEHI_CONFIG_TOPIC"] == CONFIG_TOPIC
    assert env["POWEHI_CLICKHOUSE_URL"] == "http://clickhouse:8123"
    assert env["POWEHI_CLICKHOUSE_DATABASE"] == "powehi"
    assert env["POWEHI_WORKER_HTTP_ADDR"].endswith(":9091")
    ch_env = services["clickhouse"]["environment"]
    assert env["POWEHI_CLICKHOUSE_USER"] == ch_env["CLICKHOUSE_USER"]
    assert env["POWEHI_CLICKHOUSE_PASSWORD"] == ch_env["CLICKHOUSE_PASSWORD"]


def test_stateful_services_use_named_volumes(config, services):
    named = set(config.get("volumes") or {})
    for name, mount_point in (
        ("kafka", "/var/lib/kafka/data"),
        ("clickhouse", "/var/lib/clickhouse"),
    ):
        mounts = [str(v) for v in services[name].get("volumes", [])]
        assert any(
            m.split(":")[0] in named and m.split(":")[1] == mount_point for m in mounts
        ), f"{name} must keep {mount_point} on a named volume: {mounts}"
        if name == "kafka":
            assert services[name]["environment"]["KAFKA_LOG_DIRS"] == mount_point
    assert int(services["clickhouse"]["ulimits"]["nofile"]["soft"]) >= 262144


def test_images_are_pinned(services):
    for name, svc in services.items():
        image = svc.get("image", "")
        if "build" in svc:
            continue
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image ({image!r})"
    assert services["kafka"]["image"] == "apache/kafka:4.1.1"


# --------------------------------------------------------------------------
# Files the compose file and the Dockerfile reference
# --------------------------------------------------------------------------


def _dockerignore_patterns() -> list[str]:
    if not DOCKERIGNORE.exists():
        return []
    out = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line.rstrip("/"))
    return out


def _ignored(rel: str, patterns: list[str]) -> bool:
    """Approximation of .dockerignore matching (last matching pattern wins)."""
    candidates = [rel]
    parts = rel.split("/")
    candidates += ["/".join(parts[:i]) for i in range(1, len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.lstrip("/")
        if any(
            fnmatch.fnmatchcase(c, pat) or (pat.startswith("**/") and fnmatch.fnmatchcase(c, pat[3:]))
            for c in candidates
        ):
            ignored = not negate
    return ignored


def test_dockerfile_builds_both_binaries():
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM rust:\S*bookworm\S* AS builder", text, flags=re.M | re.I) or re.search(
        r"^FROM rust:\$\{RUST_VERSION\}-\$\{DEBIAN_RELEASE\} AS builder", text, flags=re.M
    )
    assert "cargo build --release --locked -p ingest-gateway -p event-worker" in text
    assert "--mount=type=cache" in text
    assert re.search(r"^USER (?!root|0\b)\S+", text, flags=re.M), "runtime must not run as root"
    for binary in ("ingest-gateway", "event-worker"):
        assert f"/out/{binary}" in text and "/usr/local/bin/" in text
        manifest = REPO / binary / "Cargo.toml"
        assert manifest.exists(), f"workspace crate {binary} missing"
        assert re.search(rf'^name\s*=\s*"{binary}"', manifest.read_text(), flags=re.M)
    assert "/etc/powehi/bootstrap.json" in text


def test_dockerfile_copy_sources_exist():
    patterns = _dockerignore_patterns()
    for line in DOCKERFILE.read_text().splitlines():
        line = line.strip()
        if not line.upper().startswith("COPY ") or "--from=" in line:
            continue
        args = [a for a in shlex.split(line)[1:] if not a.startswith("--")]
        for source in args[:-1]:
            if source == ".":
                continue
            path = REPO / source
            assert path.exists(), f"Dockerfile COPY source {source} does not exist"
            assert not _ignored(source, patterns), f"{source} is excluded by .dockerignore"
    assert _ignored("target", patterns) and _ignored(".git", patterns)
    assert not _ignored("Cargo.lock", patterns)


def test_bind_mounted_files_exist(services):
    for name, svc in services.items():
        for source, _target in _bind_sources(svc):
            path = (REPO / source).resolve() if not os.path.isabs(source) else Path(source)
            assert path.exists(), f"{name}: bind mount source {source} does not exist"
            assert REPO in path.parents or path == REPO, f"{name}: mount outside the repo: {source}"


def test_prometheus_scrapes_gateway_and_every_worker(services):
    mounts = dict(_bind_sources(services["prometheus"]))
    assert any(Path(s).resolve() == PROMETHEUS_CONFIG.resolve() for s in mounts)
    prom = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = {job["job_name"]: job for job in prom["scrape_configs"]}

    gateway = jobs["ingest-gateway"]
    assert gateway.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for sc in gateway.get("static_configs", []) for t in sc["targets"]]
    dns = [(n, sd.get("port")) for sd in gateway.get("dns_sd_configs", []) for n in sd["names"]]
    assert "ingest-gateway:8080" in targets or ("ingest-gateway", 8080) in dns

    worker = jobs["event-worker"]
    assert worker.get("metrics_path", "/metrics") == "/metrics"
    assert not worker.get("static_configs"), "static targets would miss scaled replicas"
    sds = worker["dns_sd_configs"]
    names = {n for sd in sds for n in sd["names"]}
    assert {"event-worker", "tasks.event-worker"} <= names
    for sd in sds:
        assert sd.get("type", "SRV") == "A" and sd.get("port") == 9091, sd


def test_grafana_provisioning(services):
    grafana = services["grafana"]
    mounts = {Path(s).resolve(): t for s, t in _bind_sources(grafana)}
    provisioning = (REPO / "deploy/grafana/provisioning").resolve()
    dashboards = (REPO / "deploy/grafana/dashboards").resolve()
    assert mounts.get(provisioning) == "/etc/grafana/provisioning"
    assert dashboards in mounts

    datasource_doc = yaml.safe_load(GRAFANA_DATASOURCE.read_text())
    (datasource,) = [d for d in datasource_doc["datasources"] if d["type"] == "prometheus"]
    assert datasource["url"] == "http://prometheus:9090"

    provider_doc = yaml.safe_load(GRAFANA_DASHBOARD_PROVIDER.read_text())
    paths = {p["options"]["path"] for p in provider_doc["providers"]}
    assert mounts[dashboards] in paths, "dashboard provider must read the mounted folder"

    dashboard = json.loads(GRAFANA_DASHBOARD.read_text())
    for panel in _panels(dashboard):
        for ds in [panel.get("datasource")] + [t.get("datasource") for t in panel.get("targets", [])]:
            if isinstance(ds, dict) and ds.get("uid"):
                assert ds["uid"] == datasource["uid"], f"panel {panel.get('title')!r}: unknown datasource"


# --------------------------------------------------------------------------
# Dashboard
# --------------------------------------------------------------------------

PROMQL_FUNCTIONS = {
    "abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh",
    "avg_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "cos", "cosh",
    "count_over_time", "day_of_month", "day_of_week", "day_of_year", "days_in_month", "deg",
    "delta", "deriv", "exp", "floor", "histogram_avg", "histogram_count", "histogram_fraction",
    "histogram_quantile", "histogram_stddev", "histogram_stdvar", "histogram_sum", "holt_winters",
    "double_exponential_smoothing", "hour", "idelta", "increase", "irate", "label_join",
    "label_replace", "last_over_time", "ln", "log10", "log2", "mad_over_time", "max_over_time",
    "min_over_time", "minute", "month", "pi", "predict_linear", "present_over_time",
    "quantile_over_time", "rad", "rate", "resets", "round", "scalar", "sgn", "sin", "sinh", "sort",
    "sort_by_label", "sort_by_label_desc", "sort_desc", "sqrt", "stddev_over_time",
    "stdvar_over_time", "sum_over_time", "tan", "tanh", "time", "timestamp", "vector", "year",
}
PROMQL_AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk",
    "topk", "quantile", "limitk", "limit_ratio",
}
PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                   "and", "or", "unless", "offset", "inf", "nan", "atan2"}


def promql_series_names(expr: str) -> set[str]:
    """Metric names an expression selects (best effort, enough for dashboards)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)  # strings
    s = re.sub(r"\$\{[^}]*\}|\$\w+", "", s)  # Grafana variables
    s = re.sub(r"\{[^{}]*\}", "", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", "", s)  # ranges and subqueries
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"\boffset\s+-?\w+", " ", s)
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][\w:]*", s):
        token = match.group(0)
        following = s[match.end():].lstrip()
        if token.lower() in PROMQL_KEYWORDS or token in PROMQL_AGGREGATIONS:
            continue
        if token in PROMQL_FUNCTIONS and following.startswith("("):
            continue
        names.add(token)
    return names


def test_promql_extraction_helper():
    expr = (
        'histogram_quantile(0.99, sum by (le, route) (rate(foo_bucket{route=~"/smile|x"}'
        "[$__rate_interval]))) / ignoring(a) group_left bar offset 5m or vector(0)"
    )
    assert promql_series_names(expr) == {"foo_bucket", "bar"}
    assert promql_series_names('sum(up{job="event-worker"})') == {"up"}


def _panels(dashboard: dict) -> list[dict]:
    out = []
    for panel in dashboard.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows
    return out


def test_dashboard_uses_only_known_metrics():
    dashboard = json.loads(GRAFANA_DASHBOARD.read_text())
    assert dashboard.get("uid") and dashboard.get("title")
    panels = [p for p in _panels(dashboard) if p.get("type") != "row"]
    assert panels, "dashboard has no panels"
    ids = [p["id"] for p in _panels(dashboard)]
    assert len(ids) == len(set(ids)), "duplicate panel ids"

    used: set[str] = set()
    for panel in panels:
        targets = panel.get("targets", [])
        assert targets, f"panel {panel.get('title')!r} has no query"
        for target in targets:
            expr = target.get("expr", "")
            assert expr.strip(), f"panel {panel.get('title')!r}: empty expression"
            assert expr.count("(") == expr.count(")"), f"unbalanced parentheses: {expr}"
            names = promql_series_names(expr)
            assert names, f"panel {panel.get('title')!r}: no metric in {expr!r}"
            unknown = names - KNOWN_SERIES
            assert not unknown, f"panel {panel.get('title')!r} uses unknown series {unknown}: {expr}"
            used |= names

    families = {n for n in used if n in COUNTERS | GAUGES} | {
        h for h in HISTOGRAMS if any(n.startswith(h + "_") for n in used)
    }
    missing = DASHBOARD_MUST_SHOW - families
    assert not missing, f"dashboard does not show {missing}"


def test_the_admin_token_is_required(compose):
    """The admin API listens on the Docker network, where every container reaches it: the file
    has no default token, so `up` without POWEHI_ADMIN_TOKEN fails and says what to set, rather
    than exposing the admin API with the well-known demo token."""
    result = compose("config", "-q", without=("POWEHI_ADMIN_TOKEN",))
    assert result.returncode != 0, "compose accepted a stack without an admin token"
    assert "POWEHI_ADMIN_TOKEN" in result.stderr, result.stderr
    assert "demo-admin-token" not in (REPO / "docker-compose.yml").read_text()
