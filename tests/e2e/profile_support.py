"""Helpers of the issue-4 end-to-end tests (profiles, sessions, identity merge, /context).

- `profile_bootstrap`: the test's data source and the schema `view` whose properties `plan`
  (string) and `n` (integer) set the profile properties `plan` and `lastN`;
- `view_event`: a `view` event with a given session, itemId, event time (epoch ms), profileId
  and properties;
- `context`, `context_ok`: `POST /powehi/context` (optionally `?sessionId=`);
- `retry_unavailable`: repeat a request while it answers 503 (other suites stop Kafka or
  ClickHouse now and then);
- `assert_profile`: the exact profile object (`/context`'s `profile`, admin
  `GET /v1/profiles/{id}`);
- `settle`: wait until events are stored and the consumer group committed the end of the
  topic, so nothing can still change the derived tables;
- `wait_all_stored`: wait for every acknowledged id, failing early (naming the missing ids)
  once the group has committed the end of the topic without them;
- `group_lag`, `rewind_group`: once every member of a consumer group is gone, move its committed offsets
  back, so that the next workers replay records that are already stored (what a crash
  between an insert and its commit leaves, on the scale of the whole topic);
- `iso`, `anon_id`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode

import requests
from confluent_kafka import Consumer, ConsumerGroupState, ConsumerGroupTopicPartitions, TopicPartition

from admin_support import time_ms
from e2e_support import (
    KAFKA_BROKERS,
    Proc,
    Store,
    ch_scalar,
    data_source,
    group_lag,
    kafka_admin,
    post,
    topic_partitions,
    wait_group_caught_up,
    wait_until,
)

PROFILE_SCHEMA = {
    "eventType": "view",
    "properties": [
        {"name": "plan", "type": "string", "profileProperty": "plan"},
        {"name": "n", "type": "integer", "profileProperty": "lastN"},
    ],
}

PROFILE_KEYS = {
    "profileId",
    "anonymous",
    "mergedIds",
    "properties",
    "firstSeen",
    "lastSeen",
    "eventCount",
    "sessionCount",
}

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(Z|\+00:00)$")

#: Generous: other suites may share the 2 cores.
CONVERGE_S = 120.0


#: The test data source's identity secret: /context answers an identified profile only with
#: its id signed under it (see `context(as_profile=...)`).
PROFILE_IDENTITY_SECRET = "is_e2e-profile-identity-secret"


def profile_bootstrap(names) -> dict:
    source = data_source(names.client_id, [names.write_key], identitySecret=PROFILE_IDENTITY_SECRET)
    return {"dataSources": [source], "eventSchemas": [PROFILE_SCHEMA]}


def identity_proof(profile_id: str, secret: str = PROFILE_IDENTITY_SECRET) -> str:
    """`profileIdHash`: what the site's server computes for its signed-in user."""
    return hmac.new(secret.encode(), profile_id.encode(), hashlib.sha256).hexdigest()


def iso(epoch_ms: int) -> str:
    """ISO 8601 UTC with milliseconds, as the API answers times."""
    return datetime.fromtimestamp(epoch_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{epoch_ms % 1000:03d}Z"
    )


def anon_id(scope: str, session_id: str) -> str:
    return f"anon:{scope}:{session_id}"


def view_event(
    scope: str, session_id: str, item_id: str, t_ms: int, profile_id: str | None = None, **properties: Any
) -> dict:
    ev = {
        "eventType": "view",
        "sessionId": session_id,
        "properties": properties,
        "scope": scope,
        "timeStamp": iso(t_ms),
        "source": {"itemId": "home", "itemType": "page"},
        "target": {"itemId": "cta", "itemType": "button"},
        "itemId": item_id,
    }
    if profile_id is not None:
        ev["profileId"] = profile_id
    return ev


def retry_unavailable(call, timeout: float = CONVERGE_S) -> requests.Response:
    """`call()` until it answers something else than 503 (Kafka or ClickHouse unavailable:
    nothing acknowledged, retry later; other suites may stop them for a while), honouring
    Retry-After (at most 5 s a time), for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        resp = call()
        if resp.status_code != 503 or time.monotonic() >= deadline:
            return resp
        wait = resp.headers.get("Retry-After", "1")
        time.sleep(min(5.0, float(wait) if wait.isdigit() else 1.0))


def context(
    gateway: Proc,
    events: list | None = None,
    *,
    session_id: str | None = None,
    body: Any = None,
    path: str = "/powehi/context",
    as_profile: str | None = None,
    **kw,
) -> requests.Response:
    """POST /context with `{"events": events}` (or a raw `body`), `?sessionId=` if given, and
    the identity proof of `as_profile` (an identified profile is read only with it)."""
    if as_profile is not None:
        path = f"{path}{'&' if '?' in path else '?'}{urlencode({'profileIdHash': identity_proof(as_profile)})}"
    if session_id is not None:
        path = f"{path}{'&' if '?' in path else '?'}{urlencode({'sessionId': session_id})}"
    payload = body if body is not None else {"events": events or []}
    return retry_unavailable(lambda: post(gateway, payload, path=path, **kw))


def context_ok(gateway: Proc, events: list | None = None, *, session_id: str | None = None, **kw) -> dict:
    resp = context(gateway, events, session_id=session_id, **kw)
    assert resp.status_code == 200, f"/context: {resp.status_code} {resp.text[:500]}"
    assert resp.headers.get("Content-Type", "").startswith("application/json"), resp.headers
    answer = resp.json()
    for key in ("updated", "accepted", "sessionId", "profileId", "profileProperties", "profile"):
        assert key in answer, f"/context answer without {key!r}: {answer}"
    assert answer["updated"] == 0, answer
    assert answer["profileId"] == answer["profile"]["profileId"], answer
    assert answer["profileProperties"] == answer["profile"]["properties"], answer
    return answer


def assert_profile(
    profile: dict,
    *,
    profile_id: str,
    anonymous: bool,
    event_count: int,
    session_count: int,
    properties: dict,
    first_ms: int | None,
    last_ms: int | None,
    merged_must: set = frozenset(),
    merged_within: set | None = None,
) -> None:
    """The exact profile. `mergedIds` must hold every id of `merged_must` and nothing outside
    `merged_within` (when given)."""
    assert set(profile) == PROFILE_KEYS, f"profile keys {sorted(profile)} != {sorted(PROFILE_KEYS)}: {profile}"
    observed = {
        "profileId": profile["profileId"],
        "anonymous": profile["anonymous"],
        "eventCount": profile["eventCount"],
        "sessionCount": profile["sessionCount"],
        "properties": profile["properties"],
    }
    expected = {
        "profileId": profile_id,
        "anonymous": anonymous,
        "eventCount": event_count,
        "sessionCount": session_count,
        "properties": properties,
    }
    assert observed == expected, f"profile differs:\n observed {observed}\n expected {expected}\n full {profile}"
    if first_ms is not None:  # None: a profile without events; the contract leaves its times open
        for key, want in (("firstSeen", first_ms), ("lastSeen", last_ms)):
            value = profile[key]
            assert isinstance(value, str) and ISO_MS.match(value), f"{key} is not ISO 8601 UTC with ms: {value!r}"
            assert time_ms(value) == want, f"{key} {value} != {iso(want)}: {profile}"
    merged = profile["mergedIds"]
    assert isinstance(merged, list) and len(merged) == len(set(merged)), f"mergedIds: {merged!r}"
    assert set(merged_must) <= set(merged), f"mergedIds {merged} lack {sorted(set(merged_must) - set(merged))}"
    if merged_within is not None:
        assert set(merged) <= set(merged_within), f"mergedIds {merged} not within {sorted(merged_within)}"


def settle(names, store: Store, ids: set[str], timeout: float = CONVERGE_S) -> None:
    """Every id stored, and the group committed the end of the topic: nothing more will be
    written for what was sent so far (the worker commits only after the rows are stored)."""
    store.wait_for_ids(ids, timeout=timeout)
    wait_group_caught_up(names.group, names.topic, timeout=timeout)


def wait_all_stored(names, store: Store, ids: set[str], timeout: float) -> None:
    """Wait until `store` holds every id; fail early, naming what is missing, once the group
    has committed the end of the topic without them (the worker commits only after the rows
    are stored, so nothing more will come)."""
    db = store.db

    def done() -> bool:
        try:
            return check()
        except LostEvents:
            raise
        except Exception:  # noqa: BLE001 - Kafka or ClickHouse briefly away: not yet
            return False

    def check() -> bool:
        n = int(ch_scalar(f"SELECT count() FROM {db}.events"))
        done.n = n  # type: ignore[attr-defined]
        if n >= len(ids):
            return True
        if group_lag(names.group, names.topic):
            return False
        stored = set(store.id_counts())
        missing = sorted(ids - stored)
        if missing:
            raise LostEvents(
                f"the group committed the end of {names.topic} but {len(missing)} of {len(ids)} acknowledged "
                f"events are not in {db}.events (nor will be): {missing[:10]}"
            )
        return False

    done.n = 0  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout
    while True:
        if done():
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s: {done.n} of {len(ids)} events stored")  # type: ignore[attr-defined]
        time.sleep(1)


class LostEvents(AssertionError):
    pass


def rewind_group(group: str, topic: str, offset: int = 0, timeout: float = 60) -> None:
    """Wait until `group` has no member (the broker noticed its killed workers), then set its
    committed offset of every partition of `topic` to `offset`, and check it took."""
    admin = kafka_admin()

    def empty() -> bool:
        desc = admin.describe_consumer_groups([group], request_timeout=10)[group].result()
        empty.state = desc.state  # type: ignore[attr-defined]
        return desc.state == ConsumerGroupState.EMPTY

    empty.state = None  # type: ignore[attr-defined]
    try:
        wait_until(empty, timeout, interval=0.5, what=f"group {group} to have no member")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; state {empty.state}") from None  # type: ignore[attr-defined]
    parts = [TopicPartition(topic, p, offset) for p in range(topic_partitions(topic))]
    result = admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, parts)])[group].result(timeout=30)
    failed = [tp for tp in result.topic_partitions if tp.error is not None]
    assert not failed, f"rewinding {group}: {failed}"
    consumer = Consumer({"bootstrap.servers": KAFKA_BROKERS, "group.id": group, "enable.auto.commit": False,
                         "log_level": 2})
    try:
        committed = consumer.committed([TopicPartition(topic, p) for p in range(len(parts))], timeout=10)
    finally:
        consumer.close()
    assert all(tp.offset == offset for tp in committed), f"committed after rewind: {committed}"
