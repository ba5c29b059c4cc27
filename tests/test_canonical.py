"""The canonical JSON fast path is byte-identical to the `rfc8785` reference package."""

import json

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from licet.kernel.canonical import canonical_json

# Keys and strings deliberately include control characters, quotes, escapes, astral-plane and
# private-use characters (the UTF-16 vs code-point ordering trap) and lone surrogates.
text = st.text(
    alphabet=st.one_of(
        st.characters(codec="utf-8"),
        st.sampled_from(['"', "\\", "\b", "\f", "\n", "\r", "\t", "\x00", "\x1f", "\x7f",
                         "\ue000", "\uffff", "\U0001f600", "\U00010000"]),
    )
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    text,
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(text, inner, max_size=5)),
    max_leaves=30,
)


def _reference(value: object) -> bytes | type[Exception]:
    try:
        return rfc8785.dumps(value)  # type: ignore[arg-type]
    except rfc8785.CanonicalizationError:
        return rfc8785.CanonicalizationError


def _ours(value: object) -> bytes | type[Exception]:
    try:
        return canonical_json(value)
    except rfc8785.CanonicalizationError:
        return rfc8785.CanonicalizationError


@settings(max_examples=3000, deadline=None)
@given(values)
def test_identical_to_rfc8785(value: object) -> None:
    assert _ours(value) == _reference(value)


def test_orders_keys_by_utf16_code_units() -> None:
    # U+E000 sorts after U+1F600 by code point but before it in UTF-16 (surrogates are 0xD8xx).
    value = {"\ue000": 1, "\U0001f600": 2}
    assert canonical_json(value) == rfc8785.dumps(value)
    assert canonical_json(value).decode().index("\U0001f600") < canonical_json(value).decode().index("\ue000")


def test_rejects_unsafe_integers_and_surrogates() -> None:
    with pytest.raises(rfc8785.CanonicalizationError):
        canonical_json({"n": 2**53})
    with pytest.raises(rfc8785.CanonicalizationError):
        canonical_json({"s": "\ud800"})


def test_whitespace_and_order_do_not_matter() -> None:
    a = json.loads('{ "b" : [1, 2, {"y": true, "x": null}], "a": "é" }')
    b = json.loads('{"a":"é","b":[1,2,{"x":null,"y":true}]}')
    assert canonical_json(a) == canonical_json(b) == b'{"a":"\xc3\xa9","b":[1,2,{"x":null,"y":true}]}'
