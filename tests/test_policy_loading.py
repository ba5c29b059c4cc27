"""Policy documents: valid ones load; invalid ones fail with file, line, column and field."""

from __future__ import annotations

import json

import pytest

from licet import kernel
from tests.conftest import PAYMENTS


def error_of(text: str) -> kernel.PolicyError:
    with pytest.raises(kernel.PolicyError) as info:
        kernel.load_policy(text, "p.yaml")
    return info.value


def test_payments_policy_loads(payments: kernel.Policy) -> None:
    assert payments.id == "payments-agent"
    assert [r.id for r in payments.rules][:2] == ["read-api", "transfer"]
    assert payments.types["args.amount"] == "number"
    assert payments.hash.startswith("sha256:")


def test_json_and_yaml_forms_hash_alike(payments: kernel.Policy) -> None:
    as_json = json.dumps(dict(payments.document))
    assert kernel.load_policy(as_json, "p.json").hash == payments.hash


@pytest.mark.parametrize(
    ("text", "line", "column", "field", "message"),
    [
        ("id: x\nrules:\n  - id: a\n    effect: permitt\n    action: x\n", 4, 5,
         "rules[0].effect", "must be one of"),
        ("id: x\nrules:\n  - id: a\n    effect: permit\n    action: x\n    whn: y\n", 6, 5,
         "rules[0].whn", "unknown field"),
        ("id: x\nrules:\n  - id: a\n    effect: permit\n    action: 'db.del*'\n", 5, 5,
         "rules[0].action", "whole segment"),
        ("id: x\nrules:\n  - id: a\n    effect: permit\n    action: a\n    when: 'args.x / 2 > 1'\n",
         6, 12, "rules[0].when", "operator / is not"),
        ("id: x\nrules:\n  - id: a\n    effect: permit\n    action: a\n    when: 'args.x.lower() == \"a\"'\n",
         6, 19, "rules[0].when", "method lower() is not"),
        ("id: x\nrules:\n  - id: a\n    effect: permit\n    action: a\n  - id: a\n    effect: forbid\n"
         "    action: b\n", 6, 5, "rules[1].id", "duplicate id"),
        ("id: x\nrules:\n  - id: a\n    effect: permit\n    action: a\n    approval: {quorum: 2}\n",
         6, 5, "rules[0].approval", "only require_approval"),
        ("id: x\nrules:\n  - id: a\n    effect: permit\n    action: a\n    resource: '/../x'\n",
         6, 5, "rules[0].resource", "climbs above the root"),
        ("id: x\ninvariants:\n  - {id: b, kind: budget, action: a, limit: 5}\n", 3, 5,
         "invariants[0]", "missing required field 'sum'"),
        ("id: x\nrules: {}\n", 2, 1, "rules", "must be a list"),
        ("id: x\nid: y\n", 2, 1, "id", "duplicate key"),
    ],
)
def test_errors_name_line_column_and_field(text: str, line: int, column: int, field: str,
                                           message: str) -> None:
    err = error_of(text)
    assert (err.file, err.line, err.column, err.field) == ("p.yaml", line, column, field)
    assert message in err.message
    assert err.render().startswith(f"p.yaml:{line}:{column}: {field}: ")


def test_type_conflicts_across_rules_are_errors() -> None:
    err = error_of("id: x\nrules:\n  - id: a\n    effect: permit\n    action: a\n    when: args.x == 1\n"
                   "  - id: b\n    effect: permit\n    action: a\n    when: args.x == 's'\n")
    assert "args.x is used as a string" in err.message
    assert err.line == 10


def test_untypable_comparison_is_an_error() -> None:
    err = error_of("id: x\nrules:\n  - id: a\n    effect: permit\n    action: a\n"
                   "    when: args.a == args.b\n")
    assert "cannot infer" in err.message


def test_yaml_12_booleans_and_aliases() -> None:
    policy = kernel.load_policy("id: x\ndescription: no\nrules: []\n", "p.yaml")
    assert policy.document["description"] == "no"
    err = error_of("id: x\nrules: &r []\ninvariants: *r\n")
    assert "aliases" in err.message


def test_invalid_yaml_reports_position() -> None:
    err = error_of("id: x\nrules: [\n")
    assert err.line >= 2 and "not valid YAML" in err.message


def test_same_document_same_hash_different_document_different_hash() -> None:
    a = kernel.load_policy(PAYMENTS, "a.yaml")
    b = kernel.load_policy(PAYMENTS.replace("limit: 5000", "limit: 5001"), "b.yaml")
    assert a.hash == kernel.load_policy(PAYMENTS, "c.yaml").hash
    assert a.hash != b.hash
