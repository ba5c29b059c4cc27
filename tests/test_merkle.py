"""Merkle tree maths against a literal transcription of RFC 9162 §2.1, for every small size."""

from __future__ import annotations

import functools
import hashlib
import math
import os
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from licet.kernel import merkle
from licet.kernel.merkle import (
    EMPTY_ROOT,
    CompactRange,
    ProofError,
    consistency_proof,
    consistency_proof_nodes,
    inclusion_proof,
    inclusion_proof_nodes,
    leaf_hash,
    leaf_hashes,
    node_hash,
    root_at,
    subtree_ids,
    tree_hash,
    verify_consistency,
    verify_inclusion,
)
from tests.conftest import CT_LEAVES

# --- the RFC, transcribed as literally as possible (recursive, from the leaves) ----------------


def _k(n: int) -> int:
    """Largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


@functools.cache
def ref_mth(leaves: tuple[bytes, ...]) -> bytes:
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = _k(n)
    return hashlib.sha256(b"\x01" + ref_mth(leaves[:k]) + ref_mth(leaves[k:])).digest()


def ref_path(m: int, leaves: tuple[bytes, ...]) -> list[bytes]:
    n = len(leaves)
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return [*ref_path(m, leaves[:k]), ref_mth(leaves[k:])]
    return [*ref_path(m - k, leaves[k:]), ref_mth(leaves[:k])]


def ref_subproof(m: int, leaves: tuple[bytes, ...], whole: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if whole else [ref_mth(leaves)]
    k = _k(n)
    if m <= k:
        return [*ref_subproof(m, leaves[:k], whole), ref_mth(leaves[k:])]
    return [*ref_subproof(m - k, leaves[k:], False), ref_mth(leaves[:k])]


def ref_proof(m: int, leaves: tuple[bytes, ...]) -> list[bytes]:
    return ref_subproof(m, leaves, True)


# --- a tree built by the appender, with a node reader over what it completed --------------------

LEAVES = tuple(f"leaf {i}".encode() for i in range(300))


class Tree:
    def __init__(self, leaves: Sequence[bytes]) -> None:
        self.frontier = CompactRange()
        completed: list[tuple[int, int, bytes]] = []
        self.frontier.extend([leaf_hash(x) for x in leaves], completed)
        self.nodes = {(level, index): value for level, index, value in completed}
        self.reads = 0

    def read(self, ids: Sequence[tuple[int, int]]) -> list[bytes]:
        self.reads += len(ids)
        return [self.nodes[i] for i in ids]


TREE = Tree(LEAVES)

CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def test_hash_definitions() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    a, b = os.urandom(32), os.urandom(32)
    assert node_hash(a, b) == hashlib.sha256(b"\x01" + a + b).digest() != node_hash(b, a)
    assert tree_hash([]) == EMPTY_ROOT


@given(st.lists(st.binary(max_size=3000), max_size=20))
def test_batched_leaf_hashes_equal_single_ones(leaves: list[bytes]) -> None:
    assert leaf_hashes(leaves) == [leaf_hash(x) for x in leaves]


def test_published_ct_roots() -> None:
    for n in range(1, 9):
        assert tree_hash(CT_LEAVES[:n]).hex() == CT_ROOTS[n - 1]


def test_roots_of_every_size_match_the_rfc() -> None:
    frontier = CompactRange()
    for n in range(1, len(LEAVES) + 1):
        frontier.append(leaf_hash(LEAVES[n - 1]))
        expected = ref_mth(LEAVES[:n])
        assert frontier.root() == expected
        assert root_at(n, TREE.read) == expected  # from O(log n) stored complete subtrees


def test_inclusion_proofs_for_every_leaf_of_every_size_up_to_300() -> None:
    for n in range(1, len(LEAVES) + 1):
        root = ref_mth(LEAVES[:n])
        for i in range(n):
            proof = inclusion_proof(i, n, TREE.read)
            assert list(proof.hashes) == ref_path(i, LEAVES[:n]), (i, n)
            verify_inclusion(i, n, leaf_hash(LEAVES[i]), proof.hashes, root)


def test_consistency_proofs_for_every_pair_up_to_300() -> None:
    roots = [ref_mth(LEAVES[:n]) for n in range(301)]
    for n in range(1, 301):
        for m in range(1, n + 1):
            proof = consistency_proof(m, n, TREE.read)
            assert list(proof.hashes) == ref_proof(m, LEAVES[:n]), (m, n)
            verify_consistency(m, n, roots[m], roots[n], proof.hashes)


@given(st.integers(min_value=1, max_value=2**62), st.data())
def test_proofs_read_o_log_n_complete_subtrees(size: int, data: st.DataObject) -> None:
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    old = data.draw(st.integers(min_value=1, max_value=size))
    bound = 2 * math.ceil(math.log2(size)) + 1 if size > 1 else 1
    for plan in (inclusion_proof_nodes(index, size), consistency_proof_nodes(old, size)):
        assert len(plan.nodes) <= bound
        for level, node in plan.nodes:  # only complete subtrees inside the tree, never the log
            assert (node + 1) << level <= size


def test_appending_costs_amortised_one_node_hash() -> None:
    completed: list[tuple[int, int, bytes]] = []
    CompactRange().extend([leaf_hash(x) for x in LEAVES], completed)
    interior = [c for c in completed if c[0] > 0]
    assert len(interior) == len(LEAVES) - len(LEAVES).bit_count()  # < one per leaf, each made once
    assert len({(lv, i) for lv, i, _ in completed}) == len(completed)


@given(st.integers(min_value=0, max_value=2000), st.integers(min_value=0, max_value=10))
def test_push_subtree_equals_appending_its_leaves(before: int, level: int) -> None:
    start = (before >> level) << level
    hashes = [leaf_hash(i.to_bytes(4, "big")) for i in range(start + (1 << level))]
    by_leaf, by_subtree = CompactRange(), CompactRange()
    by_leaf.extend(hashes)
    by_subtree.extend(hashes[:start])
    sub = CompactRange()
    sub.extend(hashes[start:])
    by_subtree.push_subtree(level, sub.root())
    assert by_subtree.hashes == by_leaf.hashes and by_subtree.size == by_leaf.size
    if level:
        with pytest.raises(ValueError):
            CompactRange(1, hashes[:1]).push_subtree(level, sub.root())


def test_subtree_ids_tile_a_range() -> None:
    assert subtree_ids(0, 13) == [(3, 0), (2, 2), (0, 12)]
    assert subtree_ids(8, 12) == [(2, 2)]
    assert subtree_ids(5, 5) == []
    with pytest.raises(ValueError):
        subtree_ids(1, 5)


# --- hostile proofs -------------------------------------------------------------------------------


def _flip(value: bytes, bit: int) -> bytes:
    out = bytearray(value)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


@settings(max_examples=300)
@given(st.integers(min_value=2, max_value=300), st.data())
def test_tampered_inclusion_proofs_fail(n: int, data: st.DataObject) -> None:
    i = data.draw(st.integers(min_value=0, max_value=n - 1))
    proof = inclusion_proof(i, n, TREE.read).hashes
    root, leaf = ref_mth(LEAVES[:n]), leaf_hash(LEAVES[i])
    bit = data.draw(st.integers(min_value=0, max_value=255))
    j = data.draw(st.integers(min_value=0, max_value=n - 1).filter(lambda j: j != i))
    m = data.draw(st.integers(min_value=i + 1, max_value=300).filter(lambda m: m != n))
    cases = [
        (i, n, _flip(leaf, bit), proof, root),  # another leaf
        (i, n, leaf, proof, _flip(root, bit)),  # another root
        (j, n, leaf, proof, root),  # the proof of leaf i presented for leaf j
        # Another tree size, with that tree's root. (The size alone is not bound by a proof: leaf
        # 0's path is the same shape at sizes 129 and 130. A checkpoint signs size and root together.)
        (i, m, leaf, proof, ref_mth(LEAVES[:m])),
        (i, n, leaf, (*proof, proof[0]), root),  # extended
    ]
    if proof:
        k = data.draw(st.integers(min_value=0, max_value=len(proof) - 1))
        cases.append((i, n, leaf, (*proof[:k], _flip(proof[k], bit), *proof[k + 1 :]), root))
        cases.append((i, n, leaf, proof[:-1], root))  # truncated
    for case in cases:
        if case[0] < case[1]:
            with pytest.raises(ProofError):
                verify_inclusion(*case)
        else:
            with pytest.raises(ProofError, match="outside"):
                verify_inclusion(*case)


@settings(max_examples=300)
@given(st.integers(min_value=2, max_value=300), st.data())
def test_tampered_consistency_proofs_fail(n: int, data: st.DataObject) -> None:
    m = data.draw(st.integers(min_value=1, max_value=n - 1))
    proof = consistency_proof(m, n, TREE.read).hashes
    old, new = ref_mth(LEAVES[:m]), ref_mth(LEAVES[:n])
    verify_consistency(m, n, old, new, proof)
    bit = data.draw(st.integers(min_value=0, max_value=255))
    k = data.draw(st.integers(min_value=0, max_value=len(proof) - 1))
    other = data.draw(st.integers(min_value=1, max_value=n).filter(lambda x: x != m))
    at = data.draw(st.integers(min_value=0, max_value=m - 1))
    rewritten = (*LEAVES[:at], b"rewritten", *LEAVES[at + 1 : n])
    cases = [
        (m, n, _flip(old, bit), new, proof),
        (m, n, old, _flip(new, bit), proof),
        (m, n, old, new, (*proof[:k], _flip(proof[k], bit), *proof[k + 1 :])),
        (m, n, old, new, proof[:-1]),
        (m, n, old, new, (*proof, proof[0])),
        (other, n, old, new, proof),
        (n, m, new, old, proof),  # swapped: the "new" tree is the smaller one
        (m, n, old, ref_mth(rewritten), consistency_proof(m, n, Tree(rewritten).read).hashes),
    ]
    for case in cases:
        with pytest.raises(ProofError):
            verify_consistency(*case)


def test_error_messages_say_what_failed() -> None:
    proof = inclusion_proof(3, 10, TREE.read).hashes
    root = ref_mth(LEAVES[:10])
    with pytest.raises(ProofError, match="leads to root"):
        verify_inclusion(4, 10, leaf_hash(LEAVES[3]), proof, root)
    with pytest.raises(ProofError, match="outside a tree of size 10"):
        verify_inclusion(10, 10, leaf_hash(LEAVES[3]), proof, root)
    with pytest.raises(ProofError, match="not a 32-byte hash"):
        verify_inclusion(3, 10, leaf_hash(LEAVES[3]), (*proof[:-1], b"short"), root)
    with pytest.raises(ProofError, match="smaller than the old"):
        verify_consistency(5, 4, root, root, [root])
    with pytest.raises(ProofError, match="forked"):
        verify_consistency(4, 4, ref_mth(LEAVES[:4]), root, [])


def test_module_has_no_mutable_globals() -> None:
    # Pure kernel module: only constants and functions at module level.
    for name, value in vars(merkle).items():
        if not name.startswith("__"):
            assert not isinstance(value, list | dict | set | bytearray), name
