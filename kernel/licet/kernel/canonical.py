"""RFC 8785 canonical JSON, with a fast path for the values certificates are made of."""

from __future__ import annotations

import json
from typing import Any

import rfc8785

_INT_LIMIT = 2**53 - 1
_encode = json.JSONEncoder(
    ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
).encode


def _fast_path_applies(value: Any) -> bool:
    """True when `json` gives RFC 8785's exact bytes: no floats, safe ints, BMP-only keys.

    Floats need ECMAScript number formatting and keys outside the Basic Multilingual Plane sort
    differently by UTF-16 code units than by code points, so those go to the `rfc8785` package.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if kind is int:
            if -_INT_LIMIT <= item <= _INT_LIMIT:
                continue
            return False
        if kind is dict:
            for key in item:
                if type(key) is not str or not (key.isascii() or max(key) <= "\uffff"):
                    return False
            stack.extend(item.values())
        elif kind is list or kind is tuple:
            stack.extend(item)
        else:
            return False
    return True


def canonical_json(value: Any) -> bytes:
    """The RFC 8785 (JCS) serialisation of `value`; raises `rfc8785.CanonicalizationError`."""
    if _fast_path_applies(value):
        try:
            return _encode(value).encode("utf-8")
        except UnicodeEncodeError as exc:  # lone surrogates: not representable in UTF-8
            raise rfc8785.CanonicalizationError("input contains non-UTF-8 codepoints") from exc
    return rfc8785.dumps(value)
