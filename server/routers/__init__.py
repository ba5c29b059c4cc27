"""The API's routers, and the input types they share.

Inputs that could only fail in the database or in JSON rendering are refused at the boundary with
a 422 naming the field: PostgreSQL text cannot hold U+0000, UTF-8 cannot encode an unpaired
surrogate, JSON has no NaN or Infinity, and integer columns are 32 or 64 bits wide.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import AfterValidator

INT32_MAX = 2**31 - 1  # INTEGER columns (policy version numbers)
INT64_MAX = 2**63 - 1  # BIGINT columns (log sizes and indexes, audit event ids)
MAX_JSON_DEPTH = 32  # as deep as the kernel lets a request's args nest


def _unicode(value: str) -> str:
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("must be valid Unicode (no unpaired surrogates)") from None
    return value


def _text(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL (U+0000) characters")
    return _unicode(value)


def _json(value: Any, depth: int = 0) -> Any:
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"nested more than {MAX_JSON_DEPTH} levels deep")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("numbers must be finite (JSON has no NaN or Infinity)")
    if isinstance(value, str):
        _unicode(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _unicode(key)
            _json(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _json(item, depth + 1)
    return value


def _json_keys(value: Any, depth: int = 0) -> Any:
    # Only the keys: the kernel checks values itself (and names the exact field), but not keys.
    if depth <= MAX_JSON_DEPTH and isinstance(value, dict | list):
        for key, item in value.items() if isinstance(value, dict) else enumerate(value):
            if isinstance(key, str):
                _unicode(key)
            _json_keys(item, depth + 1)
    return value


Text = Annotated[str, AfterValidator(_text)]
"""A string the database can store and compare: no NUL, valid Unicode."""

JsonObject = Annotated[dict[str, Any], AfterValidator(_json)]
"""A JSON object the server stores or loads as policy: finite numbers, valid Unicode, bounded depth."""

JsonList = Annotated[list[Any], AfterValidator(_json)]

RequestArgs = Annotated[dict[str, Any], AfterValidator(_json_keys)]
"""An agent's args (or plan steps): the kernel validates the values, the keys are checked here."""
