"""Event schemas and validation (issue 3): schema versions through the admin API, checked
definitions, the validate endpoint, and the worker rejecting each kind of invalid event with
machine-readable reasons (visible in rejected_events, the event_log view and the event-log
endpoint) while trimming valid events to their declared properties and recording the schema
version they were checked against."""

from __future__ import annotations

import copy
import json
import time
import uuid

from admin_support import (  # noqa: F401 - fixtures
    PROPAGATION_S,
    admin_stack,
    as_json,
    bootstrap_with,
    config_topic,
    reason_pairs,
    seg,
    start_assigned_worker,
)
from e2e_support import assert_error, ch_scalar, event, post, sql_str, wait_until

PURCHASE = {
    "properties": [
        {"name": "sku", "type": "string", "required": True, "profileProperty": "lastSku"},
        {"name": "qty", "type": "integer", "required": True},
    ],
    "sourceRequired": True,
    "targetRequired": True,
}

TYPED = {
    "properties": [
        {"name": "s", "type": "string"},
        {"name": "i", "type": "integer"},
        {"name": "n", "type": "number"},
        {"name": "b", "type": "boolean"},
        {"name": "d", "type": "datetime"},
        {"name": "o", "type": "object"},
        {"name": "a", "type": "array"},
    ],
    "sourceRequired": False,
    "targetRequired": False,
}

GOOD_VALUES = {
    "s": ["x", ""],
    "i": [3, -7, 0],
    "n": [2.5, 3, -0.125],
    "b": [True, False],
    "d": ["2021-10-15T18:49:00+07:00", "2021-10-15T11:49:00.123Z"],
    "o": [{"k": 1}, {}],
    "a": [[1, "a"], []],
}
BAD_VALUES = {
    "s": [5, True, ["x"], {"x": 1}],
    "i": [2.5, "3", True],
    "n": ["2.5", True, [1]],
    "b": ["true", 1],
    "d": ["later", "15/10/2021", 1634300000, "2021-13-45T99:00:00Z"],
    "o": [[], "x", 1],
    "a": [{}, "x", 1],
}


def spec(event_type: str, definition: dict) -> dict:
    """The bootstrap-file form of a schema."""
    return {"eventType": event_type, **copy.deepcopy(definition)}


def norm_props(props: list) -> list:
    return [
        (p["name"], p["type"], bool(p.get("required", False)), p.get("profileProperty")) for p in props
    ]


def assert_schema_view(body: dict, event_type: str, version: int, definition: dict) -> None:
    assert body.get("eventType") == event_type, body
    assert body.get("version") == version, body
    assert norm_props(body.get("properties", [])) == norm_props(definition["properties"]), body
    assert bool(body.get("sourceRequired", False)) == definition.get("sourceRequired", False), body
    assert bool(body.get("targetRequired", False)) == definition.get("targetRequired", False), body


def purchase_event(scope: str, *, drop: tuple = (), **fields) -> dict:
    props = fields.pop("properties", {"sku": "A1", "qty": 2})
    return event(scope, eventType="purchase", properties=props, drop=drop, **fields)


def answer(validated: dict) -> dict:
    """The four fields the validate endpoint must answer."""
    return {k: validated[k] for k in ("valid", "schemaVersion", "reasons", "properties")}


def compact(text: str) -> bool:
    return text == json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)


def wait_worker_applied(worker, before: float, what: str) -> float:
    """Seconds until the worker's powehi_worker_config_records_total exceeds `before`."""
    t0 = time.monotonic()
    wait_until(
        lambda: (worker.metric("powehi_worker_config_records_total") or 0) > before,
        PROPAGATION_S,
        interval=0.05,
        what=f"the running worker to apply {what} (powehi_worker_config_records_total > {before})",
    )
    return time.monotonic() - t0


# --------------------------------------------------------------------------- versions


def test_schema_put_creates_versions_and_get_returns_latest_or_a_given_version(names, admin_stack):
    stack = admin_stack(gateways=2, workers=0)
    admin, admin_b = stack.admins

    resp = admin.put("/v1/schemas/purchase", PURCHASE)
    assert resp.status_code == 201, resp.text
    assert_schema_view(resp.json(), "purchase", 1, PURCHASE)

    again = admin.put("/v1/schemas/purchase", PURCHASE)
    assert again.status_code == 200, f"identical re-put must answer 200 with the same version: {again.text}"
    assert again.json()["version"] == 1

    got = admin.schema("purchase")
    assert got.status_code == 200, got.text
    assert_schema_view(got.json(), "purchase", 1, PURCHASE)

    v2_def = copy.deepcopy(PURCHASE)
    v2_def["properties"].append({"name": "color", "type": "string", "required": False})
    v2_def["targetRequired"] = False
    resp = admin.put("/v1/schemas/purchase", v2_def)
    assert resp.status_code == 201, resp.text
    assert_schema_view(resp.json(), "purchase", 2, v2_def)

    assert_schema_view(admin.schema("purchase").json(), "purchase", 2, v2_def)  # read-your-writes
    v1 = admin.schema("purchase", version=1)
    assert v1.status_code == 200, v1.text
    assert_schema_view(v1.json(), "purchase", 1, PURCHASE)
    assert_schema_view(admin.schema("purchase", version=2).json(), "purchase", 2, v2_def)
    assert_error(admin.schema("purchase", version=3), 404, "not_found")
    assert_error(admin.schema(f"nosuch-{names.hex}"), 404, "not_found")
    assert_error(admin.schema(f"nosuch-{names.hex}", version=1), 404, "not_found")

    # A second type; the list holds the latest of each type, once.
    admin.put_schema("typed", TYPED, expect=201)
    listed = admin.schemas()
    by_type = {}
    for s in listed:
        assert s["eventType"] not in by_type, f"{s['eventType']} listed twice: {listed}"
        by_type[s["eventType"]] = s
    assert set(by_type) == {"view", "purchase", "typed"}, listed
    assert_schema_view(by_type["purchase"], "purchase", 2, v2_def)
    assert_schema_view(by_type["typed"], "typed", 1, TYPED)

    # Going back to the first definition is a change from the latest: a new version.
    resp = admin.put("/v1/schemas/purchase", PURCHASE)
    assert resp.status_code == 201, resp.text
    assert resp.json()["version"] == 3

    # The other gateway follows: it sees version 3, and an identical put there is a no-op.
    wait_until(
        lambda: admin_b.schema("purchase").json().get("version") == 3,
        PROPAGATION_S,
        interval=0.05,
        what="the other gateway to see version 3",
    )
    same = admin_b.put("/v1/schemas/purchase", PURCHASE)
    assert same.status_code == 200 and same.json()["version"] == 3, same.text
    assert admin.schema("purchase").json()["version"] == 3


# --------------------------------------------------------------------------- bad definitions


def bad_definition_cases(h: str) -> list[tuple[str, object, int, str, list[str]]]:
    """(eventType in the path, body, status, code, substrings the message must contain)."""
    ok = f"ok-{h}"

    def with_props(*props) -> dict:
        return {"properties": list(props)}

    long = "a" * 129
    return [
        (ok, with_props({"name": "sku", "type": "text"}), 400, "invalid_schema", ["text"]),
        (ok, with_props({"name": "sku", "type": "String"}), 400, "invalid_schema", ["String"]),
        (" padded", with_props(), 400, "invalid_schema", ["white space"]),
        ("Signed Up ", with_props(), 400, "invalid_schema", ["white space"]),
        ("tab\there", with_props(), 400, "invalid_schema", ["control characters"]),
        (long, with_props(), 400, "invalid_schema", ["128"]),
        (ok, with_props({"name": "x;drop", "type": "string"}), 400, "invalid_schema", ["x;drop"]),
        (ok, with_props({"name": "1st", "type": "string"}), 400, "invalid_schema", ["1st"]),
        (ok, with_props({"name": "", "type": "string"}), 400, "invalid_schema", []),
        (ok, with_props({"name": long, "type": "string"}), 400, "invalid_schema", ["128"]),
        (
            ok,
            with_props({"name": "sku", "type": "string"}, {"name": "sku", "type": "integer"}),
            400,
            "invalid_schema",
            ["declared twice", "sku"],
        ),
        (
            ok,
            with_props({"name": "sku", "type": "string", "profileProperty": "last sku"}),
            400,
            "invalid_schema",
            ["last sku"],
        ),
        (ok, {"properties": [], "sourceRequred": True}, 400, "invalid_json", ["sourceRequred"]),
        (ok, with_props({"name": "sku", "type": "string", "requird": True}), 400, "invalid_json", ["requird"]),
        (ok, '{"properties": [', 400, "invalid_json", []),
        (ok, "not json at all", 400, "invalid_json", []),
        (ok, "", 400, "invalid_json", []),
    ]


def test_bad_schema_definitions_are_refused_naming_the_problem_and_change_nothing(names, admin_stack):
    stack = admin_stack(workers=0)
    admin = stack.admin
    admin.put_schema("purchase", PURCHASE, expect=201)
    before = admin.schemas()

    problems = []
    for event_type, body, status, code, needles in bad_definition_cases(names.hex):
        if isinstance(body, str):
            resp = admin.request("PUT", f"/v1/schemas/{seg(event_type)}", data=body)
        else:
            resp = admin.put(f"/v1/schemas/{seg(event_type)}", body)
        label = f"PUT {event_type[:40]} {json.dumps(body)[:90]}"
        try:
            err = assert_error(resp, status, code)["error"]
            for needle in needles:
                assert needle in err["message"], f"message does not name {needle!r}: {err['message']!r}"
        except AssertionError as exc:
            problems.append(f"{label}: {exc}")
        # A bad definition for an existing type is refused too, and adds no version.
        if event_type == f"ok-{names.hex}":
            on_existing = admin.request("PUT", "/v1/schemas/purchase", data=body if isinstance(body, str) else json.dumps(body))
            if on_existing.status_code != status:
                problems.append(f"{label} on the existing type answered {on_existing.status_code} {on_existing.text[:200]}")

    # Wrong JSON types in the definition: a 400 either way, never a 2xx or a 5xx.
    for body in (
        {"properties": {"sku": "string"}},
        {"properties": [{"name": "sku", "type": "string", "required": "yes"}]},
        {"properties": [{"name": 5, "type": "string"}]},
        {"properties": [{"name": "sku"}]},
        {"properties": [], "sourceRequired": "no"},
        ["not", "an", "object"],
    ):
        resp = admin.put(f"/v1/schemas/ok-{names.hex}", body)
        try:
            assert resp.status_code == 400, f"{resp.status_code} {resp.text[:200]}"
            assert resp.json()["error"]["code"] in ("invalid_json", "invalid_schema"), resp.text
            assert resp.json()["error"]["message"], resp.text
        except (AssertionError, ValueError, KeyError) as exc:
            problems.append(f"PUT {json.dumps(body)}: {exc}")

    assert not problems, f"{len(problems)} bad definitions not refused as specified:\n" + "\n".join(problems)
    assert admin.schemas() == before
    assert admin.schema("purchase").json()["version"] == 1
    assert admin.schema(f"ok-{names.hex}").status_code == 404


# --------------------------------------------------------------------------- validate endpoint


def test_validate_endpoint_answers_the_reasons_and_the_trimmed_properties(names, admin_stack):
    stack = admin_stack(workers=0)
    admin = stack.admin
    scope = names.client_id
    version = admin.put_schema("purchase", PURCHASE, expect=201)["version"]
    typed_version = admin.put_schema("typed", TYPED, expect=201)["version"]

    ok = answer(admin.validate("purchase", purchase_event(scope, properties={"sku": "A1", "qty": 2, "secret": "x", "n": 1})))
    assert ok == {"valid": True, "schemaVersion": version, "reasons": [], "properties": {"sku": "A1", "qty": 2}}, ok

    bad = admin.validate("purchase", purchase_event(scope, properties={"qty": 2.5, "extra": 1}, drop=("source", "target")))
    assert bad["valid"] is False and bad["schemaVersion"] == version and bad["properties"] is None, bad
    assert reason_pairs(bad["reasons"]) == sorted(
        [
            ("missing_property", "$.properties.sku"),
            ("wrong_type", "$.properties.qty"),
            ("missing_source", "$.source"),
            ("missing_target", "$.target"),
        ]
    ), bad

    unknown = admin.validate(f"nosuch-{names.hex}", event(scope, eventType=f"nosuch-{names.hex}"))
    assert unknown["valid"] is False and unknown["schemaVersion"] is None and unknown["properties"] is None, unknown
    assert reason_pairs(unknown["reasons"]) == [("unknown_event_type", "$.eventType")], unknown

    problems = []
    for prop, values in GOOD_VALUES.items():
        for value in values:
            got = answer(admin.validate("typed", event(scope, eventType="typed", properties={prop: value, "zz": 1})))
            if got != {"valid": True, "schemaVersion": typed_version, "reasons": [], "properties": {prop: value}}:
                problems.append(f"{prop}={value!r} should be valid: {got}")
    for prop, values in BAD_VALUES.items():
        for value in values:
            got = admin.validate("typed", event(scope, eventType="typed", properties={prop: value}))
            pairs = reason_pairs(got["reasons"]) if isinstance(got.get("reasons"), list) else got
            if got.get("valid") is not False or pairs != [("wrong_type", f"$.properties.{prop}")]:
                problems.append(f"{prop}={value!r} should be wrong_type: {got}")
    assert not problems, "\n".join(problems)

    assert_error(admin.request("POST", "/v1/schemas/purchase/validate", data='{"eventType": '), 400, "invalid_json")


# --------------------------------------------------------------------------- worker, end to end


def rejection_cases(scope: str, h: str) -> list[tuple[dict, list[tuple[str, str]]]]:
    """(event, expected sorted (code, path) pairs; [] = accepted)."""

    def sess(label: str) -> str:
        return f"{label}-{h}-{uuid.uuid4().hex[:6]}"

    cases = [
        (event(scope, eventType=f"nosuch-{h}", sessionId=sess("unknown")), [("unknown_event_type", "$.eventType")]),
        (
            purchase_event(scope, properties={"qty": 2}, sessionId=sess("missing")),
            [("missing_property", "$.properties.sku")],
        ),
        (
            purchase_event(scope, properties={"sku": "A1", "qty": "two"}, sessionId=sess("wrongtype")),
            [("wrong_type", "$.properties.qty")],
        ),
        (purchase_event(scope, drop=("source",), sessionId=sess("nosource")), [("missing_source", "$.source")]),
        (purchase_event(scope, drop=("target",), sessionId=sess("notarget")), [("missing_target", "$.target")]),
        (
            purchase_event(scope, properties={"qty": 2.5}, drop=("source", "target"), sessionId=sess("all")),
            sorted(
                [
                    ("missing_property", "$.properties.sku"),
                    ("wrong_type", "$.properties.qty"),
                    ("missing_source", "$.source"),
                    ("missing_target", "$.target"),
                ]
            ),
        ),
        (purchase_event(scope, properties={"sku": "A1", "qty": 2, "junk": "x"}, sessionId=sess("okp")), []),
    ]
    for prop, values in BAD_VALUES.items():
        cases.append(
            (
                event(scope, eventType="typed", properties={prop: values[0]}, sessionId=sess(f"bad{prop}")),
                [("wrong_type", f"$.properties.{prop}")],
            )
        )
    cases.append(
        (
            event(scope, eventType="typed", properties={p: v[0] for p, v in GOOD_VALUES.items()}, sessionId=sess("okt")),
            [],
        )
    )
    return cases


def test_each_rejection_reason_end_to_end(names, store, admin_stack):
    """Events that pass the gateway but not their schema: acknowledged (200), then rejected by the
    worker (stage worker) with every problem listed — in rejected_events, in the event_log view
    and through the event-log endpoint — with the very reasons the validate endpoint answers."""
    scope = names.client_id
    stack = admin_stack(
        bootstrap=bootstrap_with(
            names, schemas=[{"eventType": "view", "properties": []}, spec("purchase", PURCHASE), spec("typed", TYPED)]
        )
    )
    admin, worker = stack.admin, stack.worker
    cases = rejection_cases(scope, names.hex)
    rejected = [(e, pairs) for e, pairs in cases if pairs]
    accepted = [e for e, pairs in cases if not pairs]

    resp = post(stack.gateway, {"events": [e for e, _ in cases]})
    assert resp.status_code == 200, resp.text
    assert resp.json().get("accepted") == len(cases) and not resp.json().get("errors"), resp.text

    store.wait_for_ids({e["itemId"] for e, _ in rejected}, 60, table="rejected_events")
    store.wait_for_ids({e["itemId"] for e in accepted}, 60)
    time.sleep(1)  # a wrongly routed duplicate would show up now

    problems = []
    for sent, pairs in rejected:
        eid = sent["itemId"]
        label = f"{sent['sessionId'].split('-')[0]} ({eid})"
        try:
            assert store.count("events", f"event_id = {sql_str(eid)}") == 0, "also in events"
            rows = store.rows(
                "rejected_events", f"event_id = {sql_str(eid)}", "scope, event_type, session_id, stage, reasons, raw"
            )
            assert len(rows) == 1, f"{len(rows)} rows in rejected_events"
            row = rows[0]
            assert row["stage"] == "worker", f"stage {row['stage']!r}"
            assert (row["scope"], row["event_type"], row["session_id"]) == (scope, sent["eventType"], sent["sessionId"])
            assert reason_pairs(row["reasons"]) == pairs, f"rejected_events reasons {row['reasons']}"
            assert json.loads(row["raw"]) == sent, f"raw is not the event as sent: {row['raw'][:200]}"
            recorded = json.loads(row["reasons"])

            view = store.rows("event_log", f"event_id = {sql_str(eid)}", "status, reasons, raw, scope")
            assert len(view) == 1 and view[0]["status"] == "rejected", f"event_log view: {view}"
            assert reason_pairs(view[0]["reasons"]) == pairs and json.loads(view[0]["raw"]) == sent

            page = admin.events_page(scope, sessionId=sent["sessionId"], status="rejected")
            assert [e["eventId"] for e in page["events"]] == [eid], f"endpoint: {page}"
            got = page["events"][0]
            assert got["status"] == "rejected" and got["eventType"] == sent["eventType"], got
            assert got["sessionId"] == sent["sessionId"], got
            assert reason_pairs(got["reasons"]) == pairs, f"endpoint reasons {got['reasons']}"
            assert as_json(got["raw"]) == sent, f"endpoint raw {got['raw']!r}"
            assert admin.events_page(scope, sessionId=sent["sessionId"], status="accepted")["events"] == []

            checked = admin.validate(sent["eventType"], sent)
            assert checked["valid"] is False
            assert checked["reasons"] == recorded, f"validate says {checked['reasons']}, the worker recorded {recorded}"
        except AssertionError as exc:
            problems.append(f"{label}: {exc}")
    for sent in accepted:
        eid = sent["itemId"]
        try:
            assert store.count("rejected_events", f"event_id = {sql_str(eid)}") == 0, "also rejected"
            page = admin.events_page(scope, sessionId=sent["sessionId"])
            assert [(e["eventId"], e["status"]) for e in page["events"]] == [(eid, "accepted")], page
            assert as_json(page["events"][0]["reasons"]) in ([], None), page
        except AssertionError as exc:
            problems.append(f"accepted {eid}: {exc}")
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems)

    # Metrics: rejections by reason code, accepted events.
    single = {}
    for _, pairs in rejected:
        if len(pairs) == 1:
            single[pairs[0][0]] = single.get(pairs[0][0], 0) + 1
    samples = worker.metrics()
    for code, n in single.items():
        value = sum(v for name, lab, v in samples if name == "powehi_worker_rejections_total" and lab.get("reason") == code)
        assert value >= n, f"powehi_worker_rejections_total{{reason={code!r}}} = {value}, expected >= {n}"
    acc = sum(v for name, lab, v in samples if name == "powehi_worker_events_total" and lab.get("outcome") == "accepted")
    assert acc >= len(accepted), f'powehi_worker_events_total{{outcome="accepted"}} = {acc}'


def test_valid_events_keep_only_declared_properties_and_record_the_schema_version(names, store, admin_stack):
    scope = names.client_id
    stack = admin_stack(
        bootstrap=bootstrap_with(names, schemas=[{"eventType": "view", "properties": []}, spec("typed", TYPED)])
    )
    admin = stack.admin
    typed_version = admin.schema("typed").json()["version"]
    view_version = admin.schema("view").json()["version"]

    declared = {p: v[0] for p, v in GOOD_VALUES.items()}
    typed_ev = event(scope, eventType="typed", properties={**declared, "secret": "s3cr3t", "nested": {"x": [1]}})
    partial_ev = event(scope, eventType="typed", properties={"s": "only-s", "password": "hunter2"})
    view_ev = event(scope, properties={"undeclared": "gone", "secret": "s3cr3t"})
    resp = post(stack.gateway, {"events": [typed_ev, partial_ev, view_ev]})
    assert resp.status_code == 200, resp.text
    ids = [typed_ev["itemId"], partial_ev["itemId"], view_ev["itemId"]]
    store.wait_for_ids(set(ids), 60)

    rows = {
        r["event_id"]: r
        for r in store.rows("events", f"scope = {sql_str(scope)}", "event_id, properties, schema_version")
    }
    expected = {
        typed_ev["itemId"]: (declared, typed_version),
        partial_ev["itemId"]: ({"s": "only-s"}, typed_version),
        view_ev["itemId"]: ({}, view_version),
    }
    for eid, (props, version) in expected.items():
        row = rows[eid]
        assert json.loads(row["properties"]) == props, f"{eid}: events.properties {row['properties']}"
        assert compact(row["properties"]), f"{eid}: events.properties is not compact JSON: {row['properties']!r}"
        assert int(row["schema_version"]) == version, f"{eid}: schema_version {row['schema_version']} != {version}"
    assert "s3cr3t" not in json.dumps(rows) and "hunter2" not in json.dumps(rows)
    assert ch_scalar(f"SELECT toTypeName(schema_version) FROM {store.db}.events LIMIT 1") == "UInt32"

    view_rows = {
        r["event_id"]: r
        for r in store.rows("event_log", f"scope = {sql_str(scope)}", "event_id, status, properties, schema_version")
    }
    page = {e["eventId"]: e for e in admin.events_page(scope, status="accepted")["events"]}
    for eid, (props, version) in expected.items():
        assert view_rows[eid]["status"] == "accepted"
        assert json.loads(view_rows[eid]["properties"]) == props
        assert int(view_rows[eid]["schema_version"]) == version
        assert as_json(page[eid]["properties"]) == props, page[eid]
        assert page[eid]["schemaVersion"] == version, page[eid]


def test_schema_registered_through_the_admin_api_is_enforced_by_a_running_worker(
    names, store, admin_stack, start_worker, config_topic
):
    scope = names.client_id
    stack = admin_stack()
    admin, gateway, worker = stack.admin, stack.gateway, stack.worker
    etype = f"signup-{names.hex}"

    def send(**props) -> dict:
        ev = event(scope, eventType=etype, properties=props)
        resp = post(gateway, {"events": [ev]})
        assert resp.status_code == 200, resp.text
        return ev

    # Before registration: unknown_event_type.
    early = send(plan="pro", extra="x")
    store.wait_for_ids({early["itemId"]}, 60, table="rejected_events")
    row = store.rows("rejected_events", f"event_id = {sql_str(early['itemId'])}", "stage, reasons")[0]
    assert row["stage"] == "worker" and reason_pairs(row["reasons"]) == [("unknown_event_type", "$.eventType")]

    # Register; the running worker follows the config log within a second.
    applied_before = worker.metric("powehi_worker_config_records_total") or 0.0
    v1_def = {"properties": [{"name": "plan", "type": "string", "required": True}]}
    v1 = admin.put_schema(etype, v1_def, expect=201)["version"]
    took = wait_worker_applied(worker, applied_before, f"schema {etype} v{v1}")
    print(f"running worker applied the new schema after {took:.2f}s")

    good = send(plan="pro", extra="x", another={"deep": True})
    wrong = send(plan=5)
    missing = send(extra="x")
    store.wait_for_ids({good["itemId"]}, 60)
    store.wait_for_ids({wrong["itemId"], missing["itemId"]}, 60, table="rejected_events")
    row = store.rows("events", f"event_id = {sql_str(good['itemId'])}", "properties, schema_version")[0]
    assert json.loads(row["properties"]) == {"plan": "pro"} and int(row["schema_version"]) == v1, row
    for ev, pairs in ((wrong, [("wrong_type", "$.properties.plan")]), (missing, [("missing_property", "$.properties.plan")])):
        r = store.rows("rejected_events", f"event_id = {sql_str(ev['itemId'])}", "reasons")[0]
        assert reason_pairs(r["reasons"]) == pairs, r
    # The early event stays rejected: validation is not re-run on the past.
    assert store.count("events", f"event_id = {sql_str(early['itemId'])}") == 0

    # A new version: new events are checked against it and say so.
    applied_before = worker.metric("powehi_worker_config_records_total") or 0.0
    v2_def = {"properties": v1_def["properties"] + [{"name": "coupon", "type": "string"}]}
    v2 = admin.put_schema(etype, v2_def, expect=201)["version"]
    assert v2 == v1 + 1
    wait_worker_applied(worker, applied_before, f"schema {etype} v{v2}")
    newer = send(plan="team", coupon="X1", extra="x")
    store.wait_for_ids({newer["itemId"]}, 60)
    row = store.rows("events", f"event_id = {sql_str(newer['itemId'])}", "properties, schema_version")[0]
    assert json.loads(row["properties"]) == {"plan": "team", "coupon": "X1"} and int(row["schema_version"]) == v2, row

    # A worker started now replays the config log before it is ready: no unknown_event_type.
    worker.terminate()
    worker.wait_exit(30)
    start_assigned_worker(start_worker, names, config_topic)
    after_restart = send(plan="solo", coupon="Y2")
    store.wait_for_ids({after_restart["itemId"]}, 60)
    row = store.rows("events", f"event_id = {sql_str(after_restart['itemId'])}", "properties, schema_version")[0]
    assert json.loads(row["properties"]) == {"plan": "solo", "coupon": "Y2"} and int(row["schema_version"]) == v2
    assert store.count("rejected_events", f"event_id = {sql_str(after_restart['itemId'])}") == 0


def test_event_types_are_named_as_people_write_them(names, store, admin_stack):
    """"Order Completed", "Signed Up" (Segment's names) and a name with a slash are registered
    through percent-encoded admin paths, read back by name, listed, and enforce their events;
    the event log filters by them."""
    scope = names.client_id
    stack = admin_stack()
    admin = stack.admin
    named = ["Order Completed", "Signed Up", "Viewed /pricing", "Bestellung abgeschlossen ✓"]
    for event_type in named:
        admin.put_schema(event_type, {"properties": [{"name": "total", "type": "number", "required": True}]},
                         expect=201)
        got = admin.schema(event_type)
        assert got.status_code == 200 and got.json()["eventType"] == event_type, got.text
    listed = {s["eventType"] for s in admin.schemas()}
    assert set(named) <= listed, listed

    good = [event(scope, eventType=t, properties={"total": 9.5, "extra": 1}) for t in named]
    bad = event(scope, eventType="Order Completed", properties={})
    resp = post(stack.gateway, {"events": [*good, bad]})
    assert resp.status_code == 200, resp.text
    store.wait_for_ids({e["itemId"] for e in good}, 60)
    rows = {r["event_id"]: r for r in store.rows("events", f"scope = {sql_str(scope)}", "event_id, event_type, properties")}
    for ev in good:
        assert rows[ev["itemId"]]["event_type"] == ev["eventType"]
        assert json.loads(rows[ev["itemId"]]["properties"]) == {"total": 9.5}
    wait_until(lambda: admin.events_page(scope, eventType="Order Completed", status="rejected")["events"], 60,
               what="the rejected Order Completed in the event log")
    [rejected] = admin.events_page(scope, eventType="Order Completed", status="rejected")["events"]
    assert [r["code"] for r in as_json(rejected["reasons"])] == ["missing_property"], rejected
