"""Replacing a small file durably: the record of signed checkpoints, the signing keyring."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def replace_durably(path: Path, content: str, *, mode: int = 0o600) -> None:
    """Replace `path` with `content`: a reader sees the old file or the new one, never a part, and the
    content and the rename are both on disk before this returns (after a power cut too). The new file
    has `mode` from its creation, and the old file's owner where allowed (root rotating a key that the
    server's user reads, e.g. uid 10001 in the image)."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # 0600
    try:
        os.fchmod(fd, mode)
        with contextlib.suppress(FileNotFoundError, PermissionError):  # else whoever writes owns it
            old = path.stat()
            os.fchown(fd, old.st_uid, old.st_gid)
        with os.fdopen(fd, "w") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself
    finally:
        os.close(directory)
