"""Certificates: sign, verify, and detect any change; re-serialisation does not matter."""

from __future__ import annotations

import copy
import json
import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from licet import kernel
from tests.conftest import NOW


def issue(policy: kernel.Policy, signer: kernel.Signer, amount: int = 500) -> dict[str, Any]:
    body = {"principal": {"id": "a1", "role": "ops"}, "action": "payments.transfer",
            "resource": "/accounts/1", "args": {"amount": amount, "currency": "EUR"}}
    decision = kernel.decide(policy, body, now=NOW)
    return kernel.issue_certificate(decision, signer=signer, tenant="acme", issued_at=NOW,
                                    certificate_id=kernel.uuid7(NOW, os.urandom(10)))


def ok(cert: dict[str, Any], keys: list[kernel.PublicKey]) -> bool:
    return kernel.all_ok(kernel.verify_certificate(cert, keys))


def test_round_trip(payments: kernel.Policy, signer: kernel.Signer) -> None:
    cert = issue(payments, signer)
    assert cert["decision"] == "permit" and cert["tenant"] == "acme"
    assert cert["key_id"] == signer.key_id and cert["id"][14] == "7"  # UUIDv7
    assert ok(cert, [signer.public_key])


def test_whitespace_and_key_order_do_not_matter(payments: kernel.Policy, signer: kernel.Signer) -> None:
    cert = issue(payments, signer)
    reordered = json.loads(json.dumps(dict(reversed(list(cert.items()))), indent=4))
    assert ok(reordered, [signer.public_key])


def test_unknown_key_fails(payments: kernel.Policy, signer: kernel.Signer) -> None:
    cert = issue(payments, signer)
    checks = kernel.verify_certificate(cert, [kernel.Signer(os.urandom(32)).public_key])
    assert not kernel.all_ok(checks)
    assert "no public key with id" in next(c for c in checks if c.name == "signature").detail


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _paths(v, (*prefix, k))] or [prefix]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _paths(v, (*prefix, i))] or [prefix]
    return [prefix]


def _mutate(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if value is None:
        return 0
    return None


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_changed_field_fails_verification(data: st.DataObject) -> None:
    signer = kernel.Signer(os.urandom(32))
    from tests.conftest import PAYMENTS

    policy = kernel.load_policy(PAYMENTS)
    cert = issue(policy, signer, data.draw(st.integers(0, 3000)))
    path = data.draw(st.sampled_from(_paths(cert)))
    tampered = copy.deepcopy(cert)
    target = tampered
    for step in path[:-1]:
        target = target[step]
    if path:
        target[path[-1]] = _mutate(target[path[-1]])
    assert not ok(tampered, [signer.public_key]), f"changing {path} went unnoticed"


def test_missing_fields_are_reported(payments: kernel.Policy, signer: kernel.Signer) -> None:
    cert = issue(payments, signer)
    del cert["theorem_hash"]
    checks = kernel.verify_certificate(cert, [signer.public_key])
    assert [c.name for c in checks] == ["format"] and "theorem_hash" in checks[0].detail


def test_key_files_round_trip_and_reject_garbage(signer: kernel.Signer) -> None:
    again = kernel.parse_signer(json.dumps(signer.to_json()))
    assert again.key_id == signer.key_id
    assert kernel.parse_public_key(json.dumps(signer.public_key.to_json())) == signer.public_key
    with pytest.raises(kernel.LicetError):
        kernel.parse_public_key("not base64!")
    with pytest.raises(kernel.LicetError):
        kernel.parse_signer('{"type": "licet-ed25519-private-key", "seed": "AAAA"}')
