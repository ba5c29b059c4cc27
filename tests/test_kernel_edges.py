"""Kernel edge cases a mutation run showed untested (issue 27; docs/mutation.md).

Each test here fails on at least one small change to the kernel that no other test noticed: a
weakened pattern (`$` for `\\Z`), a deleted check, an off-by-one limit, a dropped report. Error
messages are compared whole where they are the interface (they name the field and the reason).
"""

from __future__ import annotations

import base64
import hashlib
import math
from typing import Any

import pytest

from licet import kernel
from licet.kernel.checkpoint import (
    Checkpoint,
    CheckpointError,
    check_consistency,
    check_origin,
    note_verifiers,
    origin_matches_tenant,
    parse_checkpoint,
    sign_checkpoint,
    tenant_origin,
    verify_checkpoint,
    verify_checkpoint_consistency,
)
from licet.kernel.globs import compile_glob, glob_problem
from licet.kernel.keys import PublicKey, Signer
from licet.kernel.log import MemoryLogStore, TransparencyLog, audit_log
from licet.kernel.merkle import (
    EMPTY_ROOT,
    CompactRange,
    ConsistencyProof,
    InclusionProof,
    ProofError,
    ProofPlan,
    consistency_proof,
    consistency_proof_ranges,
    fold_subtrees,
    inclusion_proof,
    inclusion_proof_ranges,
    leaf_hash,
    node_hash,
    root_at,
    root_from_inclusion_proof,
    subtree_ids,
    tree_hash,
    verify_consistency,
    verify_inclusion,
)
from licet.kernel.note import (
    Note,
    NoteError,
    NoteSigner,
    NoteVerifier,
    check_key_name,
    decode_base64,
    ed25519_key_hash,
    open_note,
    parse_note,
    parse_signer_key,
    parse_verifier_key,
    sign_note,
)
from licet.kernel.requests import casefolded, folded_for, has_control, normalise_request, normalise_resource
from tests.conftest import NOW

# --- actions and globs -------------------------------------------------------------------------------

DB_POLICY = """\
id: db
rules:
  - {id: any-db, effect: permit, action: ["db.*"]}
  - {id: no-delete, effect: forbid, action: [db.delete]}
"""


@pytest.mark.parametrize(
    "action",
    [
        "db.delete\n",
        "db\n",
        "db.delete\r",
        "\ndb.delete",
        "db.delete ",
        "db.dėlete",
        "",
        ".db",
        "db.",
        "db..delete",
        "db delete",
        "db/delete",
        "db.*",
        5,
        None,
    ],
)
def test_malformed_actions_are_invalid_never_decided(action: Any) -> None:
    policy = kernel.load_policy(DB_POLICY)
    with pytest.raises(kernel.InvalidRequest) as caught:
        kernel.decide(policy, {"action": action, "resource": "/t"}, now=NOW)
    assert str(caught.value) == "action: must be dot-separated segments of [A-Za-z0-9_-]"


@pytest.mark.parametrize("action", ["db", "db.delete", "Db-1.x_Y.z9"])
def test_well_formed_actions_are_accepted(action: str) -> None:
    assert normalise_request({"action": action, "resource": "/t"}).action == action


def test_db_delete_is_forbidden_under_a_db_wildcard_permit() -> None:
    policy = kernel.load_policy(DB_POLICY)
    assert kernel.decide(policy, {"action": "db.delete", "resource": "/t"}, now=NOW).outcome == "forbid"
    assert kernel.decide(policy, {"action": "db.read", "resource": "/t"}, now=NOW).outcome == "permit"


@pytest.mark.parametrize(
    ("pattern", "separator", "problem"),
    [
        ("", ".", "a pattern cannot be empty"),
        ("", "/", "a pattern cannot be empty"),
        ("db.dėlete", ".", "segment 'dėlete': action segments are [A-Za-z0-9_-]+, so it could never match"),
        ("x.y ", ".", "segment 'y ': action segments are [A-Za-z0-9_-]+, so it could never match"),
        ("x.y\n", ".", "segment 'y\\n': action segments are [A-Za-z0-9_-]+, so it could never match"),
        ("db..x", ".", "segment '': action segments are [A-Za-z0-9_-]+, so it could never match"),
        ("db.del*", ".", "segment 'del*': '*' must be a whole segment ('*' for one segment, '**' for any number)"),
        ("/a/b**", "/", "segment 'b**': '*' must be a whole segment ('*' for one segment, '**' for any number)"),
        ("/a/***", "/", "segment '***': '*' must be a whole segment ('*' for one segment, '**' for any number)"),
    ],
)
def test_glob_problems_are_named(pattern: str, separator: str, problem: str) -> None:
    assert glob_problem(pattern, separator) == problem


@pytest.mark.parametrize(
    ("pattern", "separator"),
    [
        ("db.*", "."),
        ("db.**", "."),
        ("**", "."),
        ("*.delete", "."),
        ("a-b_C9", "."),
        ("/dėlete/x y/**", "/"),
        ("/*", "/"),
        ("/**", "/"),
    ],
)
def test_valid_globs_have_no_problem(pattern: str, separator: str) -> None:
    assert glob_problem(pattern, separator) is None


@pytest.mark.parametrize("action", ["db.dėlete", "x.y ", "db.del*"])
def test_a_forbid_that_could_never_match_does_not_load(action: str) -> None:
    with pytest.raises(kernel.PolicyError) as caught:
        kernel.load_policy({"id": "p", "rules": [{"id": "r", "effect": "forbid", "action": [action]}]})
    assert caught.value.field == "rules[0].action[0]"


@pytest.mark.parametrize(
    ("pattern", "separator", "matching", "other"),
    [
        # `*` is exactly one non-empty segment.
        ("/api/*", "/", ["/api/x"], ["/api", "/api/x/y", "/api/", "/apix", "/x/api"]),
        ("*.delete", ".", ["db.delete", "x.delete"], ["delete", "a.b.delete", ".delete", "db.delete.x"]),
        ("*", ".", ["db"], ["", "db.x"]),
        # `**` is any number of segments, none included.
        ("/api/**", "/", ["/api", "/api/x", "/api/x/y/z"], ["/apix", "/ap", "/x/api"]),
        ("db.**", ".", ["db", "db.x", "db.x.y"], ["dbx", "x.db"]),
        ("**", ".", ["a", "a.b.c"], []),
        ("/**", "/", ["/", "/a", "/a/b"], []),
        # `**` in the middle backtracks: the last fixed segments must end the text.
        ("/**/b/c", "/", ["/b/c", "/a/b/c", "/a/b/b/c", "/b/b/c"], ["/a/b/c/d", "/a/c", "/b/c/b"]),
        ("/a/**/**/b", "/", ["/a/b", "/a/x/b", "/a/x/y/b"], ["/a", "/b/a", "/a/b/c"]),
        ("/a/**/*", "/", ["/a/x", "/a/x/y"], ["/a", "/b/x"]),
        ("/*/**/z", "/", ["/a/z", "/a/b/c/z"], ["/z", "/a/z/y"]),
        ("**.x.**", ".", ["x", "a.x", "x.b", "a.x.b.x"], ["a", "a.y.b"]),
        # A literal pattern matches only itself.
        ("db.read", ".", ["db.read"], ["db.reads", "db", "db.read.x", "DB.read"]),
    ],
)
def test_glob_examples(pattern: str, separator: str, matching: list[str], other: list[str]) -> None:
    glob = compile_glob(pattern, separator)
    for text in matching:
        assert glob.matches(text), (pattern, text)
    for text in other:
        assert not glob.matches(text), (pattern, text)


def test_glob_literal_prefix_and_literalness() -> None:
    assert compile_glob("/api/v1/*/x", "/").literal_prefix == ("", "api", "v1")
    assert compile_glob("db.**", ".").literal_prefix == ("db",)
    assert compile_glob("**", ".").literal_prefix == ()
    assert compile_glob("db.read", ".").literal_prefix == ("db", "read")
    assert compile_glob("db.read", ".").is_literal
    assert not compile_glob("db.*", ".").is_literal
    assert not compile_glob("db.**", ".").is_literal


# --- case folding ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "folded"),
    [
        ("STRASSE", "strasse"),
        ("Straße", "strasse"),  # full folding: ß is ss (lower() keeps ß)
        ("ǅ", "ǆ"),  # title case
        ("ΣΑΣ", "σασ"),  # no final-sigma special case in folding
        ("ﬃ", "ffi"),
        ("\u212b", "\u00e5"),  # ANGSTROM SIGN folds to å, kept in NFC
        ("A\u030a", "\u00e5"),  # decomposed Å: folded and composed
        ("İ", "i\u0307"),
        ("already", "already"),
    ],
)
def test_casefolding_examples(text: str, folded: str) -> None:
    assert casefolded(text) == folded


def test_folding_applies_to_the_path_only_when_asked() -> None:
    raw = {"action": "a.b", "resource": "HTTPS://Example.COM/Docs/Straße"}
    kept = normalise_request(raw)
    assert kept.resource == "https://example.com/Docs/Straße" and not kept.case_folded
    folded = normalise_request(raw, fold_case=True)
    assert folded.resource == "https://example.com/docs/strasse" and folded.case_folded
    assert folded_for(kept, True) == folded
    assert folded_for(kept, False) is kept and folded_for(folded, True) is folded
    with pytest.raises(kernel.InvalidRequest) as caught:
        folded_for(folded, False)
    assert str(caught.value) == (
        "resource: was case-folded for a case-insensitive policy; normalise the raw request for this case-sensitive one"
    )


def test_case_insensitive_policy_matches_folded_resources() -> None:
    policy = kernel.load_policy(
        {
            "id": "p",
            "resource_case": "insensitive",
            "rules": [{"id": "r", "effect": "permit", "action": "**", "resource": "/Docs/STRASSE/*"}],
        }
    )
    for resource in ("/docs/straße/x", "/DOCS/Strasse/Y", "/Docs/STRASSE/ﬃ"):
        assert kernel.decide(policy, {"action": "a.b", "resource": resource}, now=NOW).outcome == "permit", resource
    assert kernel.decide(policy, {"action": "a.b", "resource": "/docs/strase/x"}, now=NOW).outcome == "deny"


# --- request validation ------------------------------------------------------------------------------


@pytest.mark.parametrize("char", ["\x00", "\x09", "\x1f", "\x7f", "\x80", "\x85", "\x9f"])
def test_control_characters_and_del_are_refused_in_resources(char: str) -> None:
    assert has_control(f"a{char}b")
    with pytest.raises(kernel.InvalidRequest) as caught:
        normalise_request({"action": "a.b", "resource": f"/a{char}b"})
    assert str(caught.value) == "resource: contains control characters"
    escaped = "%" + char.encode().hex().upper() if ord(char) < 0x80 else None
    if escaped:  # a decoded control character is refused too
        with pytest.raises(kernel.InvalidRequest, match="control characters"):
            normalise_request({"action": "a.b", "resource": f"/a{escaped}b"})


@pytest.mark.parametrize("char", [" ", "~", "\xa0", "é", "\u2028", "\U0001f600"])
def test_printable_neighbours_of_the_control_ranges_are_kept(char: str) -> None:
    assert not has_control(char)
    assert normalise_request({"action": "a.b", "resource": f"/a{char}b"}).resource == f"/a{char}b"


SURROGATE_REQUESTS = [
    ({"action": "a.b", "resource": "/a\ud800"}, "resource: contains a lone surrogate"),
    ({"action": "a.b", "resource": "/\udfff"}, "resource: contains a lone surrogate"),
    ({"action": "a.b", "resource": "/a", "args": {"s": "x\udc00"}}, "args.s: contains a lone surrogate"),
    ({"action": "a.b", "resource": "/a", "args": {"l": ["ok", "\ud83d"]}}, "args.l[1]: contains a lone surrogate"),
    ({"action": "a.b", "resource": "/a", "principal": {"\ud800k": 1}}, "principal: a key contains a lone surrogate"),
    ({"action": "a.b", "resource": "/a", "context": {"x": {"y": "\udbff"}}}, "context.x.y: contains a lone surrogate"),
]


@pytest.mark.parametrize(("raw", "message"), SURROGATE_REQUESTS)
def test_lone_surrogates_are_refused(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(kernel.InvalidRequest) as caught:
        normalise_request(raw)
    assert str(caught.value) == message


def test_neighbours_of_the_surrogate_range_are_accepted() -> None:
    for char in ("\ud7ff", "\ue000", "\U0001f600"):
        request = normalise_request({"action": "a.b", "resource": f"/{char}", "args": {char: char}})
        assert request.resource == f"/{char}" and request.args == {char: char}


def _nested_lists(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


def _nested_objects(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"k": value}
    return value


@pytest.mark.parametrize("nest", [_nested_lists, _nested_objects])
@pytest.mark.parametrize("part", ["args", "principal", "context"])
def test_nesting_limit_is_32_levels(nest: Any, part: str) -> None:
    # `part` itself is level 0; 31 more containers inside it reach level 31 and their value level 32.
    accepted = normalise_request({"action": "a.b", "resource": "/", part: {"v": nest(31)}})
    assert getattr(accepted, part) == {"v": nest(31)}
    with pytest.raises(kernel.InvalidRequest) as caught:
        normalise_request({"action": "a.b", "resource": "/", part: {"v": nest(32)}})
    assert caught.value.message == "nested too deeply (more than 32 levels)"
    assert caught.value.field.startswith(f"{part}.v")


@pytest.mark.parametrize("nest", [_nested_lists, _nested_objects])
def test_5000_levels_are_a_clean_error(nest: Any) -> None:
    with pytest.raises(kernel.InvalidRequest, match="nested too deeply"):
        normalise_request({"action": "a.b", "resource": "/", "args": {"v": nest(5000)}})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([], "request: must be a JSON object"),
        (
            {"action": "a.b", "resource": "/", "extra": 1, "more": 2},
            "extra: unknown request field (expected principal, action, resource, args, context)",
        ),
        ({"action": "a.b", "resource": "/", "args": []}, "args: must be a JSON object"),
        ({"action": "a.b", "resource": "/", "principal": "me"}, "principal: must be a JSON object"),
        ({"action": "a.b", "resource": "/", "context": None}, "context: must be a JSON object"),
        ({"action": "a.b", "resource": "/", "args": {"n": 2**53}}, "args.n: integer outside ±(2^53-1)"),
        ({"action": "a.b", "resource": "/", "args": {"n": -(2**53)}}, "args.n: integer outside ±(2^53-1)"),
        ({"action": "a.b", "resource": "/", "args": {"n": math.inf}}, "args.n: number is not finite"),
        ({"action": "a.b", "resource": "/", "args": {"n": math.nan}}, "args.n: number is not finite"),
        ({"action": "a.b", "resource": "/", "args": {"n": 2.0**53}}, "args.n: number outside ±(2^53-1)"),
        ({"action": "a.b", "resource": "/", "args": {"n": -(2.0**53)}}, "args.n: number outside ±(2^53-1)"),
        ({"action": "a.b", "resource": "/", "args": {"o": {1: "x"}}}, "args.o: object keys must be strings"),
        ({"action": "a.b", "resource": "/", "args": {"t": (1, 2)}}, "args.t: unsupported value of type tuple"),
        ({"action": "a.b", "resource": "/", "args": {"b": b"x"}}, "args.b: unsupported value of type bytes"),
        ({"action": "a.b"}, "resource: must be a non-empty string"),
        ({"action": "a.b", "resource": ""}, "resource: must be a non-empty string"),
        ({"action": "a.b", "resource": "a/b"}, "resource: must be an absolute path (/...) or a URI (scheme://...)"),
        ({"action": "a.b", "resource": "/a/../.."}, "resource: path climbs above the root ('..')"),
        ({"action": "a.b", "resource": "/%ff"}, "resource: percent-escapes do not decode to UTF-8"),
        (
            {"action": "a.b", "resource": "/%252e"},
            "resource: holds the percent-escape '%2e' after decoding once (a double-encoded resource)",
        ),
        ({"action": "a.b", "resource": "https:///x"}, "resource: URI has an empty authority"),
    ],
)
def test_invalid_requests_name_field_and_reason(raw: Any, message: str) -> None:
    with pytest.raises(kernel.InvalidRequest) as caught:
        normalise_request(raw)
    assert str(caught.value) == message


def test_number_limits_are_inclusive() -> None:
    edge = 2**53 - 1
    args = {"i": edge, "j": -edge, "f": float(edge), "g": -float(edge), "b": True, "z": None, "s": ""}
    assert normalise_request({"action": "a.b", "resource": "/", "args": args}).args == args


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("/a//b/./c/", "/a/b/c"),
        ("\\a\\b", "/a/b"),
        ("/a/b/..", "/a"),
        ("/", "/"),
        ("/a%20b/%C3%A9", "/a b/é"),
        ("HTTPS://Host.Example", "https://host.example/"),
        ("https://h?q=1", "https://h/?q=1"),
        ("s3://Bucket/Key/../x", "s3://bucket/x"),
    ],
)
def test_resource_normal_forms(raw: str, normal: str) -> None:
    assert normalise_resource(raw) == normal


def test_escapes_are_kept_when_the_policy_says_so() -> None:
    with pytest.raises(kernel.InvalidRequest, match="double-encoded"):
        normalise_resource("/a%252e")  # by default, an escape left after decoding once is refused
    assert normalise_resource("/a%252e", keep_escapes=True) == "/a%2e"
    assert normalise_resource("/a%2e", decode=False) == "/a%2e"


# --- Merkle ------------------------------------------------------------------------------------------

LEAVES = [f"entry {i}".encode() for i in range(70)]
HASHES = [leaf_hash(x) for x in LEAVES]


def _nodes(count: int) -> dict[tuple[int, int], bytes]:
    completed: list[tuple[int, int, bytes]] = []
    CompactRange().extend(HASHES[:count], completed)
    return {(level, index): value for level, index, value in completed}


def _reader(count: int) -> Any:
    nodes = _nodes(count)
    return lambda ids: [nodes[i] for i in ids]


def test_push_subtree_reports_every_node_it_completes() -> None:
    for size, level in [(12, 2), (0, 3), (8, 3), (6, 1), (7, 0), (48, 4)]:
        frontier = CompactRange()
        frontier.extend(HASHES[:size])
        completed: list[tuple[int, int, bytes]] = []
        subtree = fold_subtrees([_nodes(size + (1 << level))[(level, size >> level)]])
        frontier.push_subtree(level, subtree, completed)
        expected = {
            (lv, i): v
            for (lv, i), v in _nodes(size + (1 << level)).items()
            if lv > level and (i << lv) + (1 << lv) == size + (1 << level)
        }
        assert {(lv, i): v for lv, i, v in completed} == expected, (size, level)
        assert frontier.root() == tree_hash(LEAVES[: size + (1 << level)])
    assert len(expected) == 2  # (48, 4) completes (5, 1) and (6, 0)


def test_push_subtree_rejects_misaligned_and_negative_levels() -> None:
    frontier = CompactRange(1, HASHES[:1])
    for level in (1, 2, -1):
        with pytest.raises(ValueError, match=f"a subtree of level {level} cannot start at leaf 1"):
            frontier.push_subtree(level, HASHES[1])
    assert frontier.size == 1 and frontier.hashes == (HASHES[0],)


def _log(count: int) -> tuple[MemoryLogStore, TransparencyLog]:
    store = MemoryLogStore()
    log = TransparencyLog(store, "licet.example/licet/acme")
    log.append_many(LEAVES[:count])
    return store, log


@pytest.mark.parametrize("chunk_level", [2, 13])
def test_an_audit_finds_a_zeroed_stored_node_above_the_chunks(chunk_level: int) -> None:
    store, _ = _log(64)
    assert audit_log(store, chunk_level=chunk_level).ok
    store._levels[5][0:32] = bytes(32)  # node (5, 0): above every chunk of 4 entries
    report = audit_log(store, chunk_level=chunk_level)
    assert not report.ok
    assert any("stored subtree hash (5, 0) over entries 0..31" in p for p in report.problems), report.problems


def test_consistency_from_and_at_size_zero() -> None:
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    ConsistencyProof(0, 0, ()).verify(EMPTY_ROOT, EMPTY_ROOT)
    for n in range(6):
        assert consistency_proof_ranges(0, n) == []
        assert consistency_proof_ranges(n, n) == []
        assert consistency_proof(0, n, _reader(n)).hashes == ()
    other = tree_hash(LEAVES[:1])
    for old, new, message in [
        (EMPTY_ROOT, other, "a tree of size 0 must have the empty-tree root"),
        (other, EMPTY_ROOT, "a tree of size 0 must have the empty-tree root"),
        (other, other, "a tree of size 0 must have the empty-tree root"),
    ]:
        with pytest.raises(ProofError) as caught:
            verify_consistency(0, 0, old, new, [])
        assert str(caught.value) == message
    with pytest.raises(ProofError) as caught:
        verify_consistency(0, 1, EMPTY_ROOT, other, [])
    assert str(caught.value) == "no consistency proof exists from the empty tree: it extends anything"
    with pytest.raises(ProofError) as caught:
        verify_consistency(3, 3, other, other, [other])
    assert str(caught.value) == "sizes are equal (3) but the consistency proof is not empty"
    verify_consistency(3, 3, other, other, [])


@pytest.mark.parametrize(("old", "new"), [(-1, 3), (4, 3), (1, 0)])
def test_impossible_consistency_ranges_are_refused(old: int, new: int) -> None:
    with pytest.raises(ProofError) as caught:
        consistency_proof_ranges(old, new)
    assert str(caught.value) == f"no consistency proof from size {old} to size {new}"


def test_consistency_ranges_examples() -> None:
    # RFC 9162 §2.1.4.3's example tree of 7 leaves.
    assert consistency_proof_ranges(3, 7) == [(2, 3), (3, 4), (0, 2), (4, 7)]
    assert consistency_proof_ranges(4, 7) == [(4, 7)]
    assert consistency_proof_ranges(6, 7) == [(4, 6), (6, 7), (0, 4)]
    assert consistency_proof_ranges(1, 2) == [(1, 2)]


def test_inclusion_ranges_examples() -> None:
    assert inclusion_proof_ranges(0, 7) == [(1, 2), (2, 4), (4, 7)]
    assert inclusion_proof_ranges(6, 7) == [(4, 6), (0, 4)]
    assert inclusion_proof_ranges(3, 7) == [(2, 3), (0, 2), (4, 7)]
    assert inclusion_proof_ranges(0, 1) == []


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 13, 64])
def test_negative_and_out_of_range_indices_are_refused(size: int) -> None:
    root = tree_hash(LEAVES[:size])
    last = inclusion_proof(size - 1, size, _reader(size))
    for index in (-1, -size, size, size + 1):
        with pytest.raises(ProofError):
            verify_inclusion(index, size, HASHES[size - 1], last.hashes, root)
        with pytest.raises(ProofError):
            root_from_inclusion_proof(index, size, HASHES[size - 1], last.hashes)
        with pytest.raises(ProofError):
            inclusion_proof(index, size, _reader(size))
    with pytest.raises(ProofError) as caught:
        inclusion_proof_ranges(size, size)
    assert str(caught.value) == f"leaf index {size} is outside a tree of size {size}"
    with pytest.raises(ProofError) as caught:
        root_from_inclusion_proof(-1, size, HASHES[0], last.hashes)
    assert str(caught.value) == f"negative leaf index or tree size (-1, {size})"
    with pytest.raises(ProofError) as caught:
        root_from_inclusion_proof(0, -1, HASHES[0], [])
    assert str(caught.value) == "negative leaf index or tree size (0, -1)"
    with pytest.raises(ProofError) as caught:  # an empty tree has no leaf to prove, and it is not negative
        root_from_inclusion_proof(0, 0, HASHES[0], [])
    assert str(caught.value) == "leaf index 0 is outside a tree of size 0"


def test_proof_objects_verify_and_compute_roots() -> None:
    read = _reader(13)
    root = tree_hash(LEAVES[:13])
    proof = inclusion_proof(5, 13, read)
    assert isinstance(proof, InclusionProof) and (proof.index, proof.size) == (5, 13)
    assert proof.root_for(HASHES[5]) == root
    assert proof.root_for(HASHES[6]) != root
    proof.verify(HASHES[5], root)
    with pytest.raises(ProofError, match="leads to root"):
        proof.verify(HASHES[6], root)
    with pytest.raises(ProofError) as caught:
        proof.root_for(HASHES[5][:31])
    assert str(caught.value) == "leaf hash is 31 bytes, not 32"
    consistency = consistency_proof(5, 13, read)
    assert (consistency.old_size, consistency.new_size) == (5, 13)
    consistency.verify(tree_hash(LEAVES[:5]), root)
    with pytest.raises(ProofError, match="old root"):
        consistency.verify(tree_hash(LEAVES[:4]), root)
    with pytest.raises(ProofError, match="new root"):
        consistency.verify(tree_hash(LEAVES[:5]), tree_hash(LEAVES[:12]))


def test_proof_length_errors_are_named() -> None:
    read = _reader(13)
    proof = inclusion_proof(5, 13, read).hashes
    with pytest.raises(ProofError) as caught:
        root_from_inclusion_proof(5, 13, HASHES[5], (*proof, proof[0]))
    assert str(caught.value) == f"inclusion proof too long: {len(proof) + 1} hashes for leaf 5 of 13"
    with pytest.raises(ProofError) as caught:
        root_from_inclusion_proof(5, 13, HASHES[5], proof[:-1])
    assert str(caught.value) == f"inclusion proof too short: {len(proof) - 1} hashes for leaf 5 of 13"
    with pytest.raises(ProofError) as caught:
        root_from_inclusion_proof(5, 13, HASHES[5], (*proof[:-1], b"short"))
    assert str(caught.value) == f"inclusion proof[{len(proof) - 1}] is 5 bytes, not a 32-byte hash"
    cons = consistency_proof(5, 13, read).hashes
    old, new = tree_hash(LEAVES[:5]), tree_hash(LEAVES[:13])
    with pytest.raises(ProofError) as caught:
        verify_consistency(5, 13, old, new, (*cons, cons[0]))
    assert str(caught.value) == f"consistency proof too long: {len(cons) + 1} hashes for 5 -> 13"
    with pytest.raises(ProofError) as caught:
        verify_consistency(5, 13, old, new, cons[:-1])
    assert str(caught.value) == f"consistency proof too short: {len(cons) - 1} hashes for 5 -> 13"
    with pytest.raises(ProofError) as caught:
        verify_consistency(5, 13, old, new, [])
    assert str(caught.value) == "empty consistency proof from size 5 to 13"
    with pytest.raises(ProofError) as caught:
        verify_consistency(5, 13, old, new, (*cons[:-1], b"x" * 33))
    assert str(caught.value) == f"consistency proof[{len(cons) - 1}] is 33 bytes, not a 32-byte hash"
    with pytest.raises(ProofError) as caught:
        verify_consistency(-1, 13, old, new, cons)
    assert str(caught.value) == "negative tree size (-1, 13)"
    with pytest.raises(ProofError) as caught:
        verify_consistency(13, 5, new, old, cons)
    assert str(caught.value) == (
        "new tree size 5 is smaller than the old 13: the log shrank or the checkpoints are swapped"
    )


def test_consistency_with_a_power_of_two_old_size_and_a_single_hash() -> None:
    # Old size 4 of 8: the proof is the single right subtree; the old root starts the path.
    read = _reader(8)
    proof = consistency_proof(4, 8, read)
    assert proof.hashes == (_nodes(8)[(2, 1)],)
    proof.verify(tree_hash(LEAVES[:4]), tree_hash(LEAVES[:8]))
    proof_6 = consistency_proof(6, 8, read)
    proof_6.verify(tree_hash(LEAVES[:6]), tree_hash(LEAVES[:8]))
    with pytest.raises(ProofError):
        ConsistencyProof(4, 8, proof_6.hashes).verify(tree_hash(LEAVES[:4]), tree_hash(LEAVES[:8]))


def test_range_and_plan_helpers() -> None:
    with pytest.raises(ValueError, match=r"bad leaf range \[-1, 3\)"):
        subtree_ids(-1, 3)
    with pytest.raises(ValueError, match=r"bad leaf range \[4, 3\)"):
        subtree_ids(4, 3)
    with pytest.raises(ValueError, match=r"leaf range \[2, 6\) is not aligned"):
        subtree_ids(2, 6)
    assert subtree_ids(0, 0) == []
    assert fold_subtrees([]) == EMPTY_ROOT
    assert fold_subtrees([HASHES[0]]) == HASHES[0]
    assert fold_subtrees([HASHES[0], HASHES[1], HASHES[2]]) == node_hash(HASHES[0], node_hash(HASHES[1], HASHES[2]))
    assert root_at(0, _reader(0)) == EMPTY_ROOT
    plan = ProofPlan(((0, 0), (0, 1), (1, 1)), (1, 2))
    assert plan.assemble([HASHES[0], HASHES[1], HASHES[2]]) == (HASHES[0], node_hash(HASHES[1], HASHES[2]))
    with pytest.raises(ProofError) as caught:
        plan.assemble([HASHES[0]])
    assert str(caught.value) == "expected 3 node hashes, got 1"


def test_compact_range_construction() -> None:
    frontier = CompactRange(3, HASHES[:2])
    assert frontier.size == 3 and frontier.hashes == tuple(HASHES[:2])
    for size, hashes in [(-1, []), (3, HASHES[:1]), (4, HASHES[:2]), (0, HASHES[:1])]:
        with pytest.raises(ValueError, match=f"a compact range of size {size} has"):
            CompactRange(size, hashes)
    grown = CompactRange()
    completed: list[tuple[int, int, bytes]] = []
    grown.append(HASHES[0], completed)
    grown.append(HASHES[1], completed)
    assert completed == [(0, 0, HASHES[0]), (0, 1, HASHES[1]), (1, 0, node_hash(HASHES[0], HASHES[1]))]
    assert grown.root() == tree_hash(LEAVES[:2]) and grown.size == 2


# --- signed notes and checkpoints -------------------------------------------------------------------

SEED = bytes(range(32))
NAME = "licet.example/licet/acme"


def _signer(name: str = NAME, seed: bytes = SEED) -> NoteSigner:
    return NoteSigner(name, Signer(seed))


def _vkey(name: str, key_hash: int, material: bytes) -> str:
    return f"{name}+{key_hash:08x}+{base64.b64encode(material).decode()}"


def test_parse_verifier_key_checks_each_part() -> None:
    signer = _signer()
    raw = signer.verifier.public_key.raw
    good = signer.verifier.vkey()
    assert parse_verifier_key(good) == signer.verifier
    assert parse_verifier_key(f"  {good}\n") == signer.verifier
    key_hash = signer.key_hash
    material = base64.b64encode(b"\x01" + raw).decode()
    only_ed25519 = "verifier key: only Ed25519 keys (type 0x01, 32 bytes) are supported"
    bad_hash = "verifier key: key hash must be 8 lower-case hex digits"
    cases = [
        (NAME, "verifier key: expected <name>+<hex key hash>+<base64 key>"),
        (f"{NAME}+{key_hash:08x}", "verifier key: expected <name>+<hex key hash>+<base64 key>"),
        (_vkey("", key_hash, b"\x01" + raw), "key name is empty"),
        (_vkey("a b", key_hash, b"\x01" + raw), "key name 'a b' contains ' '"),
        (f"a b+zz+{material}", "key name 'a b' contains ' '"),  # the name is checked first
        (f"{NAME}+{key_hash:07x}+{material}", bad_hash),
        (f"{NAME}+{key_hash:09x}+{material}", bad_hash),
        (f"{NAME}+0AA5D9A6+{material}", bad_hash),  # the right hash in upper case
        (f"{NAME}+0000000g+{material}", bad_hash),
        (f"{NAME}+{key_hash:08x}+AQ=", "verifier key: not valid base64"),
        (_vkey(NAME, key_hash, raw), only_ed25519),
        (_vkey(NAME, key_hash, b"\x02" + raw), only_ed25519),
        (_vkey(NAME, key_hash, b"\x01" + raw + b"\x00"), only_ed25519),
        (
            _vkey(NAME, key_hash ^ 1, b"\x01" + raw),
            f"verifier key: key hash {key_hash ^ 1:08x} does not match the key and name",
        ),
        (
            _vkey("other.example", key_hash, b"\x01" + raw),
            f"verifier key: key hash {key_hash:08x} does not match the key and name",
        ),
    ]
    assert key_hash == 0x0AA5D9A6  # the upper-case case above is this key's hash
    for text, message in cases:
        with pytest.raises(NoteError) as caught:
            parse_verifier_key(text)
        assert str(caught.value) == message, text


def test_a_33_byte_key_of_another_type_is_not_ed25519() -> None:
    raw = _signer().verifier.public_key.raw
    # Type 0x02 with 32 key bytes: as long as an Ed25519 key, still refused.
    text = _vkey(NAME, ed25519_key_hash(NAME, raw), b"\x02" + raw)
    with pytest.raises(NoteError, match="only Ed25519 keys"):
        parse_verifier_key(text)


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("", None),
        ("a b", " "),
        ("a+b", "+"),
        ("a\tb", "\t"),
        ("a\x7fb", "\x7f"),
        ("a\x01b", "\x01"),
        ("a\u2003b", "\u2003"),
        ("a\nb", "\n"),
    ],
)
def test_check_key_name_refuses_empty_spaces_plus_and_controls(name: str, bad: str | None) -> None:
    with pytest.raises(NoteError) as caught:
        check_key_name(name)
    assert str(caught.value) == ("key name is empty" if bad is None else f"key name {name!r} contains {bad!r}")
    with pytest.raises(NoteError):
        NoteSigner(name, Signer(SEED))
    with pytest.raises(NoteError):
        NoteVerifier(name, Signer(SEED).public_key)


@pytest.mark.parametrize("name", ["a", "log.example/x", "é-ü", "a!#$%&'()*,-./:;<=>?@[]^_`{|}~"])
def test_check_key_name_accepts_other_printable_names(name: str) -> None:
    check_key_name(name)


def _skey(name: str, seed: bytes, key_hash: int | None = None, kind: int = 1) -> str:
    if key_hash is None:
        key_hash = ed25519_key_hash(name, Signer(seed).public_key.raw)
    return f"PRIVATE+KEY+{name}+{key_hash:08x}+{base64.b64encode(bytes([kind]) + seed).decode()}"


def test_parse_signer_key_checks_each_part() -> None:
    plus_seed = bytes([0xFB] * 32)  # its base64 is full of '+'
    signer = parse_signer_key(_skey("witness.example", plus_seed))
    assert signer.name == "witness.example" and signer.verifier == _signer("witness.example", plus_seed).verifier
    assert parse_signer_key(f"\n{_skey(NAME, SEED)}  ").verifier == _signer().verifier
    good = _skey(NAME, SEED)
    cases = [
        (good.removeprefix("PRIVATE+KEY+"), "signer key: expected PRIVATE+KEY+<name>+<hex key hash>+<base64 seed>"),
        (
            good.replace("PRIVATE+KEY+", "PUBLIC+KEY+"),
            "signer key: expected PRIVATE+KEY+<name>+<hex key hash>+<base64 seed>",
        ),
        (
            good.replace("PRIVATE+KEY+", "private+key+"),
            "signer key: expected PRIVATE+KEY+<name>+<hex key hash>+<base64 seed>",
        ),
        (f"PRIVATE+KEY+{NAME}+0aa5d9a6", "signer key: expected PRIVATE+KEY+<name>+<hex key hash>+<base64 seed>"),
        (f"PRIVATE+KEY+{NAME}+0aa5d9a6+AQ=", "signer key: not valid base64"),
        (_skey(NAME, SEED, kind=2), "signer key: only Ed25519 keys (type 0x01, 32-byte seed) are supported"),
        (_skey(NAME, SEED[:31], key_hash=0), "signer key: only Ed25519 keys (type 0x01, 32-byte seed) are supported"),
        (_skey(NAME, SEED, key_hash=0), "signer key: key hash 00000000 does not match the key and name"),
        (_skey("a b", SEED), "key name 'a b' contains ' '"),
    ]
    for text, message in cases:
        with pytest.raises(NoteError) as caught:
            parse_signer_key(text)
        assert str(caught.value) == message, text


def test_base64_must_be_canonical() -> None:
    assert decode_base64("AQID", "x") == b"\x01\x02\x03"
    assert decode_base64("+/8=", "x") == b"\xfb\xff"
    for text, message in [
        ("AQI", "x: not valid base64"),
        ("AQ-D", "x: not valid base64"),
        ("A Q==", "x: not valid base64"),
        ("AQJ=", "x: not canonical base64"),
        ("AR==", "x: not canonical base64"),
    ]:
        with pytest.raises(NoteError) as caught:
            decode_base64(text, "x")
        assert str(caught.value) == message


def test_a_note_signed_twice_by_one_key_is_refused() -> None:
    signer = _signer()
    note = sign_note("hello\n", [signer])
    twice = note + note.rpartition("\n\n")[2]
    with pytest.raises(NoteError) as caught:
        open_note(twice, [signer.verifier])
    assert str(caught.value) == f"note is signed twice by key {NAME}+{signer.key_hash:08x}"
    assert open_note(sign_note("hello\n", [signer, _signer("b", bytes(32))]), [signer.verifier]).verified_by == (
        signer.verifier,
    )


def test_note_verification_errors_are_named() -> None:
    signer, other = _signer(), _signer("other.example", bytes(32))
    note = sign_note("hello\n", [signer])
    with pytest.raises(NoteError) as caught:
        open_note(note, [other.verifier])
    assert str(caught.value) == f"note is not signed by any trusted key (signed by: {NAME}+{signer.key_hash:08x})"
    two = sign_note("hello\n", [signer, other])
    with pytest.raises(NoteError) as caught:
        open_note(two, [_signer("third.example", bytes([7]) * 32).verifier])
    assert str(caught.value) == (
        f"note is not signed by any trusted key (signed by: {NAME}+{signer.key_hash:08x}, "
        f"other.example+{other.key_hash:08x})"
    )
    opened = open_note(two, [other.verifier])
    assert opened.text == "hello\n" and opened.signatures == parse_note(two).signatures
    assert opened.verified_by == (other.verifier,)
    forged = note.replace("hello", "hellO")
    with pytest.raises(NoteError) as caught:
        open_note(forged, [signer.verifier])
    assert str(caught.value) == f"signature by key {NAME}+{signer.key_hash:08x} does not verify"
    assert signer.verifier.verify(b"hello\n", base64.b64decode(note.split(" ")[-1])[4:])
    assert not signer.verifier.verify(b"hellO\n", base64.b64decode(note.split(" ")[-1])[4:])
    assert str(signer.verifier) == signer.verifier.vkey()


@pytest.mark.parametrize(
    ("note", "message"),
    [
        (b"a\n\n\xff", "note is not valid UTF-8 (byte 3)"),
        ("a\x00\n\n— x AAAAAAA=\n", "note contains control character '\\x00' at offset 1"),
        ("a\n\n— x AAAAAAA=", "note does not end with a newline (truncated?)"),
        ("a\n— x AAAAAAA=\n", "note has no blank line before its signatures (truncated?)"),
        ("a\n\n\n", "note has no signature lines (truncated, or trailing blank line)"),
        ("a\n\n- x AAAAAAA=\n", "signature line 1 does not start with '— ' (trailing garbage?): '- x AAAAAAA='"),
        ("a\n\n— xAAAAAAA=\n", "signature line 1 has no signature after the key name"),
        ("a\n\n— x+y AAAAAAA=\n", "signature line 1: key name 'x+y' contains '+'"),
        ("a\n\n— x AAAAAA==\n", "signature line 1: signature is too short (4 bytes)"),
        ("a\n\n— x AAAA\n", "signature line 1: signature is too short (3 bytes)"),
        ("a\n\n— x AAAAAAA\n", "signature line 1: not valid base64"),
        # The name ends at the first space: what follows is the signature, spaces and all.
        ("a\n\n— x AAAAAAA= y\n", "signature line 1: not valid base64"),
        # A garbage line is quoted up to its 40th character.
        (
            "a\n\n" + "g" * 50 + "\n",
            "signature line 1 does not start with '— ' (trailing garbage?): '" + "g" * 40 + "'",
        ),
    ],
)
def test_malformed_notes_are_named(note: str | bytes, message: str) -> None:
    with pytest.raises(NoteError) as caught:
        parse_note(note)
    assert str(caught.value) == message


def test_note_parsing_keeps_text_and_signatures() -> None:
    note = parse_note("a\nb\n\n— x AAAAAAA=\n— y AAAAAQI=\n")
    assert note.text == "a\nb\n"
    assert parse_note("\n\n— x AAAAAAA=\n").text == "\n"  # the blank line may start the note
    assert [(s.name, s.key_hash, s.signature) for s in note.signatures] == [("x", 0, b"\x00"), ("y", 1, b"\x02")]
    assert len(parse_note("a\n\n" + "— x AAAAAAA=\n" * 64).signatures) == 64
    with pytest.raises(NoteError) as caught:
        parse_note("a\n\n" + "— x AAAAAAA=\n" * 65)
    assert str(caught.value) == "note has 65 signatures, more than 64"


def test_sign_note_refusals() -> None:
    with pytest.raises(NoteError) as caught:
        sign_note("a\n", [])
    assert str(caught.value) == "a note needs at least one signer"
    with pytest.raises(NoteError) as caught:
        sign_note("a", [_signer()])
    assert str(caught.value) == "note text must end with a newline"
    with pytest.raises(NoteError, match="control character"):
        sign_note("a\x01\n", [_signer()])


def test_signature_blob_is_key_hash_then_signature() -> None:
    signer = _signer()
    line = signer.signature_line("t\n")
    assert line.startswith(f"— {NAME} ") and line.endswith("\n")
    blob = base64.b64decode(line.split(" ")[2])
    digest = hashlib.sha256(NAME.encode() + b"\n\x01" + signer.verifier.public_key.raw).digest()
    assert blob[:4] == digest[:4] and len(blob) == 68
    assert Signer(SEED).public_key.verify(b"t\n", blob[4:])


def test_bare_public_keys_and_key_strings_as_log_keys() -> None:
    signer = _signer()
    note = sign_checkpoint(Checkpoint(NAME, 3, tree_hash(LEAVES[:3])), signer)
    parsed = parse_note(note)
    by_key = note_verifiers([signer.verifier.public_key], parsed)
    assert by_key == [NoteVerifier(NAME, signer.verifier.public_key)]
    assert note_verifiers([signer.verifier.vkey(), signer.verifier], parsed) == [signer.verifier] * 2
    with pytest.raises(CheckpointError) as caught:
        note_verifiers(["not a key"], parsed)
    assert str(caught.value) == "log key 'not a key': verifier key: expected <name>+<hex key hash>+<base64 key>"
    assert isinstance(signer.verifier.public_key, PublicKey)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"origin": ""}, "bad origin line ''"),
        ({"origin": "a\nb"}, "bad origin line 'a\\nb'"),
        ({"size": -1}, "tree size -1 out of range"),
        ({"size": 2**64}, f"tree size {2**64} out of range"),
        ({"root_hash": b"x" * 31}, "root hash is 31 bytes, not 32"),
        ({"extensions": ("",)}, "bad extension line ''"),
        ({"extensions": ("a\nb",)}, "bad extension line 'a\\nb'"),
    ],
)
def test_checkpoint_fields_are_checked(kwargs: dict[str, Any], message: str) -> None:
    fields: dict[str, Any] = {"origin": NAME, "size": 1, "root_hash": bytes(32), **kwargs}
    with pytest.raises(CheckpointError) as caught:
        Checkpoint(**fields)
    assert str(caught.value) == message


def test_checkpoint_errors_quote_their_input_to_a_limit() -> None:
    with pytest.raises(CheckpointError) as caught:
        note_verifiers(["k" * 70 + "+abcdef+AAAA"], Note("text\n", ()))
    assert str(caught.value) == f"log key {'k' * 60!r}: verifier key: key hash must be 8 lower-case hex digits"
    with pytest.raises(CheckpointError) as caught:
        Checkpoint.from_text(f"\n1\n{base64.b64encode(bytes(32)).decode()}\n")
    assert str(caught.value) == "checkpoint origin line is empty"


def test_checkpoint_limits_and_extensions_round_trip() -> None:
    for size in (0, 2**64 - 1):
        head = Checkpoint(NAME, size, bytes(32), ("ext one", "ext two"))
        assert Checkpoint.from_text(head.text()) == head
        assert head.text().endswith("\next one\next two\n")
    with pytest.raises(CheckpointError) as caught:
        Checkpoint.from_text(f"{NAME}\n1\n{base64.b64encode(bytes(32)).decode()}\n\n")
    assert str(caught.value) == "checkpoint has an empty extension line"
    with pytest.raises(CheckpointError) as caught:
        Checkpoint.from_text(f"{NAME}\n1\nAAA\n")
    assert str(caught.value) == "checkpoint root hash: not valid base64"
    with pytest.raises(CheckpointError) as caught:
        Checkpoint.from_text(f"{NAME}\n1\n{base64.b64encode(bytes(32)).decode()}")
    assert str(caught.value) == "checkpoint text does not end with a newline"


@pytest.mark.parametrize("origin", ["a\u2003b", "a\x7fb", "a\x1fb", "a\tb"])
def test_origins_refuse_spaces_and_controls(origin: str) -> None:
    with pytest.raises(CheckpointError) as caught:
        check_origin(origin)
    assert str(caught.value) == f"origin {origin!r} contains {origin[1]!r}"


def test_checkpoint_verification_of_bytes_and_mismatches() -> None:
    signer = _signer()
    head = Checkpoint(NAME, 3, tree_hash(LEAVES[:3]))
    note = sign_checkpoint(head, signer)
    signed = verify_checkpoint(note.encode(), [signer.verifier], origin=NAME, size=3, root_hash=head.root_hash)
    assert signed.note == note and signed.checkpoint == head and signed.verified_by == (signer.verifier,)
    assert parse_checkpoint(note.encode()) == head
    expectations: list[tuple[dict[str, Any], str]] = [
        ({"origin": "x"}, f"checkpoint is for log {NAME!r}, not the expected 'x'"),
        ({"size": 4}, "checkpoint is for tree size 3, not 4"),
        ({"root_hash": bytes(32)}, f"checkpoint root {head.root_hash.hex()} is not the expected {bytes(32).hex()}"),
    ]
    for kwargs, message in expectations:
        with pytest.raises(CheckpointError) as caught:
            verify_checkpoint(note, [signer.verifier], **kwargs)
        assert str(caught.value) == message
    with pytest.raises(CheckpointError) as caught:
        parse_checkpoint(note[:-1])
    assert str(caught.value) == "checkpoint note: note does not end with a newline (truncated?)"
    with pytest.raises(CheckpointError) as caught:
        verify_checkpoint(note, [_signer("other.example", bytes(32)).verifier])
    assert str(caught.value) == (
        f"checkpoint signature: note is not signed by any trusted key (signed by: {NAME}+{signer.key_hash:08x})"
    )


def test_consistency_checks_name_each_step() -> None:
    signer = _signer()
    store, log = _log(5)
    old = log.sign_checkpoint(signer)
    log.append_many(LEAVES[5:13])
    new = log.sign_checkpoint(signer)
    proof = log.consistency_proof(5, 13).hashes
    checks = check_consistency(old, new, proof, [signer.verifier], origin=NAME)
    vkey = signer.verifier.vkey()
    assert [(c.name, c.ok, c.detail) for c in checks] == [
        ("old-checkpoint", True, f"{NAME} size 5, signed by {vkey}"),
        ("new-checkpoint", True, f"{NAME} size 13, signed by {vkey}"),
        ("same-log", True, f"{NAME} and {NAME}"),
        ("not-smaller", True, "5 -> 13"),
        ("consistency", True, f"{len(proof)} hashes link the two roots"),
    ]
    witness = _signer("witness.example", bytes([9]) * 32)
    cosigned = sign_checkpoint(parse_checkpoint(new), [signer, witness])
    both = check_consistency(old, cosigned, proof, [signer.verifier, witness.verifier])
    assert both[1].detail == f"{NAME} size 13, signed by {vkey}, {witness.verifier.vkey()}"
    bad = check_consistency(old, new, proof[:-1], [signer.verifier])
    assert (bad[-1].name, bad[-1].ok) == ("consistency", False)
    assert bad[-1].detail == f"consistency proof too short: {len(proof) - 1} hashes for 5 -> 13"
    unsigned = check_consistency(old[:-2] + "\n", new, proof, [signer.verifier])
    assert [(c.name, c.ok) for c in unsigned] == [("old-checkpoint", False), ("new-checkpoint", True)]
    assert unsigned[0].detail == "checkpoint signature: signature line 1: not valid base64"
    other = sign_checkpoint(Checkpoint("licet.example/licet/other", 13, log.root()), signer)
    crossed = check_consistency(old, other, proof, [signer.verifier])
    assert [(c.name, c.ok) for c in crossed] == [
        ("old-checkpoint", True),
        ("new-checkpoint", True),
        ("same-log", False),
        ("not-smaller", True),
    ]
    heads = [Checkpoint.from_text(parse_note(n).text) for n in (old, new, other)]
    with pytest.raises(CheckpointError) as caught:
        verify_checkpoint_consistency(heads[0], heads[2], proof)
    assert str(caught.value) == f"checkpoints are of different logs: {NAME!r} and 'licet.example/licet/other'"
    with pytest.raises(CheckpointError) as caught:
        verify_checkpoint_consistency(heads[0], heads[1], proof[:-1])
    assert str(caught.value) == f"log {NAME}: consistency proof too short: {len(proof) - 1} hashes for 5 -> 13"
    with pytest.raises(CheckpointError) as caught:
        verify_checkpoint_consistency(heads[1], heads[0], proof)
    assert str(caught.value) == (
        "the 'new' checkpoint is for a smaller tree (5 < 13): it is older, or the log dropped entries"
    )
    verify_checkpoint_consistency(heads[0], heads[1], proof)
    verify_checkpoint_consistency(heads[1], heads[1], [])  # a head is consistent with itself
    assert store.size() == 13
    same = check_consistency(new, new, [], [signer.verifier])
    assert [(c.name, c.ok) for c in same][2:4] == [("same-log", True), ("not-smaller", True)]
    smaller = check_consistency(new, old, proof, [signer.verifier])
    assert (smaller[3].name, smaller[3].ok, smaller[3].detail) == (
        "not-smaller", False,
        "the 'new' checkpoint is for a smaller tree (5 < 13): it is older, or the log dropped entries")
    elsewhere = check_consistency(old, new, proof, [signer.verifier], origin="licet.example/licet/other")
    assert [(c.name, c.ok) for c in elsewhere] == [("old-checkpoint", False), ("new-checkpoint", False)]


def test_tenant_origins() -> None:
    assert tenant_origin("licet.example", "a b/c+d") == "licet.example/licet/a%20b%2Fc%2Bd"
    with pytest.raises(CheckpointError) as caught:
        tenant_origin("licet.example", "")
    assert str(caught.value) == "tenant id is empty"
    with pytest.raises(CheckpointError) as caught:
        tenant_origin("", "acme")
    assert str(caught.value) == "origin is empty"
    assert origin_matches_tenant("x/licet/acme", "acme")
    assert not origin_matches_tenant("x/licet/", "")
    assert not origin_matches_tenant("/licet/acme", "acme")
    assert not origin_matches_tenant("x/licet/xacme", "acme")
