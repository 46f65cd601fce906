"""A valid request is never answered with a final 4xx because the gateway is starting, and a
dead broker is answered within the delivery timeout.

- Until the config log is replayed and the bootstrap applied, every ingest route answers
  503 not_ready with Retry-After: credentials cannot be judged yet, so never 401 or 403
  (producer SDKs drop data on a 401). /healthz is 200 meanwhile, /readyz 503.
- With the broker stopped, 503 kafka_unavailable comes within POWEHI_KAFKA_DELIVERY_TIMEOUT_MS
  plus a second, whatever librdkafka's reconnect backoff is doing.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
import requests

from e2e_support import (
    START_TIMEOUT_S,
    Creds,
    Proc,
    assert_error,
    event,
    free_port,
    post,
    retry_after_seconds,
    wait_until,
)

INGEST_PATHS = ("/smile", "/context", "/powehi/smile", "/powehi/context")

DELIVERY_TIMEOUT_MS = 3000
# What README promises on top of POWEHI_KAFKA_DELIVERY_TIMEOUT_MS.
DELIVERY_MARGIN_S = 1.0


class Hammer:
    """One client thread posting valid single-event requests to a gateway's address as fast
    as it can, across restarts of whatever listens there. Counts answers by status (503s by
    status and code); "conn" is a refused or broken connection. Keeps every non-200 answer
    for the test to inspect."""

    def __init__(self, gateway: Proc):
        self.gateway = gateway
        self.counts: Counter = Counter()
        self.refusals: list[requests.Response] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "Hammer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        assert not self._thread.is_alive(), "the client thread did not stop"

    def count(self, key) -> int:
        with self._lock:
            return self.counts[key]

    def wait_ok(self, n: int, timeout: float = START_TIMEOUT_S) -> None:
        wait_until(lambda: self.count(200) >= n, timeout, interval=0.02, what=f"{n} answers 200")

    def _run(self) -> None:
        session = requests.Session()
        scope = self.gateway.creds.client_id
        while not self._stop.is_set():
            try:
                resp = post(self.gateway, {"events": [event(scope)]}, session=session, timeout=30)
            except requests.RequestException:
                with self._lock:
                    self.counts["conn"] += 1
                self._stop.wait(0.002)  # a refused connect is instant: do not spin the CPU
                continue
            key = resp.status_code if resp.status_code != 503 else (503, _code(resp))
            with self._lock:
                self.counts[key] += 1
                if resp.status_code != 200:
                    self.refusals.append(resp)
        session.close()


def _code(resp: requests.Response) -> str | None:
    try:
        return resp.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


def assert_not_ready(resp: requests.Response) -> None:
    assert_error(resp, 503, "not_ready")
    retry_after_seconds(resp)


@pytest.mark.parametrize("stop", ["kill9", "sigterm"])
def test_restarted_gateway_answers_503_not_ready_and_never_401(start_gateway, stop):
    """A client posting without pause across a restart on the same port: between the new
    listener's first answer and readiness it gets 503 not_ready (Retry-After), then 200;
    never 401 or 403, nothing but 200 and 503 not_ready."""
    gateway = start_gateway()
    hammer = Hammer(gateway).start()
    try:
        hammer.wait_ok(20)
        if stop == "kill9":
            gateway.kill9()
        else:
            gateway.terminate()
            gateway.wait_exit(30)
        before_restart = hammer.count(200)
        restarted = start_gateway(wait_ready=False, POWEHI_HTTP_ADDR=gateway.addr)
        restarted.addr = gateway.addr
        hammer.wait_ok(before_restart + 20)
    finally:
        hammer.stop()
    counts = dict(hammer.counts)
    print(f"answers over the {stop} restart: {counts}")
    assert restarted.alive(), "the restarted gateway exited"
    assert hammer.count(401) == 0 and hammer.count(403) == 0, f"a starting gateway refused valid keys: {counts}"
    for resp in hammer.refusals:
        assert_not_ready(resp)
    # The window is real (replay, then the bootstrap check): without it the test proves nothing.
    assert hammer.count((503, "not_ready")) >= 1, f"no request hit the starting gateway: {counts}"


def test_gateway_that_cannot_replay_its_config_log_answers_503_not_ready(start_gateway):
    """No broker at all: the listener is up (/healthz 200) but the config log cannot be read,
    so every ingest route answers 503 not_ready whatever the credentials; /readyz 503."""
    gateway = start_gateway(wait_ready=False, POWEHI_KAFKA_BROKERS=f"127.0.0.1:{free_port()}")
    wait_until(lambda: _status(gateway, "/healthz") == 200, START_TIMEOUT_S, what="gateway /healthz 200")
    scope = gateway.creds.client_id
    for path in INGEST_PATHS:
        for creds in (gateway.creds, Creds(scope, "not-the-key"), None):
            resp = post(gateway, {"events": [event(scope)]}, path=path, creds=creds)
            assert_not_ready(resp)
    assert gateway.get("/readyz").status_code == 503
    assert gateway.alive()


def test_gateway_starting_against_a_slow_broker_answers_503_not_ready_until_ready(start_gateway, slow_kafka):
    """Every byte the gateway sends to its bootstrap broker held back a second: the config
    log cannot be replayed for at least that long. Until the first 200 every answer is
    503 not_ready; afterwards the keys are judged (a wrong key is 401 then, not before)."""
    gateway = start_gateway(wait_ready=False, POWEHI_KAFKA_BROKERS=slow_kafka(delay_ms=1000))
    scope = gateway.creds.client_id
    answers: list[requests.Response] = []
    deadline = time.monotonic() + 60
    while not answers or answers[-1].status_code != 200:
        assert time.monotonic() < deadline, f"not ready within 60 s; answers: {Counter(a.status_code for a in answers)}"
        try:
            answers.append(post(gateway, {"events": [event(scope)]}, timeout=30))
        except requests.ConnectionError:
            pass  # the listener is not bound yet
        time.sleep(0.02)
    waiting = answers[:-1]
    assert waiting, "the first answer was already 200: the broker was not slow"
    for resp in waiting:
        assert_not_ready(resp)
    assert_error(post(gateway, {"events": [event(scope)]}, creds=Creds(scope, "not-the-key")), 401, "invalid_credentials")


def test_dead_broker_gets_503_within_the_delivery_timeout(start_gateway, kafka_control):
    """Broker stopped: each request is answered 503 kafka_unavailable (Retry-After) within
    the delivery timeout plus DELIVERY_MARGIN_S, also once librdkafka's reconnect backoff has
    grown (the later requests); the gateway recovers once the broker is back."""
    gateway = start_gateway(POWEHI_KAFKA_DELIVERY_TIMEOUT_MS=DELIVERY_TIMEOUT_MS)
    scope = gateway.creds.client_id
    assert post(gateway, {"events": [event(scope)]}).status_code == 200

    took = []
    kafka_control.stop()
    try:
        for _ in range(3):
            started = time.monotonic()
            resp = post(gateway, {"events": [event(scope)]}, timeout=60)
            took.append(round(time.monotonic() - started, 2))
            assert_error(resp, 503, "kafka_unavailable")
            retry_after_seconds(resp)
    finally:
        kafka_control.start()
    print(f"503 kafka_unavailable after {took} s (delivery timeout {DELIVERY_TIMEOUT_MS} ms)")
    bound = DELIVERY_TIMEOUT_MS / 1000 + DELIVERY_MARGIN_S
    assert max(took) <= bound, f"503 took {took} s, over {bound} s"

    # Kafka is healthy again (kafka.sh start waits for it): the gateway takes events again.
    wait_until(
        lambda: post(gateway, {"events": [event(scope)]}, timeout=60).status_code == 200,
        60,
        interval=1,
        what="a 200 once Kafka is back",
    )
    gateway.wait_ready(60)


def _status(gateway: Proc, path: str) -> int | None:
    try:
        return gateway.get(path, timeout=2).status_code
    except requests.RequestException:
        return None
