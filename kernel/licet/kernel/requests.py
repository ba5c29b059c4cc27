"""Requests: validation and normalisation of what an agent asks, before anything is decided.

A raw request is normalised exactly once, at the edge (`normalise_request`), into a
`NormalisedRequest`; what the kernel records (certificates, session history) is read back with
`recorded_request`, which never percent-decodes again (issue 15: a second decode turned
`/pub/%252e%252e/admin` into `/admin` after it was decided as `/pub/%2e%2e/admin`).
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from licet.kernel.canonical import canonical_json
from licet.kernel.errors import InvalidRequest

_ACTION = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\Z")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)(.*)\Z", re.DOTALL)  # RFC 3986: the authority ends at / ? #
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_INT_LIMIT = 2**53 - 1
_PARTS = ("principal", "action", "resource", "args", "context")


@dataclass(frozen=True)
class NormalisedRequest:
    """A validated request in normal form, percent-decoded exactly once; what is decided, hashed,
    certified and recorded. Build it with `normalise_request` (raw input) or `recorded_request`."""

    principal: Mapping[str, Any]
    action: str
    resource: str
    args: Mapping[str, Any]
    context: Mapping[str, Any]
    # The resource was case-folded (for a `resource_case: insensitive` policy); not part of the JSON.
    case_folded: bool = False

    def to_json(self) -> dict[str, Any]:
        """The request as a JSON object (as certified and recorded)."""
        return {
            "principal": self.principal, "action": self.action, "resource": self.resource,
            "args": self.args, "context": self.context,
        }


def has_control(text: str) -> bool:
    """True when `text` holds a C0/C1 control character or DEL (never valid in a resource)."""
    return _CONTROL.search(text) is not None


def normalise_path(path: str, field: str = "resource") -> str:
    """Fold repeated `/`, resolve `.` and `..`, drop a trailing `/`; climbing above the root is invalid."""
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


def casefolded(text: str) -> str:
    """Unicode full case folding, kept in NFC (`resource_case: insensitive`)."""
    return unicodedata.normalize("NFC", text.casefold())


def normalise_resource(raw: object, *, fold: bool = False, decode: bool = True,
                       keep_escapes: bool = False) -> str:
    """The normal form of a resource (docs/policy-language.md, "Requests"); `decode=False` for
    patterns and recorded resources, which are never percent-decoded (again)."""
    if not isinstance(raw, str) or not raw:
        raise InvalidRequest("resource", "must be a non-empty string")
    text = raw
    if decode:
        try:
            text = unquote(raw, errors="strict")
        except UnicodeDecodeError as exc:
            raise InvalidRequest("resource", "percent-escapes do not decode to UTF-8") from exc
        survivor = None if keep_escapes else _ESCAPE.search(text)
        if survivor:
            # Any tool that decodes again would read another name (`%2e%2e` is `..`): fail closed.
            raise InvalidRequest("resource", f"holds the percent-escape {survivor.group()!r} after "
                                             "decoding once (a double-encoded resource)")
    if _CONTROL.search(text):
        raise InvalidRequest("resource", "contains control characters")
    if _has_surrogate(text):
        raise InvalidRequest("resource", "contains a lone surrogate")
    text = text.replace("\\", "/")
    uri = _SCHEME.match(text)
    if uri:
        scheme, authority, path = uri.groups()
        if not authority:
            raise InvalidRequest("resource", "URI has an empty authority")
        # The path of a URI is normalised like any path: its root is "/", never "" (`https://h?q` is
        # `https://h/?q`, so a pattern `https://h/**` covers it).
        normal = f"{casefolded(scheme)}://{casefolded(authority)}" + normalise_path(
            path if path.startswith("/") else "/" + path)
    else:
        normal = normalise_path(text)
    return casefolded(normal) if fold else unicodedata.normalize("NFC", normal)


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


def _validated(raw: Mapping[str, Any]) -> tuple[str, dict[str, Mapping[str, Any]]]:
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
    return action, maps


def normalise_request(raw: Mapping[str, Any], *, fold_case: bool = False,
                      keep_escapes: bool = False) -> NormalisedRequest:
    """Validate a raw request and return its normal form (percent-decoding the resource once);
    raises `InvalidRequest`."""
    action, maps = _validated(raw)
    resource = normalise_resource(raw.get("resource"), fold=fold_case, keep_escapes=keep_escapes)
    return NormalisedRequest(maps["principal"], action, resource, maps["args"], maps["context"], fold_case)


def recorded_request(recorded: Mapping[str, Any]) -> NormalisedRequest:
    """A request as certified or recorded (already normalised), validated and never decoded again.
    The other steps are idempotent, so a recorded normal form comes back unchanged."""
    action, maps = _validated(recorded)
    resource = normalise_resource(recorded.get("resource"), decode=False)
    return NormalisedRequest(maps["principal"], action, resource, maps["args"], maps["context"])


def folded_for(request: NormalisedRequest, fold: bool) -> NormalisedRequest:
    """`request` in the resource form a policy expects (case-folded or not)."""
    if request.case_folded == fold:
        return request
    if request.case_folded:
        raise InvalidRequest("resource", "was case-folded for a case-insensitive policy; normalise the "
                                         "raw request for this case-sensitive one")
    return NormalisedRequest(request.principal, request.action, casefolded(request.resource), request.args,
                             request.context, True)


def request_hash(request: NormalisedRequest) -> str:
    """`sha256:` and the hex SHA-256 of the request's canonical JSON."""
    return "sha256:" + hashlib.sha256(canonical_json(request.to_json())).hexdigest()
