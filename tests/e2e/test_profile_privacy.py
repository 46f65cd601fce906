"""Profiles are private by default (issue 12, point 4): whoever holds a session id reads that
session's anonymous profile through /context, but an identified profile's data only with proof
of the identity (`profileIdHash`, an HMAC-SHA256 of the profile id under the data source's
identity secret, computed by the site's server). The exploit this closes, as Apache Unomi had
it before 3.1: name someone else's profile id in a session of your own, then read the context."""

from __future__ import annotations

import hashlib
import hmac
import time

from admin_support import Admin
from e2e_support import Creds, post, wait_until
from profile_support import CONVERGE_S, anon_id, context_ok, profile_bootstrap, view_event


def proof(secret: str, profile_id: str) -> str:
    return hmac.new(secret.encode(), profile_id.encode(), hashlib.sha256).hexdigest()


def test_an_identified_profile_is_read_only_with_proof_of_the_identity(names, start_gateway, start_worker):
    gateway = start_gateway(bootstrap=profile_bootstrap(names))
    start_worker()
    scope, alice = names.client_id, f"alice-{names.hex}@x.com"
    admin = Admin(gateway)
    resp = admin.post(f"/v1/datasources/{names.client_id}/identity-secret")
    assert resp.status_code == 201, resp.text
    secret = resp.json()["identitySecret"]
    assert admin.source(names.client_id)["identityVerification"] is True
    now = int(time.time() * 1000)

    # Alice, signed in on the site: her plan becomes a profile property.
    assert post(gateway, {"events": [view_event(scope, "s-alice", "a1", now, alice, plan="gold")]}).status_code == 200
    wait_until(lambda: admin.get(f"/v1/profiles/{alice}").json().get("properties", {}).get("plan") == "gold",
               CONVERGE_S, what="alice's plan in her profile")

    # The attacker: a session of their own that names alice's id.
    assert post(gateway, {"events": [view_event(scope, "s-evil", "e1", now + 1, alice)]}).status_code == 200
    wait_until(lambda: context_ok(gateway, session_id="s-evil")["profileId"] == alice, CONVERGE_S,
               what="the attacker's session merged into alice")
    stolen = context_ok(gateway, session_id="s-evil")
    assert stolen["redacted"] is True, stolen
    assert stolen["profileProperties"] == {} and stolen["profile"]["properties"] == {}, stolen
    assert stolen["profile"]["mergedIds"] == [] and stolen["profile"]["eventCount"] == 0, stolen

    # A proof under another secret, or of another id, does not open it.
    for wrong in (proof("not-the-secret", alice), proof(secret, "bob@x.com")):
        answer = context_ok(gateway, session_id="s-evil", path=f"/powehi/context?profileIdHash={wrong}")
        assert answer["redacted"] is True and answer["profileProperties"] == {}, answer

    # Alice's own page, whose server signed her id: her profile, whole.
    mine = context_ok(gateway, session_id="s-alice", path=f"/powehi/context?profileIdHash={proof(secret, alice)}")
    assert "redacted" not in mine, mine
    assert mine["profileProperties"]["plan"] == "gold" and mine["profile"]["eventCount"] >= 2, mine

    # An anonymous session reads its own profile without any proof.
    assert post(gateway, {"events": [view_event(scope, "s-anon", "n1", now, plan="trial")]}).status_code == 200
    wait_until(lambda: context_ok(gateway, session_id="s-anon")["profileProperties"].get("plan") == "trial",
               CONVERGE_S, what="the anonymous session's own property")
    anonymous = context_ok(gateway, session_id="s-anon")
    assert anonymous["profileId"] == anon_id(scope, "s-anon") and "redacted" not in anonymous, anonymous


def test_without_an_identity_secret_identified_profiles_are_never_read_through_context(
    names, start_gateway, start_worker
):
    bootstrap = profile_bootstrap(names)
    del bootstrap["dataSources"][0]["identitySecret"]
    gateway = start_gateway(bootstrap=bootstrap)
    start_worker()
    scope, alice = names.client_id, f"alice-{names.hex}@x.com"
    now = int(time.time() * 1000)
    assert post(gateway, {"events": [view_event(scope, "s-1", "a1", now, alice, plan="gold")]}).status_code == 200
    wait_until(lambda: context_ok(gateway, session_id="s-1")["profileId"] == alice, CONVERGE_S,
               what="the session identified")
    answer = context_ok(gateway, session_id="s-1", path=f"/powehi/context?profileIdHash={proof('', alice)}")
    assert answer["redacted"] is True and answer["profileProperties"] == {}, answer


def test_one_data_sources_key_cannot_read_anothers_sessions(names, start_gateway, start_worker):
    bootstrap = profile_bootstrap(names)
    other = {**bootstrap["dataSources"][0], "id": f"{names.client_id}-b", "writeKeys": [f"b-{names.write_key}"]}
    bootstrap["dataSources"].append(other)
    gateway = start_gateway(bootstrap=bootstrap)
    start_worker()
    scope = names.client_id
    now = int(time.time() * 1000)
    assert post(gateway, {"events": [view_event(scope, "s-1", "a1", now, plan="gold")]}).status_code == 200
    wait_until(lambda: context_ok(gateway, session_id="s-1")["profileProperties"].get("plan") == "gold",
               CONVERGE_S, what="source A's session profile")
    as_b = context_ok(gateway, session_id="s-1", creds=Creds(other["id"], other["writeKeys"][0]))
    assert as_b["profileId"] == anon_id(other["id"], "s-1"), as_b
    assert as_b["profileProperties"] == {} and as_b["profile"]["eventCount"] == 0, as_b
