"""licet/mcp/paths.py: the real path a local upstream opens, against the operating system's own answer
(`os.path.realpath`, strict) on random trees of links, and its refusals."""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from licet.mcp.paths import Unresolvable, as_resource, real_path, real_paths

NAMES = ["a", "b", "c"]


def test_links_dot_dot_and_absolute_targets(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    (root / "secret" / "sub").mkdir(parents=True)
    (root / "public").mkdir()
    os.symlink(root / "secret" / "sub", root / "public" / "abs")
    os.symlink("../secret/sub", root / "public" / "rel")
    assert real_path(f"{root}/public/abs/x.txt") == f"{root}/secret/sub/x.txt"  # missing tail kept
    # `..` after a link climbs from its target (the kernel's lookup); the lexical reading is decided too
    assert real_paths(f"{root}/public/rel/../y") == [f"{root}/secret/y", f"{root}/public/y"]
    assert real_paths(f"{root}/public/./rel//z") == [f"{root}/secret/sub/z"]
    assert as_resource(f"{root}/100%.txt") == f"{root}/100%25.txt"


@pytest.mark.parametrize("path, why", [("relative/x", "not an absolute path"), ("/proc/self/root/etc", "per-process"),
                                       ("/dev/fd/3", "per-process")])
def test_paths_that_cannot_name_the_upstreams_file(path: str, why: str) -> None:
    with pytest.raises(Unresolvable, match=why):
        real_path(path)


def test_dangling_loops_and_ambiguous_spellings_are_refused(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    os.symlink("nowhere/file", root / "dangling")
    os.symlink("loop2", root / "loop1")
    os.symlink("loop1", root / "loop2")
    (root / "file").write_text("x")
    with pytest.raises(Unresolvable, match="dangling"):
        real_path(f"{root}/dangling")
    with pytest.raises(Unresolvable, match="symbolic links"):
        real_path(f"{root}/loop1/x")
    with pytest.raises(Unresolvable, match="not a directory"):
        real_path(f"{root}/file/x")
    with pytest.raises(Unresolvable, match="does not exist"):
        real_path(f"{root}/missing/../file")
    nfc, nfd = unicodedata.normalize("NFC", "é"), unicodedata.normalize("NFD", "é")
    (root / f"d{nfc}").mkdir()
    assert real_path(f"{root}/d{nfd}/f") == f"{root}/d{nfc}/f"  # the one entry spelled alike
    (root / f"d{nfd}x").mkdir()
    (root / f"d{nfc}x").mkdir()
    assert real_path(f"{root}/d{nfd}x") == f"{root}/d{nfc}x"  # exact name first, answered in NFC
    # d with dots below and above has three spellings: two on disk, the third asked is neither exactly
    (root / "e").mkdir()
    dotted = "\u1e0b\u0323"
    (root / "e" / unicodedata.normalize("NFC", dotted)).mkdir()
    (root / "e" / unicodedata.normalize("NFD", dotted)).mkdir()
    assert len({dotted, unicodedata.normalize("NFC", dotted), unicodedata.normalize("NFD", dotted)}) == 3
    with pytest.raises(Unresolvable, match="ambiguous"):
        real_path(f"{root}/e/{dotted}")


LINKS = [f"l{name}" for name in NAMES]
links = st.lists(st.tuples(st.sampled_from(["", *NAMES]), st.sampled_from(NAMES),
                           st.lists(st.sampled_from([*NAMES, *LINKS, ".."]), max_size=3)), max_size=6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(made=links, asked=st.lists(st.sampled_from([*NAMES, *LINKS, ".", ".."]), min_size=1, max_size=6))
def test_agrees_with_the_operating_system(tmp_path_factory: pytest.TempPathFactory,
                                          made: list[tuple[str, str, list[str]]], asked: list[str]) -> None:
    root = tmp_path_factory.mktemp("tree").resolve()
    for name in NAMES:
        (root / "d" / name).mkdir(parents=True)
    for directory, name, target in made:  # links [d/<directory>/]l<name>, relative targets (maybe loops)
        link = root / "d" / directory / f"l{name}"
        if not link.is_symlink():
            os.symlink("/".join([*target, name]), link)
    for name in LINKS:  # a link name not made a link is a directory
        if not (root / "d" / name).is_symlink():
            (root / "d" / name).mkdir()
    path = str(root / "d") + "/" + "/".join(asked)
    try:
        expected: str | None = os.path.realpath(path, strict=True)
    except OSError:
        expected = None
    try:
        got: str | None = real_path(path)
    except Unresolvable:
        got = None
    if expected is not None:  # whatever the OS opens, the resolver names it
        assert got == expected, (path, made)
