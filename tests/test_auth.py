"""Sign-in for people over real HTTP, on SQLite and PostgreSQL: invitations, passwords, TOTP and
backup codes, passkeys driven by a software authenticator, sessions, CSRF, throttling and the audit
trail of it all."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from passlib.context import CryptContext

from licet.server.auth import throttle
from licet.server.settings import Settings
from tests.authenticator import Authenticator
from tests.server_harness import ORIGIN, RP_ID, Person, Server, Tenant, run_sql


def sql(server: Server, statement: str, **params: Any) -> list[Any]:
    """Run one statement on the test server's database (what an attacker or the clock would change)."""
    return run_sql(server.database_url, statement, **params)


def login(server: Server, tenant: str, email: str, password: str, **extra: Any) -> httpx.Response:
    with server.client() as anonymous:
        return anonymous.post("/v1/auth/login", json={"tenant": tenant, "email": email, "password": password, **extra})


def audit_actions(tenant: Tenant) -> list[str]:
    with tenant.owner() as owner:
        return [e["action"] for e in owner.get("/v1/audit", params={"limit": 500}).json()["events"]]


# --- invitations and passwords ---------------------------------------------------------------------


def test_an_invitation_is_single_use_and_refuses_weak_passwords(server: Server, tenant: Tenant) -> None:
    with tenant.owner_session() as owner:
        made = owner.post("/v1/users", json={"email": "ana@example.com", "display_name": "Ana", "role": "auditor"})
    token = made.json()["invitation"]["token"]
    with server.client() as anonymous:
        for weak, why in (("short", "at least 12"), ("password1234", "guess"), ("ana@example.com1", "guess")):
            reply = anonymous.post("/v1/auth/invitations/accept", json={"token": token, "password": weak})
            assert reply.status_code == 422 and reply.json()["error"]["code"] == "weak_password", reply.text
            assert why in reply.json()["error"]["message"] and reply.json()["error"]["field"] == "password"
        ok = anonymous.post("/v1/auth/invitations/accept", json={"token": token, "password": "tangerine-orbit-42-glass"})
        assert ok.status_code == 201, ok.text
        again = anonymous.post("/v1/auth/invitations/accept", json={"token": token, "password": "another-long-phrase-9"})
        assert again.status_code == 400 and again.json()["error"]["code"] == "invalid_invitation"
    assert login(server, tenant.id, "ana@example.com", "tangerine-orbit-42-glass").status_code == 200
    assert login(server, tenant.id, "ana@example.com", "another-long-phrase-9").status_code == 401


def test_an_expired_or_reissued_invitation_is_refused(server: Server, tenant: Tenant) -> None:
    with tenant.owner_session() as owner:
        made = owner.post("/v1/users", json={"email": "bo@example.com", "display_name": "Bo", "role": "auditor"}).json()
        first = made["invitation"]["token"]
        second = owner.post(f"/v1/users/{made['user']['id']}/invitation").json()["invitation"]["token"]
    with server.client() as anonymous:
        reply = anonymous.post("/v1/auth/invitations/accept", json={"token": first, "password": "tangerine-orbit-42-x"})
        assert reply.status_code == 400, "a reissued invitation voids the earlier link"
        sql(server, "UPDATE invitations SET expires_at = :t WHERE user_id = :u",
            t=datetime.now(UTC) - timedelta(seconds=1), u=made["user"]["id"])
        reply = anonymous.post("/v1/auth/invitations/accept", json={"token": second, "password": "tangerine-orbit-42-x"})
        assert reply.status_code == 400 and reply.json()["error"]["code"] == "invalid_invitation"


def test_only_a_person_who_passed_mfa_adds_people(server: Server, tenant: Tenant) -> None:
    """An API key (even the owner's) cannot mint a person and so a way around step-up; nor can a
    session whose MFA is stale."""
    who = tenant.person("admin")
    body = {"email": "eve@example.com", "display_name": "Eve", "role": "owner"}
    with tenant.owner() as key:
        for path in ("/v1/users", f"/v1/users/{who.user_id}/invitation", f"/v1/users/{who.user_id}/disable"):
            reply = key.post(path, json=body if path == "/v1/users" else None)
            assert reply.status_code == 403 and reply.json()["error"]["code"] == "step_up_required", (path, reply.text)
    sql(server, "UPDATE user_sessions SET mfa_at = :t WHERE user_id = :u", t=datetime.now(UTC) - timedelta(hours=1),
        u=who.user_id)
    with who.client() as stale:
        assert stale.post("/v1/users", json={**body, "role": "auditor"}).json()["error"]["code"] == "step_up_required"
    with tenant.owner() as key:
        assert "eve@example.com" not in {u["email"] for u in key.get("/v1/users").json()["users"]}


def test_a_reset_invitation_signs_the_person_out_everywhere(server: Server, tenant: Tenant) -> None:
    who = tenant.person("approver")
    with tenant.owner_session() as owner:
        reset = owner.post(f"/v1/users/{who.user_id}/invitation").json()["invitation"]["token"]
    with who.client() as client:
        assert client.get("/v1/auth/me").status_code == 200  # the reset alone signs no one out
    with server.client() as anonymous:
        accepted = anonymous.post("/v1/auth/invitations/accept", json={"token": reset, "password": "new-phrase-for-88-x"})
        assert accepted.status_code == 201 and accepted.json()["session"]["stage"] == "mfa_pending"  # TOTP stays
    with who.client() as client:
        assert client.get("/v1/auth/me").status_code == 401
    assert login(server, tenant.id, who.email, who.password).status_code == 401


def test_a_disabled_person_is_signed_out_and_cannot_sign_in_until_enabled(server: Server, tenant: Tenant) -> None:
    who, admin = tenant.person("approver"), tenant.person("admin")
    with admin.client() as client:
        disabled = client.post(f"/v1/users/{who.user_id}/disable")
        assert disabled.status_code == 200 and disabled.json()["sessions_revoked"] == 1, disabled.text
        assert disabled.json()["user"]["disabled_at"] is not None
        owner_id = tenant.owner_person().user_id
        assert client.post(f"/v1/users/{owner_id}/disable").json()["error"]["code"] == "forbidden"
        assert client.post(f"/v1/users/{admin.user_id}/disable").json()["error"]["code"] == "own_account"
    with who.client() as client:
        assert client.get("/v1/auth/me").status_code == 401
    refused, unknown = (login(server, tenant.id, email, who.password) for email in (who.email, "nobody@example.com"))
    assert refused.status_code == unknown.status_code == 401 and refused.json() == unknown.json()
    with admin.client() as client:
        assert client.post(f"/v1/users/{who.user_id}/enable").json()["user"]["disabled_at"] is None
    assert login(server, tenant.id, who.email, who.password).json()["session"]["stage"] == "mfa_pending"
    assert {"user.disable", "user.enable"} <= set(audit_actions(tenant))


def test_login_rehashes_a_password_stored_with_older_parameters(server: Server, tenant: Tenant) -> None:
    who = tenant.person("auditor", mfa=False)
    weak = CryptContext(schemes=["argon2"], argon2__memory_cost=8192, argon2__rounds=1, argon2__parallelism=1)
    sql(server, "UPDATE users SET password_hash = :h WHERE id = :u", h=weak.hash(who.password), u=who.user_id)
    assert login(server, tenant.id, who.email, who.password).status_code == 200
    stored = sql(server, "SELECT password_hash FROM users WHERE id = :u", u=who.user_id)[0][0]
    assert "m=65536" in stored and "m=8192" not in stored
    assert login(server, tenant.id, who.email, who.password).status_code == 200


# --- throttling --------------------------------------------------------------------------------------


def test_brute_force_locks_the_account_and_unknown_users_look_the_same(server: Server, tenant: Tenant) -> None:
    who = tenant.person("approver", mfa=False)
    answers = {}
    for email in (who.email, "nobody-here@example.com"):
        seen = []
        for _ in range(5):
            reply = login(server, tenant.id, email, "not the password at all")
            seen.append((reply.status_code, reply.json()))
        locked = login(server, tenant.id, email, who.password)  # even the right password, while locked
        seen.append((locked.status_code, locked.json()["error"]["code"]))
        answers[email] = seen
    assert answers[who.email][:5] == [(401, {"error": {"code": "invalid_credentials", "message": answers[who.email][0][1][
        "error"]["message"], "field": None}})] * 5
    assert answers[who.email] == answers["nobody-here@example.com"], "an unknown account answers exactly the same"
    assert answers[who.email][5] == (429, "too_many_attempts")
    actions = audit_actions(tenant)
    assert actions.count("auth.login_failed") == 10 and actions.count("auth.lockout") == 2
    # The lock ends when its period does (moved here by the clock, not by waiting).
    sql(server, "UPDATE login_throttle SET locked_until = :t, window_start = :t WHERE scope = 'account'",
        t=datetime.now(UTC) - timedelta(hours=1))
    assert login(server, tenant.id, who.email, who.password).status_code == 200


def test_the_sweep_forgets_what_sign_in_can_no_longer_use(server: Server, tenant: Tenant) -> None:
    """Challenges and throttle rows are made by anyone, unauthenticated: once useless they are deleted,
    and nothing still usable is."""
    from licet.server.auth import housekeeping
    from licet.server.db import Database

    who = tenant.person("approver")
    old, fresh = (login(server, tenant.id, who.email, who.password).json() for _ in range(2))
    with server.client() as anonymous:
        spent, kept = (anonymous.post("/v1/auth/passkey/options", json={"tenant": tenant.id}).json()["challenge_id"]
                       for _ in range(2))
    ghost, live = f"{tenant.id}\nghost@example.com", f"{tenant.id}\nlive@example.com"
    for email in ("ghost@example.com", "live@example.com"):
        assert login(server, tenant.id, email, "not a password").status_code == 401
    past = datetime.now(UTC) - timedelta(days=2)
    sql(server, "UPDATE user_sessions SET expires_at = :t WHERE id = :i", t=past, i=old["session"]["id"])
    sql(server, "UPDATE webauthn_challenges SET expires_at = :t WHERE id = :i", t=past, i=spent)
    sql(server, "UPDATE login_throttle SET window_start = :t WHERE key = :k", t=past, k=ghost)

    async def purge() -> dict[str, int]:
        db = Database(server.database_url)
        try:
            async with db.write() as session:
                return await housekeeping.purge(session, Settings(data_dir=server.data_dir), datetime.now(UTC))
        finally:
            await db.dispose()

    assert min(asyncio.run(purge()).values()) >= 1
    assert [r[0] for r in sql(server, "SELECT id FROM user_sessions WHERE id IN (:a, :b)", a=old["session"]["id"],
                              b=fresh["session"]["id"])] == [fresh["session"]["id"]]
    assert [r[0] for r in sql(server, "SELECT id FROM webauthn_challenges WHERE id IN (:a, :b)", a=spent,
                              b=kept)] == [kept]
    assert [r[0] for r in sql(server, "SELECT key FROM login_throttle WHERE key IN (:a, :b)", a=ghost,
                              b=live)] == [live]


def test_failed_logins_answer_more_slowly(server: Server, tenant: Tenant) -> None:
    """Each failure waits twice as long as the last before answering (recorded with the failure)."""
    who = tenant.person("auditor", mfa=False)
    for _ in range(4):
        assert login(server, tenant.id, who.email, "wrong wrong wrong").status_code == 401
    with tenant.owner() as owner:
        events = owner.get("/v1/audit", params={"limit": 500}).json()["events"]
    failures = sorted((e["details"]["attempt"], e["details"]["delay_seconds"]) for e in events
                      if e["action"] == "auth.login_failed" and e["target"] == who.principal_id)
    assert failures == [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8)]


def test_the_source_address_lock_and_parallel_guesses(tmp_path: Path) -> None:
    """Many accounts tried from one address: the address locks, for every account; IPv6 counts by /64;
    an attempt is counted before it is checked, so parallel guesses cannot slip past the limit (run on
    the throttle itself, as the shared test servers raise the per-address limit)."""
    from licet.server import migrations
    from licet.server.db import Database

    url = f"sqlite+aiosqlite:///{tmp_path / 'licet.db'}"
    migrations.upgrade(url)
    settings = Settings(data_dir=tmp_path, source_lock_failures=3, login_lock_failures=100)

    async def tries(db: Database, who: throttle.Subject, now: datetime) -> str:
        try:
            async with db.write() as session:
                return str(await throttle.attempt(session, who, settings, now))
        except throttle.Locked:
            return "locked"

    async def run() -> list[str]:
        db = Database(url)
        now = datetime.now(UTC)
        try:
            seen = [await tries(db, throttle.account("t", f"user{i}@x", "2001:db8::1"), now) for i in range(2)]
            seen.append(await tries(db, throttle.account("t", "user2@x", "2001:db8::ffff"), now))  # same /64
            seen.append(await tries(db, throttle.account("t", "fresh@x", "2001:db8::2"), now))
            seen.append(await tries(db, throttle.account("t", "fresh@x", "2001:db8:1::2"), now))  # another /64
            later = now + timedelta(seconds=settings.login_lock_seconds + 1)
            seen.append(await tries(db, throttle.account("t", "fresh@x", "2001:db8::2"), later))
            burst = await asyncio.gather(*(tries(db, throttle.account("t", f"b{i}@x", "10.0.0.7"), now)
                                           for i in range(8)))
            seen.append(",".join(sorted(burst)))
            return seen
        finally:
            await db.dispose()

    assert asyncio.run(run()) == ["1", "1", "1", "locked", "1", "1", "1,1,1,locked,locked,locked,locked,locked"]


# --- TOTP and backup codes ---------------------------------------------------------------------------


def test_guessing_the_second_factor_locks_it_across_new_password_sign_ins(server: Server, tenant: Tenant) -> None:
    """A stolen password gives pending sessions; signing in again must not reset the count of wrong
    codes, which only a right code clears."""
    who = tenant.person("approver")
    for wrong in (2, 2, 1):
        token = _pending(server, tenant, who)
        with server.client(token) as client:
            for _ in range(wrong):
                assert client.post("/v1/auth/mfa/totp", json={"code": "000000"}).status_code == 401
    token = _pending(server, tenant, who)
    with server.client(token) as client:
        right = client.post("/v1/auth/mfa/totp", json={"code": who.backup_codes[0]})
        assert right.status_code == 429 and right.json()["error"]["code"] == "too_many_attempts", right.text
    assert "auth.lockout" in audit_actions(tenant)


def test_finishing_a_sign_in_replaces_the_session_token(server: Server, tenant: Tenant) -> None:
    """Session fixation: the half-signed-in token (and its CSRF token) stop working once MFA is passed;
    a step-up on a full session keeps its token."""
    who = tenant.person("approver")
    pending = login(server, tenant.id, who.email, who.password).json()
    with server.client(pending["token"]) as client:
        passed = client.post("/v1/auth/mfa/totp", json={"code": who.backup_codes[0]}).json()
        assert passed["session"]["id"] == pending["session"]["id"] and passed["session"]["stage"] == "active"
        assert passed["token"] != pending["token"] and passed["csrf_token"] != pending["csrf_token"]
        assert client.get("/v1/auth/me").status_code == 401
    with server.client(passed["token"]) as client:
        assert client.get("/v1/auth/me").json()["session"]["id"] == pending["session"]["id"]
        stepped = client.post("/v1/auth/mfa/totp", json={"code": who.backup_codes[1]}).json()
        assert "token" not in stepped and client.get("/v1/auth/me").status_code == 200
    cookie = login(server, tenant.id, who.email, who.password, use_cookie=True)
    with server.client() as browser:
        browser.cookies.set("licet_session", cookie.cookies["licet_session"])
        passed = browser.post("/v1/auth/mfa/totp", json={"code": who.backup_codes[2]},
                              headers={"X-CSRF-Token": cookie.json()["csrf_token"]})
        assert passed.status_code == 200 and "token" not in passed.json(), passed.text
        assert passed.cookies["licet_session"] != cookie.cookies["licet_session"]


def test_a_pending_session_expires_quickly(server: Server, tenant: Tenant) -> None:
    who = tenant.person("approver")
    token = _pending(server, tenant, who)
    sql(server, "UPDATE user_sessions SET created_at = :t WHERE token_hash = :h",
        t=datetime.now(UTC) - timedelta(minutes=6), h=__import__("hashlib").sha256(token.encode()).hexdigest())
    with server.client(token) as client:
        reply = client.post("/v1/auth/mfa/totp", json={"code": who.backup_codes[0]})
        assert reply.status_code == 401 and reply.json()["error"]["code"] == "session_expired"


def _pending(server: Server, tenant: Tenant, who: Person) -> str:
    reply = login(server, tenant.id, who.email, who.password)
    assert reply.status_code == 200 and reply.json()["session"]["stage"] == "mfa_pending", reply.text
    assert reply.json()["mfa_methods"] == ["totp"]
    return str(reply.json()["token"])


def test_totp_codes_are_single_use_and_bound_to_their_window(server: Server, tenant: Tenant) -> None:
    who = tenant.person("approver")
    token = _pending(server, tenant, who)
    with server.client(token) as client:
        assert client.get("/v1/policies").json()["error"]["code"] == "mfa_required"  # pending: nothing else
        stale = pyotp.TOTP(who.totp_secret).at(datetime.now(UTC) - timedelta(minutes=3))
        reply = client.post("/v1/auth/mfa/totp", json={"code": stale})
        assert reply.status_code == 401 and reply.json()["error"]["code"] == "invalid_code"
        # The next step's code: within the ±1 window, and later than the step the enrolment used.
        code = pyotp.TOTP(who.totp_secret).at(datetime.now(UTC) + timedelta(seconds=30))
        assert client.post("/v1/auth/mfa/totp", json={"code": code}).status_code == 200
    second = _pending(server, tenant, who)
    with server.client(second) as client:
        reply = client.post("/v1/auth/mfa/totp", json={"code": code})
        assert reply.status_code == 401 and reply.json()["error"]["code"] == "invalid_code", "a code is used once"
        passed = client.post("/v1/auth/mfa/totp", json={"code": who.backup_codes[0]})
        assert passed.status_code == 200
    with server.client(passed.json()["token"]) as client:
        assert client.get("/v1/policies").status_code == 200
    third = _pending(server, tenant, who)
    with server.client(third) as client:
        reply = client.post("/v1/auth/mfa/totp", json={"code": who.backup_codes[0].upper()})
        assert reply.status_code == 401, "a backup code is spent once used"
        passed = client.post("/v1/auth/mfa/totp", json={"code": who.backup_codes[1]})
    with server.client(passed.json()["token"]) as client:
        me = client.get("/v1/auth/me").json()
        assert me["backup_codes_left"] == 8 and me["session"]["mfa_at"] is not None


def test_backup_codes_can_be_replaced_and_totp_turned_off_only_after_recent_mfa(server: Server, tenant: Tenant) -> None:
    who = tenant.person("admin")
    with who.client() as client:
        fresh = client.post("/v1/auth/backup-codes")
        assert fresh.status_code == 200 and len(set(fresh.json()["backup_codes"])) == 10
    sql(server, "UPDATE user_sessions SET mfa_at = :t WHERE user_id = :u", t=datetime.now(UTC) - timedelta(hours=1),
        u=who.user_id)
    with who.client() as client:
        reply = client.delete("/v1/auth/totp")
        assert reply.status_code == 403 and reply.json()["error"]["code"] == "step_up_required"
        assert client.post("/v1/auth/mfa/totp", json={"code": fresh.json()["backup_codes"][0]}).status_code == 200
        assert client.delete("/v1/auth/totp").json()["mfa_methods"] == []
    second = _pending_or_active(server, tenant, who)
    assert second == "active"
    assert {"auth.totp_enabled", "auth.backup_codes_replaced", "auth.totp_disabled", "auth.mfa_passed"} <= set(
        audit_actions(tenant))


def _pending_or_active(server: Server, tenant: Tenant, who: Person) -> str:
    return str(login(server, tenant.id, who.email, who.password).json()["session"]["stage"])


def test_totp_enrolment_returns_a_scannable_uri_and_qr_code(server: Server, tenant: Tenant) -> None:
    who = tenant.person("auditor", mfa=False)
    with who.client() as client:
        enrol = client.post("/v1/auth/totp/enrol").json()
        assert enrol["otpauth_uri"].startswith("otpauth://totp/") and f"secret={enrol['secret']}" in enrol["otpauth_uri"]
        assert enrol["qr_svg"].startswith("<svg")
        wrong = client.post("/v1/auth/totp/confirm", json={"code": "123456" if pyotp.TOTP(enrol["secret"]).now()
                                                                    != "123456" else "654321"})
        assert wrong.status_code == 401
        assert client.get("/v1/auth/me").json()["mfa_methods"] == []  # not on until confirmed


def test_re_enrolling_totp_keeps_the_old_secret_until_the_new_one_is_confirmed(server: Server, tenant: Tenant) -> None:
    """A started enrolment changes nothing (an abandoned one leaves TOTP on); confirming it swaps the
    secret and retires the old backup codes."""
    who = tenant.person("approver")
    with who.client() as client:
        new = client.post("/v1/auth/totp/enrol").json()["secret"]
        assert client.get("/v1/auth/me").json()["mfa_methods"] == ["totp"]  # still on
    assert _pending_or_active(server, tenant, who) == "mfa_pending"
    with server.client(_pending(server, tenant, who)) as client:  # the old secret still signs in
        code = pyotp.TOTP(who.totp_secret).at(datetime.now(UTC) + timedelta(seconds=30))
        passed = client.post("/v1/auth/mfa/totp", json={"code": code})
        assert passed.status_code == 200
    with server.client(passed.json()["token"]) as client:
        confirmed = client.post("/v1/auth/totp/confirm", json={"code": pyotp.TOTP(new).now()})
        assert confirmed.status_code == 200, confirmed.text
    with server.client(_pending(server, tenant, who)) as client:
        old = pyotp.TOTP(who.totp_secret).at(datetime.now(UTC) + timedelta(seconds=60))
        if old != pyotp.TOTP(new).at(datetime.now(UTC) + timedelta(seconds=60)):
            assert client.post("/v1/auth/mfa/totp", json={"code": old}).status_code == 401
        assert client.post("/v1/auth/mfa/totp", json={"code": who.backup_codes[0]}).status_code == 401
        later = pyotp.TOTP(new).at(datetime.now(UTC) + timedelta(seconds=30))
        assert client.post("/v1/auth/mfa/totp", json={"code": later}).status_code == 200


# --- passkeys ----------------------------------------------------------------------------------------


def _register(who: Person, authenticator: Authenticator, **wrong: Any) -> httpx.Response:
    with who.client() as client:
        options = client.post("/v1/auth/passkeys/options").json()
        return client.post("/v1/auth/passkeys", json={
            "challenge_id": options["challenge_id"], "credential": authenticator.create(options["options"], **wrong),
            "name": "laptop"})


def _passkey_login(server: Server, tenant: Tenant, authenticator: Authenticator,
                   **wrong: Any) -> tuple[httpx.Response, dict[str, Any]]:
    with server.client() as anonymous:
        options = anonymous.post("/v1/auth/passkey/options", json={"tenant": tenant.id}).json()
        body = {"tenant": tenant.id, "challenge_id": options["challenge_id"],
                "credential": authenticator.get(options["options"], **wrong)}
        return anonymous.post("/v1/auth/passkey", json=body), body


def test_passkey_registration_and_sign_in_count_as_multi_factor(server: Server, tenant: Tenant) -> None:
    who = tenant.person("owner")
    device = Authenticator(RP_ID, ORIGIN)
    registered = _register(who, device)
    assert registered.status_code == 201, registered.text
    reply, _ = _passkey_login(server, tenant, device)
    assert reply.status_code == 200, reply.text
    assert reply.json()["session"]["mfa_at"] is not None and reply.json()["session"]["method"] == "passkey"
    with server.client(reply.json()["token"]) as client:  # step-up routes open
        made = client.post("/v1/keys", json={"name": "k", "role": "agent", "principal_id": "agent:k"})
        assert made.status_code == 201, made.text
        passkeys = client.get("/v1/auth/passkeys").json()["passkeys"]
        assert [p["name"] for p in passkeys] == ["laptop"] and passkeys[0]["last_used_at"] is not None
        renamed = client.patch(f"/v1/auth/passkeys/{passkeys[0]['id']}", json={"name": "work laptop"})
        assert renamed.json()["passkey"]["name"] == "work laptop"
    # A password sign-in now needs a second factor, which the passkey can be.
    pending = login(server, tenant.id, who.email, who.password).json()
    assert pending["session"]["stage"] == "mfa_pending" and set(pending["mfa_methods"]) == {"totp", "passkey"}
    with server.client(pending["token"]) as client:
        options = client.post("/v1/auth/mfa/passkey/options").json()
        passed = client.post("/v1/auth/mfa/passkey", json={"challenge_id": options["challenge_id"],
                                                           "credential": device.get(options["options"])})
        assert passed.status_code == 200, passed.text
    with server.client(passed.json()["token"]) as client:
        assert client.delete(f"/v1/auth/passkeys/{passkeys[0]['id']}").status_code == 200
    assert _passkey_login(server, tenant, device)[0].status_code == 401  # removed: unknown now
    assert {"auth.passkey_added", "auth.passkey_removed"} <= set(audit_actions(tenant))


def test_transport_hints_keep_only_what_webauthn_defines(server: Server, tenant: Tenant) -> None:
    """The browser's transport list is untrusted: junk in it is dropped, never stored or echoed."""
    who = tenant.person("approver")
    device = Authenticator(RP_ID, ORIGIN)
    with who.client() as client:
        options = client.post("/v1/auth/passkeys/options").json()
        credential = device.create(options["options"])
        credential["response"]["transports"] = ["usb", {"x": 1}, "bogus", ["nfc"], "usb", "hybrid"]
        added = client.post("/v1/auth/passkeys", json={"challenge_id": options["challenge_id"],
                                                       "credential": credential, "name": "key"})
        assert added.status_code == 201, added.text
        again = client.post("/v1/auth/passkeys/options").json()["options"]
    assert [c["transports"] for c in again["excludeCredentials"]] == [["hybrid", "usb"]]


def test_a_replayed_assertion_is_refused(server: Server, tenant: Tenant) -> None:
    who = tenant.person("approver")
    device = Authenticator(RP_ID, ORIGIN)
    assert _register(who, device).status_code == 201
    first, body = _passkey_login(server, tenant, device)
    assert first.status_code == 200
    with server.client() as anonymous:
        again = anonymous.post("/v1/auth/passkey", json=body)  # the same challenge, used
        assert again.status_code == 400 and again.json()["error"]["code"] == "invalid_challenge"
        options = anonymous.post("/v1/auth/passkey/options", json={"tenant": tenant.id}).json()
        elsewhere = anonymous.post("/v1/auth/passkey", json={**body, "challenge_id": options["challenge_id"]})
        assert elsewhere.status_code == 401 and "challenge" in elsewhere.json()["error"]["message"].lower()


@pytest.mark.parametrize("wrong", [{"origin": "https://evil.example"}, {"rp_id": "evil.example"}])
def test_a_wrong_origin_or_rp_id_is_refused(server: Server, tenant: Tenant, wrong: dict[str, str]) -> None:
    who = tenant.person("approver")
    registering = _register(who, Authenticator(RP_ID, ORIGIN), **wrong)
    assert registering.status_code == 400 and registering.json()["error"]["code"] == "invalid_credential"
    device = Authenticator(RP_ID, ORIGIN)
    assert _register(who, device).status_code == 201
    reply, _ = _passkey_login(server, tenant, device, **wrong)
    assert reply.status_code == 401 and reply.json()["error"]["code"] == "invalid_credential", reply.text
    assert ("origin" if "origin" in wrong else "rp id") in reply.json()["error"]["message"].lower()


def test_failed_passkey_sign_ins_lock_the_credential(server: Server, tenant: Tenant) -> None:
    """Assertions that do not verify count like wrong passwords: after the limit even a good one waits."""
    who = tenant.person("approver")
    device = Authenticator(RP_ID, ORIGIN)
    assert _register(who, device).status_code == 201
    for _ in range(5):  # LICET_LOGIN_LOCK_FAILURES
        reply, _ = _passkey_login(server, tenant, device, origin="https://evil.example")
        assert reply.status_code == 401, reply.text
    reply, _ = _passkey_login(server, tenant, device)
    assert reply.status_code == 429 and reply.json()["error"]["code"] == "too_many_attempts", reply.text
    other = Authenticator(RP_ID, ORIGIN)  # another passkey is not locked
    assert _register(who, other).status_code == 201
    assert _passkey_login(server, tenant, other)[0].status_code == 200


def test_a_cloned_authenticator_is_refused(server: Server, tenant: Tenant) -> None:
    who = tenant.person("approver")
    device = Authenticator(RP_ID, ORIGIN)
    assert _register(who, device).status_code == 201
    clone = device.clone()
    assert _passkey_login(server, tenant, device)[0].status_code == 200
    assert _passkey_login(server, tenant, device)[0].status_code == 200  # counter now 2
    reply, _ = _passkey_login(server, tenant, clone)  # the clone says 1
    assert reply.status_code == 401 and "sign count" in reply.json()["error"]["message"].lower(), reply.text
    assert "auth.passkey_failed" in audit_actions(tenant)


def test_an_unknown_credential_is_refused(server: Server, tenant: Tenant) -> None:
    reply, _ = _passkey_login(server, tenant, Authenticator(RP_ID, ORIGIN))
    assert reply.status_code == 401 and reply.json()["error"]["code"] == "invalid_credential"


# --- sessions ----------------------------------------------------------------------------------------


def test_expired_revoked_and_signed_out_sessions_stop_working(server: Server, tenant: Tenant) -> None:
    who = tenant.person("auditor", mfa=False)
    tokens = [login(server, tenant.id, who.email, who.password).json()["token"] for _ in range(4)]
    with server.client(tokens[0]) as first:
        listed = first.get("/v1/auth/sessions").json()["sessions"]
        assert len(listed) == 5 and sum(s["current"] for s in listed) == 1
        other = next(s["id"] for s in listed if not s["current"])
        assert first.delete(f"/v1/auth/sessions/{other}").status_code == 200
        assert first.post("/v1/auth/logout").status_code == 200
        assert first.get("/v1/auth/me").json()["error"]["code"] == "unauthenticated"
    sql(server, "UPDATE user_sessions SET last_seen_at = :t WHERE token_hash = :h",
        t=datetime.now(UTC) - timedelta(hours=2), h=__import__("hashlib").sha256(tokens[1].encode()).hexdigest())
    with server.client(tokens[1]) as idle:
        assert idle.get("/v1/auth/me").json()["error"]["code"] == "session_expired"
    with server.client(tokens[2]) as third:
        assert third.post("/v1/auth/logout-everywhere").json()["revoked"] >= 2
    for token in (tokens[2], tokens[3], who.token):
        with server.client(token) as client:
            assert client.get("/v1/auth/me").status_code == 401
    assert "auth.session_revoked" in audit_actions(tenant)


def test_the_absolute_limit_holds_however_active_the_session(server: Server, tenant: Tenant) -> None:
    who = tenant.person("auditor", mfa=False)
    sql(server, "UPDATE user_sessions SET expires_at = :t WHERE user_id = :u", t=datetime.now(UTC), u=who.user_id)
    with who.client() as client:
        assert client.get("/v1/auth/me").json()["error"]["code"] == "session_expired"


def test_a_session_sees_only_its_own_tenant(server: Server, tenant: Tenant) -> None:
    other = server.new_tenant()
    stranger = other.person("admin")
    with stranger.client() as client:
        assert sorted(u["email"] for u in client.get("/v1/users").json()["users"]) == sorted(
            [stranger.email, other.owner_email])
        assert client.get("/v1/audit").json()["events"][0]["actor"].startswith(("user:", "owner"))
        assert all(e.get("details", {}).get("role") != "x" for e in client.get("/v1/audit").json()["events"])
    # Its password does not open the same email in another tenant.
    assert login(server, tenant.id, stranger.email, stranger.password).status_code == 401


def test_cookie_sessions_need_the_csrf_token_for_writes(server: Server, tenant: Tenant) -> None:
    who = tenant.person("auditor", mfa=False)
    reply = login(server, tenant.id, who.email, who.password, use_cookie=True)
    assert "token" not in reply.json()
    cookie = reply.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    with server.client(cookies=reply.cookies) as browser:
        assert browser.get("/v1/auth/me").status_code == 200
        refused = browser.post("/v1/auth/logout")
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "csrf_failed"
        forged = browser.post("/v1/auth/logout", headers={"x-csrf-token": "forged"})
        assert forged.status_code == 403
        ok = browser.post("/v1/auth/logout", headers={"x-csrf-token": reply.json()["csrf_token"]})
        assert ok.status_code == 200
        assert browser.get("/v1/auth/me").status_code == 401


def test_changing_the_password_signs_out_the_other_sessions(server: Server, tenant: Tenant) -> None:
    who = tenant.person("auditor", mfa=False)
    other = login(server, tenant.id, who.email, who.password).json()["token"]
    with who.client() as client:
        wrong = client.post("/v1/auth/password", json={"current_password": "nope nope nope",
                                                       "new_password": "violet-harbour-77-drift"})
        assert wrong.status_code == 401
        changed = client.post("/v1/auth/password", json={"current_password": who.password,
                                                         "new_password": "violet-harbour-77-drift"})
        assert changed.status_code == 200 and changed.json()["sessions_revoked"] == 1
        assert client.get("/v1/auth/me").status_code == 200
    with server.client(other) as stale:
        assert stale.get("/v1/auth/me").status_code == 401
    assert login(server, tenant.id, who.email, "violet-harbour-77-drift").status_code == 200
