"""Requests: validation and normalisation of what an agent asks, before anything is decided."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from kernel.canonical import canonical_json
from kernel.errors import InvalidRequest

_ACTION = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\Z")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/]*)(.*)\Z", re.DOTALL)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_INT_LIMIT = 2**53 - 1
_PARTS = ("principal", "action", "resource", "args", "context")


@dataclass(frozen=True)
class Request:
    """A validated, normalised request; what is decided, hashed and certified."""

    principal: Mapping[str, Any]
    action: str
    resource: str
    args: Mapping[str, Any]
    context: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The request as a JSON object."""
        return {
            "principal": self.principal, "action": self.action, "resource": self.resource,
            "args": self.args, "context": self.context,
        }


def has_control(text: str) -> bool:
    """True when `text` holds a C0/C1 control character or DEL (never valid in a resource)."""
    return _CONTROL.search(text) is not None


def normalise_path(path: str, field: str = "resource") -> str:
    """Fold `\\` and repeated `/`, resolve `.` and `..`; climbing above the root is invalid."""
    if not path.startswith("/"):
        raise InvalidRequest(field, "must be an absolute path (/...) or a URI (scheme://...)")
    out: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if not out:
                raise InvalidRequest(field, "path climbs above the root ('..')")
            out.pop()
        else:
            out.append(segment)
    return "/" + "/".join(out)


def normalise_resource(raw: object, *, lower: bool = False, decode: bool = True) -> str:
    """The normal form of a resource (docs/policy-language.md, "Requests")."""
    if not isinstance(raw, str) or not raw:
        raise InvalidRequest("resource", "must be a non-empty string")
    try:
        text = unquote(raw, errors="strict") if decode else raw
    except UnicodeDecodeError as exc:
        raise InvalidRequest("resource", "percent-escapes do not decode to UTF-8") from exc
    if _CONTROL.search(text):
        raise InvalidRequest("resource", "contains control characters")
    text = text.replace("\\", "/")
    uri = _SCHEME.match(text)
    if uri:
        scheme, authority, path = uri.groups()
        if not authority:
            raise InvalidRequest("resource", "URI has an empty authority")
        # The path of a URI is normalised like any path: its root is "/", never "".
        normal = f"{scheme.lower()}://{authority.lower()}" + normalise_path(path or "/")
    else:
        normal = normalise_path(text)
    return normal.lower() if lower else normal


def _has_surrogate(text: str) -> bool:
    return not text.isascii() and _SURROGATE.search(text) is not None


def _check_json(value: Any, field: str, depth: int = 0) -> None:
    # Only JSON values with a canonical form may be decided and certified.
    if depth > 32:
        raise InvalidRequest(field, "nested too deeply (more than 32 levels)")
    if value is None or isinstance(value, (bool, str)):
        if isinstance(value, str) and _has_surrogate(value):
            raise InvalidRequest(field, "contains a lone surrogate")
        return
    if isinstance(value, int):
        if not -_INT_LIMIT <= value <= _INT_LIMIT:
            raise InvalidRequest(field, "integer outside ±(2^53-1)")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidRequest(field, "number is not finite")
        if abs(value) > _INT_LIMIT:  # beyond it JSON numbers lose integers, and certificates can't hold them
            raise InvalidRequest(field, "number outside ±(2^53-1)")
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_json(item, f"{field}[{i}]", depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidRequest(field, "object keys must be strings")
            if _has_surrogate(key):
                raise InvalidRequest(field, "a key contains a lone surrogate")
            _check_json(item, f"{field}.{key}", depth + 1)
        return
    raise InvalidRequest(field, f"unsupported value of type {type(value).__name__}")


def normalise_request(raw: Mapping[str, Any], *, lower_resource: bool = False) -> Request:
    """Validate a request object and return its normal form; raises `InvalidRequest`."""
    if not isinstance(raw, Mapping):
        raise InvalidRequest("request", "must be a JSON object")
    unknown = sorted(set(raw) - set(_PARTS))
    if unknown:
        raise InvalidRequest(unknown[0], "unknown request field (expected principal, action, "
                                         "resource, args, context)")
    action = raw.get("action")
    if not isinstance(action, str) or not _ACTION.match(action):
        raise InvalidRequest("action", "must be dot-separated segments of [A-Za-z0-9_-]")
    maps: dict[str, Mapping[str, Any]] = {}
    for part in ("principal", "args", "context"):
        value = raw.get(part, {})
        if not isinstance(value, Mapping):
            raise InvalidRequest(part, "must be a JSON object")
        _check_json(dict(value), part)
        maps[part] = value
    resource = normalise_resource(raw.get("resource"), lower=lower_resource)
    return Request(maps["principal"], action, resource, maps["args"], maps["context"])


def request_hash(request: Request) -> str:
    """`sha256:` and the hex SHA-256 of the request's canonical JSON."""
    return "sha256:" + hashlib.sha256(canonical_json(request.to_json())).hexdigest()
