"""The real path a local upstream will open for a path argument (`licet mcp proxy --resolve-paths`).

A policy is written on paths, but a file system opens through symbolic links: `public/link.txt ->
../secret/s.txt` is read as the secret. So the proxy resolves a path argument the way the upstream's
open will, on the same machine, and decides on that too. Hand-written rather than `os.path.realpath`:
realpath silently keeps a dangling link or a loop as if it were a plain name, and knows nothing of the
Unicode-equivalent lookup some upstreams do (the npm filesystem server opens `privé` for `prive\u0301`
when only one spelling exists on disk).

What this cannot see is in docs/mcp.md ("What the proxy can and cannot see").
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
import unicodedata
from dataclasses import dataclass

MAX_LINKS = 40  # Linux's own limit on links followed in one lookup (ELOOP)
PER_PROCESS = ("/proc/", "/dev/fd/", "/dev/std")  # names that mean something else in the upstream's process


class Unresolvable(Exception):
    """The path cannot be resolved in a way that shows what it names; the message says why."""


@dataclass(frozen=True)
class _Part:
    name: str
    via: str | None  # the link whose target this component comes from (None: the path as given)


def nfc(text: str) -> str:
    """`text` in Unicode Normalization Form C (one spelling per name, as policies are written)."""
    return unicodedata.normalize("NFC", text)


def _equivalent(directory: str, name: str) -> str | None:
    """The one entry of `directory` that is `name` in another Unicode spelling, if any."""
    try:
        entries = os.listdir(directory)
    except OSError as exc:
        raise Unresolvable(f"cannot list {directory}: {exc.strerror}") from exc
    matches = [entry for entry in entries if nfc(entry) == nfc(name)]
    if len(matches) > 1:
        raise Unresolvable(f"{name!r} in {directory} is ambiguous: {len(matches)} entries spell it alike")
    return matches[0] if matches else None


def real_path(path: str) -> str:
    """`path` with every symbolic link of every component followed (`..` after a link goes up from
    its target, as the kernel's open does), in NFC. A missing tail (a file about to be created) is kept
    as written. `Unresolvable` for a relative path, a dangling link, a loop, or a component that
    cannot be examined."""
    if not path.startswith("/"):
        raise Unresolvable(f"{path!r} is not an absolute path")
    if any(nfc(path).startswith(prefix) or nfc(path) == prefix.rstrip("/") for prefix in PER_PROCESS):
        raise Unresolvable(f"{path!r} names a per-process file: it would resolve differently in the upstream")
    pending = [_Part(name, None) for name in path.split("/") if name]
    done, links, missing = "/", 0, False
    while pending:
        part = pending.pop(0)
        if part.name == ".":
            continue
        if part.name == "..":
            if missing:
                raise Unresolvable(f"'..' follows {done!r}, which does not exist")
            done = posixpath.dirname(done)
            continue
        candidate = posixpath.join(done, part.name)
        if missing:
            done = candidate
            continue
        try:
            mode = os.lstat(candidate).st_mode
        except FileNotFoundError:
            other = _equivalent(done, part.name)
            if other is None:
                if part.via is not None:
                    raise Unresolvable(f"{part.via!r} is a dangling symbolic link (its target "
                                       f"{candidate!r} does not exist)") from None
                done, missing = candidate, True
                continue
            candidate = posixpath.join(done, other)
            mode = os.lstat(candidate).st_mode
        except OSError as exc:
            reason = "not a directory" if exc.errno == errno.ENOTDIR else exc.strerror
            raise Unresolvable(f"cannot examine {candidate!r}: {reason}") from exc
        if stat.S_ISLNK(mode):
            links += 1
            if links > MAX_LINKS:
                raise Unresolvable(f"more than {MAX_LINKS} symbolic links (a loop?) resolving {path!r}")
            target = os.readlink(candidate)
            pending[:0] = [_Part(name, candidate) for name in target.split("/") if name]
            if target.startswith("/"):
                done = "/"
            continue
        done = candidate
    return nfc(done)


def real_paths(path: str) -> list[str]:
    """The distinct real paths `path` may open: resolved as the kernel does (`..` after a link leaves its
    target) and, when it has `..` segments, also after removing them first (as Node's `path.resolve`
    and the npm filesystem server do)."""
    found = [real_path(path)]
    if ".." in path.split("/"):
        lexical = real_path(posixpath.normpath(path))
        if lexical not in found:
            found.append(lexical)
    return found


def as_resource(path: str) -> str:
    """A real path as a Licet resource: `%` escaped, so the kernel's percent-decoding gives it back."""
    return path.replace("%", "%25")
