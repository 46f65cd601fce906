"""Issue 14, points 2-3: the OpenAPI documents are the contract of both listeners.

- Schemathesis (pinned in tests/requirements.txt) loads each listener's `/openapi.json` from a
  running gateway (with a worker, on the real Kafka and ClickHouse) and sends what the
  document describes, valid and invalid, a bounded number of examples per operation, then
  stateful sequences along the admin document's links (create a data source, then get,
  disable, rotate and revoke its keys; put a schema, then get and validate against it).
  Every answer must be documented: no 5xx, a documented status, the documented content type,
  headers and body schema, and 401 without credentials where the document asks for them.
- Every curl example of the README that targets the gateway validates against the document of
  the listener it names: its path and method exist, its query parameters and JSON body match
  the documented schemas, and the answer the README shows matches the documented response.

Which routes exist and which the documents list is held equal by the gateway's unit tests
(ingest-gateway/src/openapi.rs), from the route table the listeners are built from.

Run: /var/cache/powehi/venv/bin/python -m pytest tests/e2e/test_contract.py -x -q
"""

from __future__ import annotations

import base64
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import jsonschema
import pytest
import referencing
import requests
from openapi_spec_validator import validate as validate_openapi
from referencing.jsonschema import DRAFT202012

from e2e_support import REPO, VIEW_SCHEMA, Creds, data_source, event, post

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
SPECS = REPO / "ingest-gateway" / "openapi"
README = REPO / "README.md"
ADMIN_TOKEN = "contract-admin-token"

#: Examples per operation and phase: enough to reach every documented status of most
#: operations, few enough that both runs take about a minute each on 2 cores.
MAX_EXAMPLES = 30

#: What every answer is held to. Left out: `positive_data_acceptance` (a schema-valid event
#: whose scope is not the caller's id is refused by design, with a documented 400; a random
#: event-log cursor is refused `invalid_cursor`) and `missing_required_header` (no operation
#: has a required header).
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "ignored_auth",
    "unsupported_method",
    "allow_header_conformance",
    "use_after_free",
    "ensure_resource_availability",
]

#: The admin API refuses every request its document does not allow. The public one cannot be
#: held to that: an invalid event among valid ones is refused alone inside a 200, as the
#: reference document's batches require.
ADMIN_CHECKS = CHECKS + ["negative_data_rejection"]


def run_schemathesis(
    url: str,
    auth: dict[str, dict[str, str]],
    tmp_path: Path,
    name: str,
    operation_parameters: dict[str, dict[str, str]] | None = None,
    checks: list[str] = CHECKS,
) -> None:
    """Runs schemathesis against the document at `url`, with `auth` per security scheme of
    the document and fixed path or query values per operation id (`{"getProfile":
    {"path.profileId": "…"}}`, so an operation reaches data that exists); fails the test with
    schemathesis's report when any check failed."""
    # No cache of replayed requests between runs: each run stands alone.
    lines = ["[cache]", "enabled = false"]
    # No links inferred from Location headers (the documents declare theirs): that inference also
    # scans every 2xx body for URLs, and schemathesis 4.32 crashes ("Invalid IPv6 URL", from
    # urlsplit) on an echoed string such as a data source named "http://[".
    lines += ["[phases.stateful.inference]", 'algorithms = ["dependency-analysis"]']
    for scheme, values in auth.items():
        lines.append(f"[auth.openapi.{scheme}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    for operation_id, parameters in (operation_parameters or {}).items():
        lines += ["[[operations]]", f"include-operation-id = {json.dumps(operation_id)}"]
        lines.append("parameters = { " + ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in parameters.items()) + " }")
    config = tmp_path / f"schemathesis-{name}.toml"
    config.write_text("\n".join(lines) + "\n")
    report_dir = tmp_path / f"schemathesis-{name}-report"
    args = [
        str(SCHEMATHESIS), "--config-file", str(config), "run", url,
        "--checks", ",".join(checks),
        "--max-examples", str(MAX_EXAMPLES),
        "--phases", "examples,coverage,fuzzing,stateful",
        "--seed", "14",
        # One worker: hypothesis describes strategies with ast.parse, which is not
        # thread-safe on CPython 3.11 (a spurious "AST constructor recursion depth mismatch").
        "--workers", "1",
        "--request-timeout", "15",
        "--generation-database", "none",
        "--suppress-health-check", "all",
        "--report", "junit", "--report-dir", str(report_dir),
        "--no-color",
    ]
    result = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path)
    output = result.stdout + result.stderr
    (tmp_path / f"schemathesis-{name}.log").write_text(output)
    assert result.returncode == 0, f"schemathesis found answers outside the {name} contract:\n{output[-20000:]}"
    # Every operation was reached (a document schemathesis cannot read is no pass).
    selected = re.search(r"Selected: (\d+)/(\d+)", output)
    tested = re.search(r"Tested: (\d+)", output)
    assert selected and tested and tested.group(1) == selected.group(2) != "0", output[-5000:]


#: The data source of the documents' examples (the reference request's `demo`), in the
#: test's own config log.
DEMO = Creds("demo", "demo-write-key")
PROFILE = "contract-profile"


@pytest.fixture
def contract_gateway(start_gateway, start_worker, store):
    """A gateway with the data source `demo` (rate-limited, so 429 is reachable) and the
    schema `view`, and a worker, so /context and the event log read real tables; the log of
    `demo` holds an accepted event of the profile PROFILE and a rejected one."""
    bootstrap = {
        "dataSources": [data_source(DEMO.client_id, [DEMO.token], maxEventsPerSecond=2000)],
        "eventSchemas": [VIEW_SCHEMA],
    }
    gateway = start_gateway(bootstrap=bootstrap, POWEHI_ADMIN_TOKEN=ADMIN_TOKEN)
    start_worker()
    accepted = event(DEMO.client_id, profileId=PROFILE)
    rejected = event(DEMO.client_id, eventType="unregistered")
    resp = post(gateway, {"events": [accepted, rejected]})
    assert resp.status_code == 200, resp.text
    store.wait_for_ids({accepted["itemId"]}, timeout=60)
    store.wait_for_ids({rejected["itemId"]}, timeout=60, table="rejected_events")
    return gateway


def test_the_public_api_answers_as_its_document_says(contract_gateway, tmp_path):
    gateway = contract_gateway
    run_schemathesis(
        gateway.url("/openapi.json"),
        {
            "clientId": {"api_key": DEMO.client_id},
            "accessToken": {"api_key": DEMO.token},
            "clientIdQuery": {"api_key": DEMO.client_id},
            "writeKeyQuery": {"api_key": DEMO.token},
            "segmentWriteKey": {"username": DEMO.token, "password": ""},
        },
        tmp_path,
        "public",
    )
    assert gateway.alive(), gateway.tail()


def test_the_admin_api_answers_as_its_document_says(contract_gateway, tmp_path):
    gateway = contract_gateway
    admin = gateway.env["POWEHI_ADMIN_ADDR"]
    # A console session too, so the session routes are reached signed in (the /v1 routes list
    # the bearer token first, so schemathesis sends that there).
    session = requests.post(f"http://{admin}/console/session", json={"token": ADMIN_TOKEN}, timeout=10)
    assert session.status_code == 201, session.text
    run_schemathesis(
        f"http://{admin}/openapi.json",
        {
            "adminToken": {"bearer": ADMIN_TOKEN},
            "consoleSession": {"api_key": session.cookies["powehi_console"]},
            "consoleCsrf": {"api_key": session.json()["csrfToken"]},
        },
        tmp_path,
        "admin",
        operation_parameters={
            "getProfile": {"path.profileId": PROFILE},
            "listEvents": {"path.id": DEMO.client_id},
        },
        checks=ADMIN_CHECKS,
    )
    assert gateway.alive(), gateway.tail()


def _operations(document: dict) -> set[tuple[str, str]]:
    methods = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
    return {(m.upper(), p) for p, item in document["paths"].items() for m in item if m in methods}


def test_each_listener_serves_its_document_for_its_own_prefix(start_gateway, tmp_path):
    """The served public document lists the ingest routes under the configured prefix (and no
    /metrics when it is off the public listener), every one of them answers as routed (no 404),
    and the admin listener serves admin.json as written."""
    gateway = start_gateway(POWEHI_PATH_PREFIX="/collect/", POWEHI_PUBLIC_METRICS="false")
    served = requests.get(gateway.url("/openapi.json"), timeout=10)
    assert served.status_code == 200 and served.headers["Content-Type"] == "application/json", served.text[:300]
    document = served.json()
    validate_openapi(document)
    written = _spec("public.json")
    expected = set()
    for method, path in _operations(written):
        if path == "/metrics":
            continue
        expected.add((method, path.replace("/powehi/", "/collect/", 1) if path.startswith("/powehi/") else path))
    assert _operations(document) == expected
    assert document["components"] == written["components"]
    # Every documented path is routed: an empty request is refused by its handler or the
    # route's own checks, never with not_found (what the listener answers off its routes).
    for method, path in sorted(_operations(document)):
        resp = requests.request(method, gateway.url(path), timeout=10)
        assert resp.status_code != 404, f"{method} {path}: {resp.status_code} {resp.text[:200]}"
    assert requests.get(gateway.url("/metrics"), timeout=10).status_code == 404
    assert requests.post(gateway.url("/powehi/smile"), timeout=10).status_code == 404
    admin = requests.get(f"http://{gateway.env['POWEHI_ADMIN_ADDR']}/openapi.json", timeout=10)
    assert admin.status_code == 200 and admin.json() == _spec("admin.json")


def assert_documented(spec: dict, method: str, template: str, resp: requests.Response) -> None:
    """`resp` to `method template` has a status the document lists for that operation, and
    the documented content type, required headers and body schema."""
    what = f"{method} {template} -> {resp.status_code} {resp.text[:300]}"
    responses = spec["paths"][template][method.lower()]["responses"]
    assert str(resp.status_code) in responses, f"undocumented status: {what}"
    documented = _deref(spec, responses[str(resp.status_code)])
    for name, header in documented.get("headers", {}).items():
        if _deref(spec, header).get("required"):
            assert name in resp.headers, f"no {name} header: {what}"
    contents = documented.get("content", {})
    if contents:
        # One of the documented media types (a console file may be any of several).
        media = resp.headers.get("Content-Type", "").split(";")[0].strip()
        assert media in contents, f"Content-Type {media!r} not among {list(contents)}: {what}"
        if media == "application/json":
            errors = [e.message for e in _validator(spec, contents[media]["schema"]).iter_errors(resp.json())]
            assert not errors, f"{errors}: {what}"


def test_what_schemathesis_cannot_generate_is_answered_as_documented(contract_gateway):
    """Oversized bodies, too many events, other media types and encodings, a repeated query
    parameter, a protocol upgrade, Segment's size limit, console writes without their CSRF
    token, an unchanged console file: each answered with a documented status and body."""
    gateway = contract_gateway
    public, admin = _spec("public.json"), _spec("admin.json")
    admin_url = f"http://{gateway.env['POWEHI_ADMIN_ADDR']}"
    bearer = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
    creds = {"X-Client-ID": DEMO.client_id, "X-Client-Access-Token": DEMO.token}
    big = json.dumps({"name": "x" * (300 * 1024)})
    for path, template, method in [
        ("/v1/datasources", "/v1/datasources", "POST"),
        ("/v1/schemas/view", "/v1/schemas/{eventType}", "PUT"),
        ("/v1/schemas/view/validate", "/v1/schemas/{eventType}/validate", "POST"),
        (f"/v1/datasources/{DEMO.client_id}/allowed-origins", "/v1/datasources/{id}/allowed-origins", "PUT"),
    ]:
        resp = requests.request(method, admin_url + path, data=big, headers=bearer, timeout=30)
        assert resp.status_code == 413, resp.text[:300]
        assert_documented(admin, method, template, resp)
    many = {"events": [event(DEMO.client_id) for _ in range(1001)]}
    probes = [
        ("/powehi/smile", {**creds, "Content-Type": "application/json"}, json.dumps(many), 413),
        ("/powehi/smile", {**creds, "Content-Type": "application/json"}, "x" * (2 * 1024 * 1024), 413),
        ("/smile", {**creds, "Content-Type": "application/xml"}, "<events/>", 415),
        ("/smile", {**creds, "Content-Encoding": "br"}, "{}", 415),
        ("/smile", {**creds, "Content-Encoding": "gzip"}, "not gzip", 400),
        ("/smile", {**creds, "Upgrade": "websocket", "Connection": "Upgrade"}, "{}", 400),
        ("/v1/track", {"Authorization": "Basic !!!"}, "{}", 401),
        ("/v1/batch", {"Authorization": "Basic " + base64.b64encode(f"{DEMO.token}:".encode()).decode()},
         json.dumps({"batch": []}), 400),
    ]
    for path, headers, body, status in probes:
        resp = requests.post(gateway.url(path), data=body, headers=headers, timeout=30)
        assert resp.status_code == status, f"{path} {headers}: {resp.status_code} {resp.text[:300]}"
        assert_documented(public, "POST", path, resp)
    resp = requests.post(gateway.url("/context?sessionId=a&sessionId=b"), headers=creds, timeout=30)
    assert resp.status_code == 400, resp.text
    assert_documented(public, "POST", "/context", resp)
    # A Segment batch over Segment's 500 KB: 400 batch_too_large, as Segment answers it.
    segment_auth = {"Authorization": "Basic " + base64.b64encode(f"{DEMO.token}:".encode()).decode()}
    resp = requests.post(gateway.url("/v1/batch"), data=json.dumps({"batch": [], "pad": "x" * 600_000}),
                         headers={**segment_auth, "Content-Type": "application/json"}, timeout=30)
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "batch_too_large", resp.text[:300]
    assert_documented(public, "POST", "/v1/batch", resp)
    # The console: a sign-in body over 4 KiB; writes with the session cookie but without (or with
    # another) CSRF token, on /v1 and on sign-out; a console file unchanged since its ETag.
    resp = requests.post(f"{admin_url}/console/session", json={"token": "x" * 5000}, timeout=30)
    assert resp.status_code == 413, resp.text[:300]
    assert_documented(admin, "POST", "/console/session", resp)
    signed_in = requests.Session()
    resp = signed_in.post(f"{admin_url}/console/session", json={"token": ADMIN_TOKEN}, timeout=30)
    assert resp.status_code == 201, resp.text
    assert_documented(admin, "POST", "/console/session", resp)
    resp = signed_in.get(f"{admin_url}/console/session", timeout=30)
    assert_documented(admin, "GET", "/console/session", resp)
    assert resp.status_code == 200, resp.text
    for headers, code in [({}, "csrf_token_missing"), ({"X-CSRF-Token": "csrf_guess"}, "csrf_token_invalid")]:
        for method, path, template, body in [
            ("PUT", f"/v1/datasources/{DEMO.client_id}/policy", "/v1/datasources/{id}/policy", {"unplannedEvents": "accept"}),
            ("POST", "/v1/profiles/nobody/erasure", "/v1/profiles/{profileId}/erasure", {"mode": "suppress"}),
            ("DELETE", "/console/session", "/console/session", None),
        ]:
            resp = signed_in.request(method, admin_url + path, json=body, headers=headers, timeout=30)
            assert resp.status_code == 403 and resp.json()["error"]["code"] == code, f"{method} {path}: {resp.text}"
            assert_documented(admin, method, template, resp)
    resp = signed_in.get(f"{admin_url}/v1/datasources/{DEMO.client_id}", timeout=30)
    assert resp.status_code == 200, resp.text
    assert_documented(admin, "GET", "/v1/datasources/{id}", resp)
    csrf = signed_in.get(f"{admin_url}/console/session", timeout=30).json()["csrfToken"]
    resp = signed_in.delete(f"{admin_url}/console/session", headers={"X-CSRF-Token": csrf}, timeout=30)
    assert resp.status_code == 204, resp.text
    assert_documented(admin, "DELETE", "/console/session", resp)
    resp = signed_in.get(f"{admin_url}/console/session", timeout=30)
    assert resp.status_code == 401, resp.text
    assert_documented(admin, "GET", "/console/session", resp)
    first = requests.get(f"{admin_url}/console/app.js", timeout=30)
    assert_documented(admin, "GET", "/console/{file}", first)
    resp = requests.get(f"{admin_url}/console/app.js", headers={"If-None-Match": first.headers["ETag"]}, timeout=30)
    assert resp.status_code == 304, resp.status_code
    assert_documented(admin, "GET", "/console/{file}", resp)


def test_both_documents_are_valid_openapi_3_1():
    for name in ("public.json", "admin.json"):
        document = _spec(name)
        assert document["openapi"] == "3.1.0", name
        validate_openapi(document)


# --------------------------------------------------------------------------- README examples


def _spec(name: str) -> dict:
    return json.loads((SPECS / name).read_text())


def _validator(spec: dict, schema: dict) -> jsonschema.Draft202012Validator:
    """A validator of `schema` whose `#/components/...` refs resolve in `spec`."""
    uri = "urn:powehi:openapi"
    registry = referencing.Registry().with_resource(uri, DRAFT202012.create_resource(spec))
    return jsonschema.Draft202012Validator(
        _rebase(schema, uri),
        registry=registry,
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )


def _rebase(schema, uri: str):
    """`schema` with its local refs made absolute into the document at `uri`."""
    if isinstance(schema, dict):
        return {
            k: (f"{uri}{v}" if k == "$ref" and isinstance(v, str) and v.startswith("#") else _rebase(v, uri))
            for k, v in schema.items()
        }
    if isinstance(schema, list):
        return [_rebase(v, uri) for v in schema]
    return schema


def _deref(spec: dict, node):
    """`node`, or what its `$ref` (into `spec`) names."""
    while isinstance(node, dict) and "$ref" in node:
        target = spec
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def _presents(scheme: dict, headers: dict[str, str], query: dict[str, str]) -> bool:
    """Whether a request with `headers` (names lower-case) and `query` carries `scheme`."""
    if scheme["type"] == "apiKey":
        if scheme["in"] == "cookie":
            return f"{scheme['name']}=" in headers.get("cookie", "")
        return scheme["name"].lower() in headers if scheme["in"] == "header" else scheme["name"] in query
    authorization = headers.get("authorization", "").lower()
    return authorization.startswith(scheme["scheme"].lower() + " ")


def _template_match(template: str, path: str) -> bool:
    pattern = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$"
    return re.match(pattern, path) is not None


def _unclosed(command: str) -> bool:
    try:
        shlex.split(command)
    except ValueError:
        return True
    return False


def _curl_examples(text: str) -> list[dict]:
    """Each curl command of the README's sh blocks: its URL, method, headers, body, and the
    answer the README shows right after it (`# {...}` lines), with `NAME='value'` variables of
    the block substituted."""
    examples = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        variables: dict[str, str] = {}
        lines = block.replace("\\\n", " ").splitlines()
        i = -1
        while i + 1 < len(lines):
            i += 1
            line = lines[i]
            assignment = re.match(r"^([A-Z_]+)=('[^']*'|\"[^\"]*\")\s*$", line.strip())
            if assignment:
                variables[assignment.group(1)] = assignment.group(2)[1:-1]
                continue
            if not line.strip().startswith("curl "):
                continue
            # A quoted body may span lines: the command goes on until its quotes close.
            while _unclosed(line) and i + 1 < len(lines):
                i += 1
                line += "\n" + lines[i]
            for name, value in variables.items():
                line = line.replace(f'"${name}"', shlex.quote(value)).replace(f"${name}", value)
            # The command ends at a pipe or a list operator.
            lexer = shlex.shlex(line, posix=True, punctuation_chars="|;&")
            lexer.whitespace_split = True
            words = []
            for word in lexer:
                if word and set(word) <= set("|;&"):
                    break
                words.append(word)
            example = {"method": None, "headers": {}, "body": None, "line": line.strip().splitlines()[0], "answer": None}
            rest = iter(words[1:])
            for word in rest:
                if word == "-X":
                    example["method"] = next(rest)
                elif word == "-H":
                    name, _, value = next(rest).partition(":")
                    example["headers"][name.strip().lower()] = value.strip()
                elif word in ("-d", "--data"):
                    example["body"] = next(rest)
                elif not word.startswith("-"):
                    example["url"] = word if "://" in word else f"http://{word}"
            example["method"] = example["method"] or ("POST" if example["body"] is not None else "GET")
            answer = []
            for follow in lines[i + 1:]:
                if not follow.startswith("# "):
                    break
                answer.append(follow[2:].strip())
            if answer:
                try:
                    example["answer"] = json.loads(" ".join(answer))
                except ValueError:
                    pass  # a tab-separated ClickHouse answer, not JSON
            examples.append(example)
    return examples


def test_every_readme_example_validates_against_the_documents():
    specs = {"8080": _spec("public.json"), "8081": _spec("admin.json")}
    examples = [e for e in _curl_examples(README.read_text()) if urlsplit(e["url"]).port in (8080, 8081)]
    # The reference request, /context, and the admin examples at least: a README whose
    # examples this parser no longer finds must fail here, not pass empty.
    assert len(examples) >= 5, [e["line"] for e in _curl_examples(README.read_text())]
    problems = []
    for example in examples:
        url = urlsplit(example["url"])
        spec = specs[str(url.port)]
        templates = [t for t in spec["paths"] if _template_match(t, url.path)]
        if not templates:
            problems.append(f"{example['line']}: no path of the document matches {url.path}")
            continue
        item = spec["paths"][templates[0]]
        operation = item.get(example["method"].lower())
        if operation is None:
            problems.append(f"{example['line']}: {example['method']} {templates[0]} is not documented")
            continue
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        requirements = operation.get("security", spec.get("security", []))
        schemes = spec.get("components", {}).get("securitySchemes", {})
        if requirements and not any(
            all(_presents(schemes[name], example["headers"], query) for name in requirement)
            for requirement in requirements
        ):
            problems.append(f"{example['line']}: carries none of the documented credentials {requirements}")
        key_params = {s["name"] for s in schemes.values() if s["type"] == "apiKey" and s["in"] == "query"}
        parameters = [_deref(spec, p) for p in item.get("parameters", []) + operation.get("parameters", [])]
        query_params = {p["name"]: p for p in parameters if p["in"] == "query"}
        for name, value in query.items():
            if name in key_params:
                continue
            if name not in query_params:
                problems.append(f"{example['line']}: query parameter {name} is not documented")
                continue
            schema = query_params[name]["schema"]
            typed = int(value) if schema.get("type") == "integer" and value.isdigit() else value
            for error in _validator(spec, schema).iter_errors(typed):
                problems.append(f"{example['line']}: ?{name}={value}: {error.message}")
        if example["body"]:
            content = _deref(spec, operation.get("requestBody", {})).get("content", {})
            if "application/json" not in content:
                problems.append(f"{example['line']}: the document takes no JSON body here")
            else:
                body = json.loads(example["body"])
                for error in _validator(spec, content["application/json"]["schema"]).iter_errors(body):
                    problems.append(f"{example['line']}: body at {list(error.absolute_path)}: {error.message}")
        if example["answer"] is not None:
            documented = [
                _deref(spec, response) for status, response in operation["responses"].items() if status.startswith("2")
            ]
            schemas = [r["content"]["application/json"]["schema"] for r in documented if "content" in r]
            if not any(_validator(spec, s).is_valid(example["answer"]) for s in schemas):
                problems.append(f"{example['line']}: the answer the README shows fits no documented 2xx answer")
    assert not problems, "\n".join(problems)


def test_every_example_in_the_documents_validates_against_its_schema():
    problems = []
    count = 0
    for name in ("public.json", "admin.json"):
        spec = _spec(name)
        for path, item in spec["paths"].items():
            for method, operation in item.items():
                if not isinstance(operation, dict) or "requestBody" not in operation:
                    continue
                for media in _deref(spec, operation["requestBody"])["content"].values():
                    for example_name, example in media.get("examples", {}).items():
                        count += 1
                        for error in _validator(spec, media["schema"]).iter_errors(example["value"]):
                            problems.append(f"{name} {method} {path} example {example_name}: {error.message}")
    assert count >= 8, count
    assert not problems, "\n".join(problems)
