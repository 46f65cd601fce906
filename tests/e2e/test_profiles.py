"""Issue 4: profiles, sessions, identity merge and POST /context, on real Kafka and ClickHouse.

- an anonymous session that identifies merges into the named profile: exact counts, times and
  latest properties, read by /context, by the admin API under either id, in ClickHouse;
- 4 workers in one group, 50,000 events over 500 profiles, kill -9 of random workers: every
  profile's event count and latest property are exact; again after the whole topic is
  replayed to new workers (every record already stored);
- out-of-order event times: the latest event time wins whatever the arrival order;
- ties on event time are broken by event id, the same whichever arrives first;
- /context for an unknown session answers a fresh anonymous profile; /context with events
  acknowledges them and answers the session's profile.

Helpers are in profile_support.py.
"""

from __future__ import annotations

import json
import random
import threading
import time

import requests

from admin_support import Admin, page_all, seg
from e2e_support import (
    Creds,
    assert_error,
    ch_query,
    ch_scalar,
    post,
    sql_str,
    wait_group_caught_up,
)
from profile_support import (
    CONVERGE_S,
    anon_id,
    assert_profile,
    context,
    context_ok,
    profile_bootstrap,
    retry_unavailable,
    rewind_group,
    settle,
    view_event,
    wait_all_stored,
)


def now_ms() -> int:
    return int(time.time() * 1000)


def smile_ok(gateway, events: list) -> None:
    resp = retry_unavailable(lambda: post(gateway, {"events": events}))
    assert resp.status_code == 200, f"/smile: {resp.status_code} {resp.text[:500]}"
    body = resp.json()
    assert body.get("accepted") == len(events) and not body.get("errors"), body


def admin_profile(admin: Admin, profile_id: str) -> dict:
    resp = retry_unavailable(lambda: admin.get(f"/v1/profiles/{seg(profile_id)}"))
    assert resp.status_code == 200, f"GET /v1/profiles/{profile_id}: {resp.status_code} {resp.text[:500]}"
    return resp.json()


def same_profile(a: dict, b: dict) -> bool:
    """Equal, whatever the order of mergedIds."""
    norm = lambda p: {**p, "mergedIds": sorted(p.get("mergedIds") or [])}  # noqa: E731
    return norm(a) == norm(b)


def stored_properties(db: str, profile_ids: list[str]) -> dict:
    """{profile_id: {name: value}} straight from profile_properties (no alias resolution)."""
    rows = ch_query(
        f"SELECT profile_id, name, argMaxMerge(value) AS value FROM {db}.profile_properties "
        f"WHERE profile_id IN ({', '.join(sql_str(p) for p in profile_ids)}) GROUP BY profile_id, name"
    )
    out: dict = {p: {} for p in profile_ids}
    for r in rows:
        out[r["profile_id"]][r["name"]] = json.loads(r["value"])
    return out


# --------------------------------------------------------------------------- 1. merge


def test_anonymous_session_identified_merges_into_the_profile(names, start_gateway, start_worker, store):
    """Session S is anonymous (3 events, two set `plan`, one sets `n`), then an event of S names
    P, which also has a session S2 of its own. The merged profile counts every event of S and
    of P once, both sessions, and the properties of the latest events whichever session set
    them; /context of S, admin GET by P and by anon:…:S all answer it."""
    gateway = start_gateway(bootstrap=profile_bootstrap(names))
    worker = start_worker()
    admin = Admin(gateway)
    scope, h = names.client_id, names.hex
    s, s2, p = f"s-{h}-anon", f"s-{h}-known", f"user-{h}"
    anon_s = anon_id(scope, s)
    t0 = (now_ms() - 3_600_000) // 1000 * 1000 + 123

    # Anonymous phase, sent through /context (which acknowledges like /smile).
    anon_events = [
        view_event(scope, s, f"{h}-e1", t0, plan="free", n=1),
        view_event(scope, s, f"{h}-e2", t0 + 1000),
        view_event(scope, s, f"{h}-e3", t0 + 2000, plan="pro"),
    ]
    answer = context_ok(gateway, anon_events)
    assert answer["accepted"] == 3 and answer["sessionId"] == s and answer["profileId"] == anon_s, answer
    settle(names, store, {e["itemId"] for e in anon_events})

    anon_expected = dict(
        profile_id=anon_s, anonymous=True, event_count=3, session_count=1,
        properties={"plan": "pro", "lastN": 1}, first_ms=t0, last_ms=t0 + 2000, merged_within=set(),
    )
    answer = context_ok(gateway, session_id=s)
    assert answer["accepted"] == 0 and answer["sessionId"] == s, answer
    assert_profile(answer["profile"], **anon_expected)
    assert_profile(admin_profile(admin, anon_s), **anon_expected)

    # Identification: P's own session S2 (one event earlier than all of S, one later), and an
    # event of S naming P, in separate requests.
    known = [
        view_event(scope, s2, f"{h}-e5", t0 - 60_000, profile_id=p, plan="basic", n=5),
        view_event(scope, s2, f"{h}-e6", t0 + 60_000, profile_id=p, n=6),
    ]
    smile_ok(gateway, known)
    identify = view_event(scope, s, f"{h}-e4", t0 + 3000, profile_id=p, n=4)
    smile_ok(gateway, [identify])
    settle(names, store, {e["itemId"] for e in known} | {identify["itemId"]})

    merged_expected = dict(
        profile_id=p, anonymous=False, event_count=6, session_count=2,
        properties={"plan": "pro", "lastN": 6}, first_ms=t0 - 60_000, last_ms=t0 + 60_000,
        merged_must={anon_s}, merged_within={anon_s, anon_id(scope, s2)},
    )
    by_context = context_ok(gateway, session_id=s, as_profile=p)
    assert by_context["sessionId"] == s and by_context["profileId"] == p, by_context
    assert_profile(by_context["profile"], **merged_expected)
    by_p = admin_profile(admin, p)
    by_anon = admin_profile(admin, anon_s)
    assert_profile(by_p, **merged_expected)
    assert same_profile(by_anon, by_p), f"GET by the merged id must answer the surviving profile:\n{by_anon}\n{by_p}"
    assert_profile(context_ok(gateway, session_id=s2, as_profile=p)["profile"], **merged_expected)

    # In ClickHouse: each event belongs to its own profile; the session identified as P.
    rows = ch_query(f"SELECT event_id, profile_id FROM {names.database}.events WHERE scope = {sql_str(scope)}")
    assert {r["event_id"]: r["profile_id"] for r in rows} == {
        f"{h}-e1": anon_s, f"{h}-e2": anon_s, f"{h}-e3": anon_s, f"{h}-e4": p, f"{h}-e5": p, f"{h}-e6": p,
    }
    session = ch_query(
        f"SELECT argMaxMerge(profile_id) AS profile, toUInt64(uniqExactMerge(events)) AS events FROM {names.database}.sessions "
        f"WHERE scope = {sql_str(scope)} AND session_id = {sql_str(s)}"
    )
    assert session == [{"profile": p, "events": 4}], session

    # The event log of P holds the events of the merged session too.
    logged = page_all(admin, scope, profileId=p)
    assert sorted(e["eventId"] for e in logged) == [f"{h}-e{i}" for i in range(1, 7)], logged

    # An anonymous event of S after the identification still reads as P (and is the latest plan).
    late = view_event(scope, s, f"{h}-e7", t0 + 4000, plan="enterprise")
    smile_ok(gateway, [late])
    settle(names, store, {late["itemId"]})
    assert ch_scalar(f"SELECT profile_id FROM {names.database}.events WHERE event_id = {sql_str(late['itemId'])}") == anon_s
    merged_expected.update(event_count=7, properties={"plan": "enterprise", "lastN": 6})
    assert_profile(context_ok(gateway, session_id=s, as_profile=p)["profile"], **merged_expected)
    assert_profile(admin_profile(admin, anon_s), **merged_expected)
    assert_profile(admin_profile(admin, p), **merged_expected)

    kinds = {k: worker.metric("powehi_worker_profiles_total", kind=k) for k in ("created", "updated", "merged")}
    print(f"powehi_worker_profiles_total: {kinds}")
    assert kinds["created"] is not None and kinds["created"] >= 2, kinds  # anon:…:S and P
    assert kinds["updated"] is not None and kinds["updated"] >= 1, kinds
    assert kinds["merged"] is not None and kinds["merged"] >= 1, kinds


# --------------------------------------------------------------------------- 2. scale + chaos

PROFILES = 500
EVENTS = 50_000
SESSIONS_PER_PROFILE = 5
BATCH = 100
SENDERS = 4
WORKERS = 4
KILLS = 5
PLANS = ("free", "basic", "pro", "team", "enterprise")
#: Shorter than the default 10 s so a killed member leaves the group sooner (broker minimum 6 s).
WORKER_ENV = {"POWEHI_KAFKA_SESSION_TIMEOUT_MS": "6000"}


def _workload(rng: random.Random, h: str, scope: str):
    """50,000 events over 500 profiles (40–160 each, 5 sessions each), random event times,
    globally shuffled; and what each profile must be."""
    counts = [0] * PROFILES
    for i in range(PROFILES // 2):
        d = rng.randint(0, 60)
        counts[i], counts[i + PROFILES // 2] = 100 + d, 100 - d
    assert sum(counts) == EVENTS
    base = now_ms() - 2 * 86_400_000
    events, expected = [], {}
    for i, count in enumerate(counts):
        pid = f"u-{h}-{i:03d}"
        sessions = [f"{h}-p{i:03d}-s{j}" for j in range(SESSIONS_PER_PROFILE)]
        evs = []
        for k in range(count):
            props = {"n": rng.randrange(1_000_000)}
            if rng.random() < 0.3:
                props["plan"] = rng.choice(PLANS)
            t = base + rng.randrange(86_400_000)
            evs.append((t, f"{h}-p{i:03d}-e{k:03d}", sessions[k % SESSIONS_PER_PROFILE], props))
        latest = max(evs, key=lambda e: (e[0], e[1]))
        with_plan = [e for e in evs if "plan" in e[3]]
        props = {"lastN": latest[3]["n"]}
        if with_plan:
            props["plan"] = max(with_plan, key=lambda e: (e[0], e[1]))[3]["plan"]
        expected[pid] = {
            "events": count,
            "sessions": set(sessions),
            "first": min(e[0] for e in evs),
            "last": max(e[0] for e in evs),
            "properties": props,
            "latest_id": latest[1],
        }
        events.extend(view_event(scope, sess, item, t, profile_id=pid, **pr) for t, item, sess, pr in evs)
    rng.shuffle(events)
    return events, expected


def test_four_workers_with_kill_9_keep_every_profile_exact(names, start_gateway, start_worker, store):
    """4 workers in one group; 50,000 events over 500 profiles (each names its profileId, 5
    sessions each, property n -> lastN, event times shuffled against arrival order), sent in
    requests of 100 by 4 threads while 5 random workers are killed with SIGKILL and restarted.
    Every profile's event count, session count, first/last seen and latest properties are
    exact; then again after the whole topic is replayed to new workers."""
    seed = int(names.hex, 16)
    rng = random.Random(seed)
    scope, h, db = names.client_id, names.hex, names.database
    gateway = start_gateway(bootstrap=profile_bootstrap(names))
    workers = [start_worker(**WORKER_ENV) for _ in range(WORKERS)]
    events, expected = _workload(rng, h, scope)
    arrival = {e["itemId"]: n for n, e in enumerate(events)}
    out_of_order = sum(
        1 for pid, x in expected.items()
        if arrival[x["latest_id"]] != max(arrival[f"{h}-p{pid[-3:]}-e{k:03d}"] for k in range(x["events"]))
    )
    assert out_of_order > PROFILES * 0.9, f"only {out_of_order} profiles' latest event arrives out of order"
    batches = [events[i:i + BATCH] for i in range(0, EVENTS, BATCH)]
    print(f"seed {seed}: {len(batches)} requests of {BATCH} events")

    lock = threading.Lock()
    acked: set[str] = set()
    failures: list[str] = []
    retries: list[str] = []
    next_batch = [0]
    stream_done = threading.Event()
    stop = threading.Event()
    deadline = time.monotonic() + 240

    def sender() -> None:
        session = requests.Session()
        while not stop.is_set() and time.monotonic() < deadline:
            with lock:
                n = next_batch[0]
                next_batch[0] += 1
            if n >= len(batches):
                break
            batch = batches[n]
            # 503 (nothing acknowledged) or no answer: retry the same events, as a client
            # should (other suites may stop Kafka for a while); itemIds make it idempotent.
            while True:
                try:
                    resp = post(gateway, {"events": batch}, session=session, timeout=60)
                    ok = resp.status_code == 200 and resp.json().get("accepted") == len(batch)
                    detail = f"{resp.status_code} {resp.text[:200]}"
                    again = resp.status_code == 503
                except requests.RequestException as exc:
                    ok, detail, again = False, f"{type(exc).__name__}: {exc}", True
                if not again or stop.is_set() or time.monotonic() >= deadline:
                    break
                with lock:
                    retries.append(f"request {n}: {detail[:120]}")
                stop.wait(1.0)
            with lock:
                if ok:
                    acked.update(e["itemId"] for e in batch)
                else:
                    failures.append(f"request {n}: {detail}")
            stop.wait(0.2)  # pacing, so the kills land while events stream in
        session.close()

    kills: list[tuple[str, bool]] = []
    chaos_errors: list[BaseException] = []
    chaos_rng = random.Random(seed + 1)

    def chaos() -> None:
        try:
            if stop.wait(3):
                return
            for _ in range(KILLS):
                slot = chaos_rng.randrange(WORKERS)
                victim = workers[slot]
                victim.kill9()
                kills.append((victim.name, not stream_done.is_set()))
                workers[slot] = start_worker(wait=None, **WORKER_ENV)
                workers[slot].wait_ready(timeout=CONVERGE_S)
                if stop.wait(chaos_rng.uniform(2.0, 4.0)):
                    return
        except BaseException as exc:  # noqa: BLE001 - re-raised by the test thread
            chaos_errors.append(exc)

    senders = [threading.Thread(target=sender, daemon=True) for _ in range(SENDERS)]
    chaos_thread = threading.Thread(target=chaos, daemon=True)
    started = time.monotonic()
    for t in senders:
        t.start()
    chaos_thread.start()
    try:
        for t in senders:
            t.join(max(0.0, deadline + 70 - time.monotonic()))
        assert not any(t.is_alive() for t in senders), "sender threads did not finish"
        stream_done.set()
        sent_s = time.monotonic() - started
        chaos_thread.join(120)
        assert not chaos_thread.is_alive(), "the chaos thread did not finish"
    finally:
        stop.set()
    if chaos_errors:
        raise chaos_errors[0]
    print(f"sent in {sent_s:.0f}s; kills (worker, during traffic): {kills}; {len(retries)} retries {retries[:3]}")
    assert not failures, f"{len(failures)} requests failed: {failures[:5]}"
    assert len(acked) == EVENTS, f"{len(acked)} of {EVENTS} events acknowledged"
    assert len(kills) == KILLS, kills
    assert sum(1 for _, during in kills if during) >= 3, f"too few kills while events streamed in: {kills}"
    assert all(w.alive() for w in workers), [w.name for w in workers if not w.alive()]

    # Converge: every event stored, then the group committed the end of the topic (nothing
    # left to replay).
    wait_all_stored(names, store, acked, timeout=180)
    wait_group_caught_up(names.group, names.topic, timeout=CONVERGE_S)
    print(f"converged {time.monotonic() - started:.0f}s after the first request")

    _check_every_profile(names, store, gateway, acked, expected, seed + 2)

    # Replay: kill -9 every worker, rewind the group to the start of the topic (as a crash
    # between an insert and its commit leaves it, for every record at once) and let two new
    # workers read it all again: every record is already stored, none may count twice.
    for w in workers:
        w.kill9()
    rewind_group(names.group, names.topic, 0)
    replayers = [start_worker(wait=None, **WORKER_ENV) for _ in range(2)]
    for w in replayers:
        w.wait_ready(timeout=CONVERGE_S)
    wait_group_caught_up(names.group, names.topic, timeout=CONVERGE_S)
    _check_every_profile(names, store, gateway, acked, expected, seed + 3)
    skipped = sum(w.metric("powehi_worker_records_skipped_total") or 0 for w in replayers)
    assert skipped >= EVENTS, f"the replay skipped only {skipped:.0f} of {EVENTS} stored records"
    print(f"replay: {skipped:.0f} records skipped; done {time.monotonic() - started:.0f}s after the first request")


def _check_every_profile(names, store, gateway, acked: set, expected: dict, sample_seed: int) -> None:
    """All 500 profiles exact in ClickHouse (one query each for stats and properties), a
    sample through the admin API and /context, and every acknowledged event stored once."""
    scope, db = names.client_id, names.database
    totals = ch_query(f"SELECT count() AS n, uniqExact(event_id) AS u FROM {db}.events")[0]
    assert (int(totals["n"]), int(totals["u"])) == (EVENTS, EVENTS), f"count()/uniqExact(event_id): {totals}"
    assert set(store.id_counts()) == acked, "the stored event ids are not the acknowledged ones"
    by_profile = {
        r["profile_id"]: int(r["n"])
        for r in ch_query(f"SELECT profile_id, count() AS n FROM {db}.events GROUP BY profile_id")
    }
    assert by_profile == {pid: x["events"] for pid, x in expected.items()}, "events.profile_id differs"

    # Every profile's stats, all 500 in one query.
    stats = {
        r["profile_id"]: (int(r["events"]), int(r["sessions"]), int(r["first"]), int(r["last"]))
        for r in ch_query(
            f"SELECT profile_id, toUInt64(uniqExactMerge(events)) AS events, toUInt64(uniqExactMerge(sessions)) AS sessions, "
            f"minMerge(first_seen_ms) AS first, maxMerge(last_seen_ms) AS last "
            f"FROM {db}.profile_stats GROUP BY profile_id"
        )
    }
    want_stats = {
        pid: (x["events"], SESSIONS_PER_PROFILE, x["first"], x["last"]) for pid, x in expected.items()
    }
    wrong = {pid: (stats.get(pid), want) for pid, want in want_stats.items() if stats.get(pid) != want}
    extra = sorted(set(stats) - set(want_stats))
    assert not wrong and not extra, (
        f"{len(wrong)} profiles with wrong (events, sessions, first, last), e.g. "
        f"{sorted(wrong.items())[:5]} (observed, expected); unexpected profile ids: {extra[:5]}"
    )

    # Every profile's properties, all 500 in one query: the value of the latest event.
    props: dict = {}
    for r in ch_query(
        f"SELECT profile_id, name, argMaxMerge(value) AS value FROM {db}.profile_properties GROUP BY profile_id, name"
    ):
        props.setdefault(r["profile_id"], {})[r["name"]] = json.loads(r["value"])
    wrong_props = {
        pid: (props.get(pid), x["properties"]) for pid, x in expected.items() if props.get(pid) != x["properties"]
    }
    assert not wrong_props and set(props) == set(expected), (
        f"{len(wrong_props)} profiles with wrong properties, e.g. {sorted(wrong_props.items())[:5]} "
        f"(observed, expected); profile ids {len(props)}"
    )

    # A sample through the admin API (by the profile id and by one of its sessions' anon ids)
    # and through /context.
    admin = Admin(gateway)
    for pid in random.Random(sample_seed).sample(sorted(expected), 20):
        x = expected[pid]
        anon_ids = {anon_id(scope, sess) for sess in x["sessions"]}
        want = dict(
            profile_id=pid, anonymous=False, event_count=x["events"], session_count=SESSIONS_PER_PROFILE,
            properties=x["properties"], first_ms=x["first"], last_ms=x["last"], merged_within=anon_ids,
        )
        got = admin_profile(admin, pid)
        assert_profile(got, **want)
        some_session = sorted(x["sessions"])[0]
        assert same_profile(admin_profile(admin, anon_id(scope, some_session)), got)
        assert_profile(context_ok(gateway, session_id=some_session, as_profile=pid)["profile"], **want)

    # Still exactly EVENTS rows after all the checks: nothing was written late.
    assert int(ch_scalar(f"SELECT count() FROM {db}.events")) == EVENTS



# --------------------------------------------------------------------------- 3. out of order


def test_latest_event_time_wins_whatever_the_arrival_order(names, start_gateway, start_worker, store):
    """For a named profile and an anonymous session alike: the latest-time event arrives first,
    older ones after (each in its own request, each stored before the next is sent); the
    properties are those of the latest-time event, firstSeen/lastSeen the min/max times."""
    gateway = start_gateway(bootstrap=profile_bootstrap(names))
    start_worker()
    admin = Admin(gateway)
    scope, h = names.client_id, names.hex
    p, sp, sa = f"user-{h}", f"s-{h}-named", f"s-{h}-anon"
    t0 = (now_ms() - 7_200_000) // 1000 * 1000 + 7
    steps = [  # arrival order
        (t0 + 600_000, "late", {"plan": "late", "n": 3}),
        (t0, "early", {"plan": "early", "n": 1}),
        (t0 + 300_000, "mid", {"plan": "mid", "n": 2}),
        (t0 - 1_000, "oldest", {}),
        (t0 + 599_999, "almost", {"n": 99}),
    ]
    for t, label, props in steps:
        batch = [
            view_event(scope, sp, f"{h}-named-{label}", t, profile_id=p, **props),
            view_event(scope, sa, f"{h}-anon-{label}", t, **props),
        ]
        smile_ok(gateway, batch)
        settle(names, store, {e["itemId"] for e in batch})

    want = dict(
        anonymous=False, event_count=len(steps), session_count=1, properties={"plan": "late", "lastN": 3},
        first_ms=t0 - 1_000, last_ms=t0 + 600_000,
    )
    assert_profile(admin_profile(admin, p), profile_id=p, **want)
    assert_profile(context_ok(gateway, session_id=sp, as_profile=p)["profile"], profile_id=p, **want)
    want.update(anonymous=True, merged_within=set())
    assert_profile(context_ok(gateway, session_id=sa)["profile"], profile_id=anon_id(scope, sa), **want)
    assert_profile(admin_profile(admin, anon_id(scope, sa)), profile_id=anon_id(scope, sa), **want)
    assert stored_properties(names.database, [p, anon_id(scope, sa)]) == {
        p: {"plan": "late", "lastN": 3},
        anon_id(scope, sa): {"plan": "late", "lastN": 3},
    }


# --------------------------------------------------------------------------- 4. /context


def test_context_answers_fresh_anonymous_profile_then_the_stored_one(names, start_gateway, start_worker, store):
    gateway = start_gateway(bootstrap=profile_bootstrap(names))
    start_worker()
    admin = Admin(gateway)
    scope, h = names.client_id, names.hex
    fresh = dict(anonymous=True, event_count=0, session_count=0, properties={}, first_ms=None, last_ms=None,
                 merged_within=set())

    # Unknown session: a fresh anonymous profile, never an error; at both paths, with an
    # empty events array or an empty body.
    unknown = f"never-seen-{h}"
    for path, body in (("/powehi/context", {"events": []}), ("/context", {"events": []}), ("/powehi/context", b"")):
        resp = context(gateway, session_id=unknown, body=body, path=path)
        assert resp.status_code == 200, f"{path} {body!r}: {resp.status_code} {resp.text[:500]}"
        answer = resp.json()
        assert answer["updated"] == 0 and answer["accepted"] == 0, answer
        assert answer["sessionId"] == unknown and answer["profileId"] == anon_id(scope, unknown), answer
        assert answer["profileProperties"] == {}, answer
        assert_profile(answer["profile"], profile_id=anon_id(scope, unknown), **fresh)

    # Same authentication as /smile.
    assert_error(context(gateway, session_id=unknown, creds=None), 401, "missing_credentials")
    assert_error(context(gateway, session_id=unknown, creds=Creds(scope, "wrong-key")), 401, "invalid_credentials")
    # Without ?sessionId= an empty batch is refused like /smile's.
    assert_error(context(gateway, []), 400, "empty_batch")
    # No event belongs to an unknown profile id: 404 on the admin API.
    assert_error(admin.get(f"/v1/profiles/{seg('nobody-' + h)}"), 404, "not_found")

    # /context with events: acknowledged like /smile; the session is that of the first
    # accepted event (the first one here is refused: wrong scope).
    c = f"s-{h}-ctx"
    t0 = (now_ms() - 600_000) // 1000 * 1000
    refused = view_event("someone-else", f"s-{h}-refused", f"{h}-x0", t0)
    sent = [
        view_event(scope, c, f"{h}-c1", t0, plan="trial", n=9),
        view_event(scope, c, f"{h}-c2", t0 + 5_000, n=10),
    ]
    resp = context(gateway, [refused, *sent])
    assert resp.status_code == 200, f"{resp.status_code} {resp.text[:500]}"
    answer = resp.json()
    assert answer["accepted"] == 2 and [e["index"] for e in answer.get("errors", [])] == [0], answer
    assert answer["sessionId"] == c and answer["profileId"] == anon_id(scope, c), answer
    first = answer["profile"]
    assert first["profileId"] == anon_id(scope, c) and first["anonymous"] is True, first
    assert first["eventCount"] <= 2, f"the profile counts events that were never sent: {first}"

    settle(names, store, {e["itemId"] for e in sent})
    stored = dict(profile_id=anon_id(scope, c), anonymous=True, event_count=2, session_count=1,
                  properties={"plan": "trial", "lastN": 10}, first_ms=t0, last_ms=t0 + 5_000, merged_within=set())
    assert_profile(context_ok(gateway, session_id=c)["profile"], **stored)

    # A second /context with an event answers at least what is stored.
    third = view_event(scope, c, f"{h}-c3", t0 + 1_000, plan="gold")
    answer = context_ok(gateway, [third])
    assert answer["accepted"] == 1 and answer["sessionId"] == c, answer
    with_third = {**stored, "event_count": 3, "properties": {"plan": "gold", "lastN": 10}}
    if answer["profile"]["eventCount"] == 2:
        assert_profile(answer["profile"], **stored)
    else:  # processed already: then it must be exact with it
        assert_profile(answer["profile"], **with_third)
    settle(names, store, {third["itemId"]})
    assert_profile(context_ok(gateway, session_id=c)["profile"], **with_third)

    # Identifying through /context: the answer's session is the event's; once stored, the
    # session reads as the named profile.
    p = f"user-{h}"
    ident = view_event(scope, c, f"{h}-c4", t0 + 2_000, profile_id=p)
    answer = context_ok(gateway, [ident])
    assert answer["sessionId"] == c, answer
    settle(names, store, {ident["itemId"]})
    answer = context_ok(gateway, session_id=c, as_profile=p)
    assert answer["profileId"] == p, answer
    assert_profile(answer["profile"], profile_id=p, anonymous=False, event_count=4, session_count=1,
                   properties={"plan": "gold", "lastN": 10}, first_ms=t0, last_ms=t0 + 5_000,
                   merged_must={anon_id(scope, c)}, merged_within={anon_id(scope, c)})


# --------------------------------------------------------------------------- 5. ties


def test_ties_on_event_time_are_broken_by_event_id_whatever_the_arrival_order(
    names, start_gateway, start_worker, store
):
    """Two events at the same timeStamp set different values. P1 receives "a-…" then "b-…",
    P2 "b-…" then "a-…" (each stored before the other is sent): both keep the value of the
    greater event id. P3 shows that time decides first: "a-…" 1 ms later than "b-…" wins."""
    gateway = start_gateway(bootstrap=profile_bootstrap(names))
    start_worker()
    admin = Admin(gateway)
    scope, h = names.client_id, names.hex
    t = (now_ms() - 900_000) // 1000 * 1000 + 500
    p1, p2, p3 = f"tie1-{h}", f"tie2-{h}", f"time-{h}"

    def ev(profile: str, letter: str, t_ms: int) -> dict:
        value = {"a": ("A", 1), "b": ("B", 2)}[letter]
        return view_event(scope, f"s-{profile}", f"{letter}-{profile}", t_ms, profile_id=profile,
                          plan=value[0], n=value[1])

    rounds = [
        [ev(p1, "a", t), ev(p2, "b", t), ev(p3, "b", t)],
        [ev(p1, "b", t), ev(p2, "a", t), ev(p3, "a", t + 1)],
    ]
    for batch in rounds:
        smile_ok(gateway, batch)
        settle(names, store, {e["itemId"] for e in batch})

    for profile, props, last in ((p1, {"plan": "B", "lastN": 2}, t), (p2, {"plan": "B", "lastN": 2}, t),
                                 (p3, {"plan": "A", "lastN": 1}, t + 1)):
        assert_profile(admin_profile(admin, profile), profile_id=profile, anonymous=False, event_count=2,
                       session_count=1, properties=props, first_ms=t, last_ms=last)
    assert stored_properties(names.database, [p1, p2, p3]) == {
        p1: {"plan": "B", "lastN": 2},
        p2: {"plan": "B", "lastN": 2},
        p3: {"plan": "A", "lastN": 1},
    }
