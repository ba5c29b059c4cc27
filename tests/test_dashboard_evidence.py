"""The certificate viewer and the evidence log in a real browser (Debian's Chromium, Playwright) against
a real `licet serve --demo`: Verify is green for a real certificate and red, naming the failing check,
for one whose stored row was altered underneath; the evidence page shows the signed checkpoint and a
consistency check between two signed sizes passes; both pages fit a phone's width.

Its own server (module-scoped `demo` fixture from tests/test_dashboard.py); screenshots go to
`test-artifacts/screenshots/`."""

from __future__ import annotations

import json
import re
import shlex
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from tests.test_dashboard import Demo, browser, demo, playwright_api, shot, sign_in

__all__ = ["browser", "demo"]  # pytest fixtures, re-exported so this module gets its own server

expect = playwright_api.expect
# Each test signs in a different demo person: a TOTP code is good once, and the tests run within its step.


def _certificates(demo: Demo, **filters: Any) -> list[dict[str, Any]]:
    with demo.agent() as agent:
        listed = agent.get("/v1/certificates", params={"limit": 50, **filters})
    assert listed.status_code == 200, listed.text
    return list(listed.json()["certificates"])


def _checks(page: Any) -> dict[str, str]:
    """Each shown check's name and its class (check-ok or check-failed)."""
    rows = page.locator("#checks li.check")
    return {rows.nth(i).get_attribute("data-check"): ("ok" if "check-ok" in (rows.nth(i).get_attribute("class") or "")
                                                      else "failed") for i in range(rows.count())}


def _no_sideways_scroll(page: Any, path: str) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390 + 1, f"{path} scrolls sideways at 390 px ({width} px wide)"


def test_verify_is_green_for_a_real_certificate(browser: Any, demo: Demo, tmp_path: Path) -> None:
    permit = next(c for c in _certificates(demo, outcome="permit") if c["action"] == "payments.read")
    page = sign_in(browser, demo, "admin")
    page.goto(f"/certificate?id={permit['id']}")
    expect(page.locator("#certificate-decision")).to_have_text("permit", timeout=15_000)
    # The proof in words names the witnessing rule, its text from the stored version, and its facts.
    step = page.locator("#proof-steps .proof-step").first
    expect(step).to_contain_text(f"Rule {permit['rules'][0]} permits it")
    expect(step).to_contain_text("says:")
    # Every field of the certificate is shown.
    with demo.agent() as agent:
        stored = agent.get(f"/v1/certificates/{permit['id']}").json()["certificate"]
    shown = page.locator("#certificate-fields [data-field]")
    assert sorted(shown.nth(i).get_attribute("data-field") for i in range(shown.count())) == sorted(stored)
    page.click("#verify")
    expect(page.locator("#verdict")).to_contain_text("Verified: all", timeout=20_000)
    checks = _checks(page)
    for name in ("signature", "theorem_hash", "request_hash", "redecide", "checkpoint-signature", "inclusion"):
        assert checks.get(name) == "ok", checks
    # The bundle download is the API's tlog-proof, and the command checks it offline.
    href = page.locator("#download-bundle").get_attribute("href") or ""
    assert href.startswith("data:text/plain")
    command = page.locator("#verify-command").inner_text()
    assert command.startswith(f"licet verify certificate-{permit['id']}.json --public-key licet-public-key.json "
                              f"--bundle certificate-{permit['id']}.tlog-proof --log-key '")
    # The downloads and the command, run as shown in a folder of their own, pass offline.
    for link in ("#download-bundle", "#download-certificate", "#download-key", "#download-policy"):
        anchor = page.locator(link)
        url = anchor.get_attribute("href") or ""
        (tmp_path / (anchor.get_attribute("download") or "")).write_text(unquote(url.split(",", 1)[1]))
    args = shlex.split(command)
    assert args[0] == "licet"
    offline = subprocess.run([sys.executable, "-m", "licet", *args[1:], "--json"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=120)
    assert offline.returncode == 0, offline.stdout + offline.stderr
    ran = {c["check"] for c in json.loads(offline.stdout)["checks"]}
    assert {"signature", "inclusion", "redecide"} <= ran, ran
    shot(page, "certificate-verified-1280")
    page.context.close()


def test_verify_is_red_naming_the_check_when_the_stored_row_was_altered(browser: Any, demo: Demo) -> None:
    transfer = next(c for c in _certificates(demo, outcome="permit") if c["action"] == "payments.transfer")
    database = demo.log.parent / "licet.db"
    with sqlite3.connect(database) as db:
        (body,) = db.execute("SELECT body FROM certificates WHERE id = ?", (transfer["id"],)).fetchone()
        certificate = json.loads(body)
        certificate["request"]["args"]["amount"] += 1000
        db.execute("UPDATE certificates SET body = ? WHERE id = ?",
                   (json.dumps(certificate, separators=(",", ":")), transfer["id"]))
    # The API no longer builds a proof for it, and says why (the log's entry is the certificate as signed).
    with demo.agent() as agent:
        refused = agent.get(f"/v1/certificates/{transfer['id']}/proof")
    assert refused.status_code == 500 and refused.json()["error"]["code"] == "evidence_mismatch", refused.text
    assert f"log entry {transfer['log_index']}" in refused.json()["error"]["message"]
    page = sign_in(browser, demo, "owner")
    page.goto(f"/certificate?id={transfer['id']}")
    expect(page.locator("#certificate-decision")).to_have_text("permit", timeout=15_000)
    page.click("#verify")
    verdict = page.locator("#verdict")
    expect(verdict).to_contain_text("Verification failed", timeout=20_000)
    expect(verdict).to_contain_text("signature")
    assert verdict.get_attribute("role") == "alert"
    checks = _checks(page)
    assert checks["signature"] == "failed" and checks["request_hash"] == "failed", checks
    assert checks["theorem_hash"] == "ok", checks  # only the request was altered
    expect(page.locator("#checks li[data-check='inclusion']")).to_contain_text("evidence_mismatch")
    alarms = [json.loads(line) for line in demo.log.read_text().splitlines() if '"evidence_mismatch"' in line
              and line.startswith("{")]
    assert any(a["level"] == "error" and a["certificate_id"] == transfer["id"] for a in alarms), alarms
    shot(page, "certificate-altered-1280")
    page.context.close()


def test_the_evidence_log_shows_the_checkpoint_and_checks_consistency(browser: Any, demo: Demo) -> None:
    # Two signed sizes: the newest checkpoint now, and another after one more decision.
    with demo.agent() as agent:
        first = agent.get("/v1/evidence/checkpoint").json()
        decided = agent.post("/v1/decide", json={"action": "payments.read", "resource": "/accounts/acc-001"})
        assert decided.status_code == 200, decided.text
        second = agent.get("/v1/evidence/checkpoint").json()
    assert second["size"] > first["size"]
    page = sign_in(browser, demo, "ana")
    page.goto("/evidence")
    expect(page.locator("#checkpoint-size")).to_have_text(str(second["size"]), timeout=15_000)
    expect(page.locator("#checkpoint-origin")).to_have_text(second["origin"])
    expect(page.locator("#checkpoint-note")).to_contain_text(second["root_hash"])
    expect(page.locator("#checkpoint-checks li.check-ok")).to_have_attribute("data-check", "checkpoint-signature")
    # The checkpoints served list both sizes (as the API does, newest first); Show gives a size's note.
    with demo.agent() as agent:
        served = agent.get("/v1/evidence/checkpoints").json()["checkpoints"]
    assert [c["size"] for c in served][:1] == [second["size"]] and first["size"] in [c["size"] for c in served]
    assert [c["size"] for c in served] == sorted((c["size"] for c in served), reverse=True)
    rows = page.locator("#checkpoints-served li.served")
    expect(rows).to_have_count(len(served))
    page.locator(f"#checkpoints-served li[data-size='{first['size']}'] button").click()
    expect(page.locator("#lookup-note")).to_contain_text(first["root_hash"], timeout=15_000)
    page.fill("#consistency-first", str(first["size"]))
    page.fill("#consistency-second", str(second["size"]))
    page.click("#check-consistency")
    expect(page.locator("#consistency-verdict")).to_contain_text("Verified: all", timeout=15_000)
    expect(page.locator("#consistency-checks li[data-check='consistency']")).to_have_class(re.compile("check-ok"))
    assert page.locator("#consistency-proof li").count() >= 1
    # A size no checkpoint was signed at has no root to trust: red, saying so.
    page.fill("#consistency-first", str(first["size"] + 10_000))
    page.click("#check-consistency")
    expect(page.locator("#consistency-verdict")).to_contain_text("Verification failed", timeout=15_000)
    # Inclusion by certificate id, with a link to the viewer.
    certificate_id = decided.json()["certificate_id"]
    page.fill("#inclusion-id", certificate_id)
    page.click("#check-inclusion")
    expect(page.locator("#inclusion-verdict")).to_contain_text("Verified: all", timeout=15_000)
    expect(page.locator("#inclusion-link")).to_have_attribute("href", f"/certificate?id={certificate_id}")
    page.fill("#consistency-first", str(first["size"]))
    page.click("#check-consistency")
    expect(page.locator("#consistency-verdict")).to_contain_text("Verified: all", timeout=15_000)
    shot(page, "evidence-1280")
    page.click("#inclusion-link")
    expect(page.locator("#certificate-id")).to_have_text(certificate_id, timeout=15_000)
    # A certificate that does not exist (or that this person may not see) is the API's refusal, announced.
    page.goto("/certificate?id=no-such-certificate")
    expect(page.locator("#certificate-error")).to_contain_text("not_found", timeout=15_000)
    assert page.locator("#certificate-error").get_attribute("role") == "alert"
    page.context.close()


def test_the_pages_fit_a_phone_width(browser: Any, demo: Demo) -> None:
    certificate = _certificates(demo, outcome="deny")[0]
    page = sign_in(browser, demo, "ben", width=390)
    page.goto(f"/certificate?id={certificate['id']}")
    expect(page.locator("#certificate-decision")).to_have_text("deny", timeout=15_000)
    page.click("#verify")
    expect(page.locator("#verdict")).to_be_visible(timeout=20_000)
    _no_sideways_scroll(page, "/certificate")
    shot(page, "certificate-390")
    page.goto("/evidence")
    expect(page.locator("#checkpoint-note")).to_be_visible(timeout=15_000)
    _no_sideways_scroll(page, "/evidence")
    shot(page, "evidence-390")
    page.context.close()
