"""The API's routers, and the input types they share.

Inputs that could only fail in the database, in JSON rendering or in signing are refused at the
boundary with a 422 naming the field: PostgreSQL text cannot hold U+0000, UTF-8 cannot encode an
unpaired surrogate, JSON has no NaN or Infinity, a certificate's canonical JSON (RFC 8785) holds
numbers only up to ±(2^53-1), and integer columns are 32 or 64 bits wide.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator

INT32_MAX = 2**31 - 1  # INTEGER columns (policy version numbers)
INT64_MAX = 2**63 - 1  # BIGINT columns (log sizes and indexes, audit event ids)
MAX_JSON_DEPTH = 32  # as deep as the kernel lets a request's args nest
MAX_SAFE = 2**53 - 1  # the largest magnitude RFC 8785 (so a certificate) represents exactly


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


def _number(value: int | float) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("numbers must be finite (JSON has no NaN or Infinity)")
    if abs(value) > MAX_SAFE:
        raise ValueError("numbers must be within ±(2^53-1) to be certified exactly")


def _json(value: Any, depth: int = 0) -> Any:
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"nested more than {MAX_JSON_DEPTH} levels deep")
    if isinstance(value, int | float) and not isinstance(value, bool):
        _number(value)
    elif isinstance(value, str):
        _unicode(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _unicode(key)
            _json(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _json(item, depth + 1)
    return value


def _request_json(value: Any, depth: int = 0) -> Any:
    # The kernel checks a request's values itself, naming the exact field; but not its keys, nor
    # floats beyond ±(2^53-1) (it bounds integers only), which then fail when the certificate is signed.
    if isinstance(value, float) and math.isfinite(value) and abs(value) > MAX_SAFE:
        raise ValueError("numbers must be within ±(2^53-1) to be certified exactly")
    if depth <= MAX_JSON_DEPTH and isinstance(value, dict | list):
        for key, item in value.items() if isinstance(value, dict) else enumerate(value):
            if isinstance(key, str):
                _unicode(key)
            _request_json(item, depth + 1)
    return value


def _date_time_string(value: Any) -> Any:
    # Pydantic would also take a number as seconds since 1970 (so `0` is an expiry long past).
    if not isinstance(value, str | datetime):
        raise ValueError("must be an RFC 3339 date-time string, e.g. 2030-01-01T00:00:00Z")
    return value


DateTime = Annotated[datetime, BeforeValidator(_date_time_string)]


def _date_time_text(value: Any) -> Any:
    # In a query string every value is text: pydantic would read `0.5` as seconds since 1970.
    if isinstance(value, str) and not re.match(r"\d{4}-\d{2}-\d{2}", value):
        raise ValueError("must be an RFC 3339 date-time, e.g. 2030-01-01T00:00:00Z")
    return value


QueryDateTime = Annotated[datetime, BeforeValidator(_date_time_text)]
"""A date-time in a query string (RFC 3339 text, never a number)."""

Text = Annotated[str, AfterValidator(_text)]
"""A string the database can store and compare: no NUL, valid Unicode."""

JsonObject = Annotated[dict[str, Any], AfterValidator(_json)]
"""A JSON object the server stores or loads as policy: finite numbers, valid Unicode, bounded depth."""

JsonObjects = Annotated[list[dict[str, Any]], AfterValidator(_json)]
"""A list of such objects (a delegation's scope: rules the kernel loads as a policy)."""

RequestArgs = Annotated[dict[str, Any], AfterValidator(_request_json)]
"""An agent's args: the kernel validates them (naming the exact field) but for what is checked here."""

RequestSteps = Annotated[list[dict[str, Any]], AfterValidator(_request_json)]
"""A plan's steps, checked as args are."""
