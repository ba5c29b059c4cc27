"""Policies are read with libyaml when PyYAML has it, and with PyYAML's Python parser otherwise or
when libyaml refuses a document (kernel/document.py, `_compose`). The Python parser is the reference:
whatever libyaml accepts must read as the same values at the same lines and columns, and give the
same errors, as the Python parser alone would give.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from licet.kernel.document import load_document
from licet.kernel.errors import PolicyError

pytestmark = pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML was built without libyaml")

_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), _TEXT,
                    st.sampled_from(["yes", "no", "on", "off", "~", "0x1F", "0o17", "1_000", "1e3", ".inf",
                                     "2025-05-01", "'", '"', "#", ": ", "- ", "\t", "\x85", "\u2028", "😀"]))
_VALUE = st.recursive(_SCALAR, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
                      max_leaves=20)
# Pieces of YAML, glued at random: most of what this makes is not valid, which is the point.
_PIECE = st.sampled_from(["a", "b: ", "- ", "\n", "  ", "\t", ": ", "'x'", '"y"', '"\\ud83d\\ude00"', '"\\ud800"',
                          "[", "]", "{", "}", ",", "&a ", "*a", "!!str ", "!!int ", "|\n", ">-\n", "# c", "---\n",
                          "...\n", "%YAML 1.1\n", "?", "1", "true", "null", "\x85", "\u2028", "\ufeff", "é",
                          "e\u0301", "😀", "\\", "\r\n", "!", "!!float ", "!!bool ", "!!map ", "!!seq ", "<<: ",
                          "=", "@", "`", "|+\n", ">+\n", "|2\n", '"a\\\nb"', "'it''s'", "0x1F", ".inf", "-.NaN",
                          "1:30", "1:30.5", "~", "\x00", "\x7f", "\u00a0", "\u200b", "#\n", " #x", "%", "https://x?y"])


def _read(text: str) -> tuple[Any, ...]:
    try:
        found = load_document(text, "p.yaml")
    except PolicyError as exc:
        return ("error", str(exc), exc.line, exc.column, exc.field)
    return ("value", json.dumps(found.value, sort_keys=True, default=repr), dict(found.positions),
            dict(found.text_starts))


def _same_as_python_parser(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with_libyaml = _read(text)
    with monkeypatch.context() as patch:
        patch.setattr(yaml, "__with_libyaml__", False)
        reference = _read(text)
    assert with_libyaml == reference, text


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=_VALUE, style=st.sampled_from(["block", "flow", "json", "json-ascii", "quoted"]))
def test_documents_read_alike_with_either_parser(value: Any, style: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if style in ("json", "json-ascii"):
        text = json.dumps({"v": value}, ensure_ascii=style == "json-ascii", indent=1)
    else:
        text = yaml.safe_dump({"v": value}, allow_unicode=True, default_flow_style=style == "flow",
                              default_style='"' if style == "quoted" else None)
    _same_as_python_parser(text, monkeypatch)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pieces=st.lists(_PIECE, max_size=24))
@example(pieces=['"\\ud83d\\ude00"'])  # libyaml refuses surrogate escapes; PyYAML reads the pair as 😀
@example(pieces=["a", ": ", "'x'", "\n", "b: ", "1"])  # a plain scalar: style '' from libyaml, None from PyYAML
def test_any_text_reads_alike_with_either_parser(pieces: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    _same_as_python_parser("".join(pieces), monkeypatch)


def test_yaml_1_1_infinities_are_refused_and_base_60_floats_stay_strings() -> None:
    # `.inf` is a YAML 1.1 float Python's float() does not read: it failed the load with a ValueError.
    for text in (".inf", "-.Inf", ".NaN"):
        with pytest.raises(PolicyError, match="is not finite"):
            load_document(f"a: {text}\n", "p.yaml")
    assert load_document("a: 1:30.5\n", "p.yaml").value == {"a": "1:30.5"}


def test_libyaml_reads_plain_scalars_as_typed_values() -> None:
    # The style check once read libyaml's '' (plain) as a quote: every plain value became a string.
    assert load_document("a: true\nb: 3\nc: ~\nd: 'true'\n", "p.yaml").value == {"a": True, "b": 3, "c": None,
                                                                             "d": "true"}
