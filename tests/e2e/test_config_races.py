"""Concurrent admin changes never undo each other (issue 12, point 6): through one gateway and
through two, with real Kafka. Each change is written as a conditional record that every process
folds in the same order (see ingest-gateway's configlog.rs); these tests race them and check the
final state every gateway agrees on, and what ingest does with it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from admin_support import Admin, seg
from e2e_support import VIEW_SCHEMA, Creds, assert_error, data_source, event, post, wait_until


def two_gateways(names, start_gateway):
    bootstrap = {"dataSources": [data_source(names.client_id, [names.write_key])], "eventSchemas": [VIEW_SCHEMA]}
    return start_gateway(bootstrap=bootstrap), start_gateway(bootstrap=bootstrap)


def retried(call, what: str):
    """An admin call retried on 409 conflict, as the API asks clients to."""
    for _ in range(5):
        resp = call()
        if resp.status_code != 409:
            return resp
        assert resp.json()["error"]["code"] == "conflict", resp.text
    raise AssertionError(f"{what}: still 409 after 5 tries")


def agreed_source(gateways, ds_id: str) -> dict:
    """The data source as every gateway shows it, once they agree."""
    views: list[dict] = []

    def agree() -> bool:
        views[:] = [Admin(g).source(ds_id) for g in gateways]
        return all(v == views[0] for v in views)

    wait_until(agree, 10, what=f"gateways agreeing on {ds_id}")
    return views[0]


def test_fifty_add_revoke_pairs_and_fifty_adds_lose_nothing(names, start_gateway):
    """Through two gateways at once: 50 threads add a key and revoke it, 50 add a key and keep
    it. Whatever the interleaving, the revoked keys stay revoked and the kept ones stay."""
    gateways = two_gateways(names, start_gateway)
    ds = Admin(gateways[0]).create_source(id=f"race-{names.hex}")["id"]

    def add_token(admin: Admin) -> dict:
        resp = retried(lambda: admin.post(f"/v1/datasources/{ds}/tokens"), "add a key")
        assert resp.status_code == 201, resp.text
        return resp.json()

    def add_then_revoke(i: int) -> str:
        admin = Admin(gateways[i % 2])
        token = add_token(admin)
        resp = retried(lambda: admin.delete(f"/v1/datasources/{ds}/tokens/{token['tokenId']}"), "revoke")
        assert resp.status_code == 200, resp.text
        return token["writeKey"]

    def add(i: int) -> tuple[str, str]:
        token = add_token(Admin(gateways[(i + 1) % 2]))
        return token["tokenId"], token["writeKey"]

    with ThreadPoolExecutor(max_workers=16) as pool:
        revoked = pool.map(add_then_revoke, range(50))
        kept = pool.map(add, range(50))
        revoked, kept = list(revoked), list(kept)
    source = agreed_source(gateways, ds)
    live = {t["id"] for t in source["tokens"]}
    assert {token_id for token_id, _ in kept} <= live, "a kept key was lost"
    assert len(live) == 1 + 50, f"{len(live)} live keys: revoked ones came back or kept ones went"
    for gateway in gateways:
        for key in revoked[:10]:
            assert_error(post(gateway, {"events": [event(ds)]}, creds=Creds(ds, key)), 401, "invalid_credentials")
        for _, key in kept[:10]:
            assert post(gateway, {"events": [event(ds)]}, creds=Creds(ds, key)).status_code == 200


def test_two_creates_of_one_id_give_one_201_and_one_409(names, start_gateway):
    gateways = two_gateways(names, start_gateway)
    for round_ in range(5):
        ds = f"twin-{names.hex}-{round_}"

        def create(i: int):
            return Admin(gateways[i]).post("/v1/datasources", {"name": f"twin {i}", "id": ds})

        with ThreadPoolExecutor(max_workers=2) as pool:
            answers = list(pool.map(create, range(2)))
        assert sorted(a.status_code for a in answers) == [201, 409], [a.text for a in answers]
        winner = next(a.json() for a in answers if a.status_code == 201)
        loser = next(a for a in answers if a.status_code == 409)
        assert loser.json()["error"]["code"] == "conflict", loser.text
        # The key the winner was shown is the one that works; the loser's was never stored.
        assert post(gateways[0], {"events": [event(ds)]}, creds=Creds(ds, winner["writeKey"])).status_code == 200
        assert agreed_source(gateways, ds)["name"] == winner["name"]


def test_two_concurrent_schema_puts_make_two_versions(names, start_gateway):
    gateways = two_gateways(names, start_gateway)
    event_type = f"race_{names.hex}"
    definitions = [
        {"properties": [{"name": f"p{i}", "type": "string", "required": True}]} for i in range(2)
    ]

    def put(i: int):
        return Admin(gateways[i]).put(f"/v1/schemas/{seg(event_type)}", definitions[i])

    with ThreadPoolExecutor(max_workers=2) as pool:
        answers = list(pool.map(put, range(2)))
    assert [a.status_code for a in answers] == [201, 201], [a.text for a in answers]
    versions = sorted(a.json()["version"] for a in answers)
    assert versions == [1, 2], versions
    stored: dict[tuple[int, int], str] = {}

    def both_visible_everywhere() -> bool:
        for g, gateway in enumerate(gateways):
            for version in versions:
                resp = Admin(gateway).schema(event_type, version)
                if resp.status_code != 200:
                    return False
                stored[(g, version)] = resp.json()["properties"][0]["name"]
        return True

    wait_until(both_visible_everywhere, 10, what="both versions on both gateways")
    assert stored[(0, 1)] == stored[(1, 1)] and stored[(0, 2)] == stored[(1, 2)], stored
    stored = {version: stored[(0, version)] for version in versions}
    assert sorted(stored.values()) == ["p0", "p1"], f"one PUT overwrote the other: {stored}"


def test_a_restart_keeps_a_source_disabled_through_the_api(names, start_gateway):
    """The bootstrap declares the source enabled; the API disables it; a gateway restarted with
    the same file keeps it disabled (the file's flag only applies when it creates the source)."""
    bootstrap = {"dataSources": [data_source(names.client_id, [names.write_key])], "eventSchemas": [VIEW_SCHEMA]}
    first = start_gateway(bootstrap=bootstrap)
    Admin(first).set_enabled(names.client_id, False)
    first.terminate()
    first.wait_exit(30)
    second = start_gateway(bootstrap=bootstrap)
    assert Admin(second).source(names.client_id)["enabled"] is False
    assert_error(post(second, {"events": [event(names.client_id)]}), 403, "data_source_disabled")
