"""Mutation testing of one kernel module with mutmut's mutation operators (docs/mutation.md).

    .tools/bin/uv pip install --python .venv/bin/python --target /tmp/mutmut-lib mutmut==3.8.1
    MUTMUT_LIB=/tmp/mutmut-lib .venv/bin/python scripts/mutation.py kernel/licet/kernel/globs.py \
        tests/test_kernel_edges.py tests/test_decide.py ... [--report /tmp/globs.json]

The mutants are the ones mutmut 3 makes (its `MutationVisitor` and `mutation_operators`), with two
differences that make the run stricter, not easier: decorated functions and classes (dataclasses,
`@lru_cache`, properties) and module-level statements (the compiled regexes, the limits) are mutated
too; mutmut's own runner leaves them out because its trampolines cannot wrap them. Each mutant
replaces the whole module at import time (an import hook, nothing is written to the tree), in a
child forked from a process that has already imported the third-party libraries, and runs the given
test files with pytest `-x`, the default Hypothesis settings except that no example database is read
or written (a failure saved for one mutant must not be replayed for the next) and no deadline
(a slow machine must not count as a kill). One mutant at a time: one worker.

A mutant is killed when pytest exits non-zero (a failing test, or the mutant cannot even be
imported) or runs over the time limit; it survived when every test passed.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import importlib.abc
import importlib.util
import json
import os
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Mutant:
    number: int
    line: int
    before: str
    after: str
    outcome: str = ""
    seconds: float = 0.0


def _mutmut() -> tuple[Any, Any, Any]:
    """mutmut's engine, from the folder `MUTMUT_LIB` names (a `--target` install kept out of .venv)."""
    lib = os.environ.get("MUTMUT_LIB")
    if lib:
        sys.path.append(lib)  # last: the project's own versions of shared dependencies win
    try:
        import libcst
        from mutmut.mutation import file_mutation, mutators, pragma_handling
    except ImportError as exc:
        raise SystemExit(
            "mutmut 3.8 is not importable: `.tools/bin/uv pip install --python .venv/bin/python "
            "--target /tmp/mutmut-lib mutmut==3.8.1` and set MUTMUT_LIB=/tmp/mutmut-lib"
        ) from exc
    return libcst, file_mutation, (mutators, pragma_handling)


def mutants_of(code: str) -> list[tuple[Mutant, str]]:
    """Every mutant of `code` with its whole mutated source, in source order, without duplicates."""
    cst, file_mutation, (mutators, pragma_handling) = _mutmut()

    class Visitor(file_mutation.MutationVisitor):  # type: ignore[misc,name-defined]
        def _skip_node_and_children(self, node: Any) -> bool:
            # Unlike mutmut's runner, decorated functions are mutated (their body; mutmut skips them
            # because its trampolines cannot wrap them). Decorators themselves stay unmutated.
            if isinstance(node, cst.FunctionDef) and node.decorators:
                return node.name.value in file_mutation.NEVER_MUTATE_FUNCTION_NAMES
            return bool(super()._skip_node_and_children(node))

    wrapper = cst.metadata.MetadataWrapper(cst.parse_module(code))
    no_pragmas = pragma_handling.IgnoredCode(set(), set(), set())  # the kernel has no `pragma: no mutate`
    visitor = Visitor(mutators.mutation_operators, no_pragmas)
    module = wrapper.visit(visitor)
    seen = {code}
    out: list[tuple[Mutant, str]] = []
    old_lines = code.splitlines()
    for mutation in visitor.mutations:
        mutated = file_mutation.deep_replace(module, mutation.original_node, mutation.mutated_node).code
        if mutated in seen:
            continue
        seen.add(mutated)
        out.append((_described(len(out) + 1, old_lines, mutated), mutated))
    return out


def _described(number: int, old_lines: list[str], mutated: str) -> Mutant:
    new_lines = mutated.splitlines()
    matcher = difflib.SequenceMatcher(a=old_lines, b=new_lines, autojunk=False)
    first = next(op for op in matcher.get_opcodes() if op[0] != "equal")
    before = "\n".join(old_lines[first[1] : first[2]]).strip()
    after = "\n".join(new_lines[first[3] : first[4]]).strip()
    return Mutant(number, first[1] + 1, before, after)


class _MutantLoader(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves one module's (mutated) source instead of its file."""

    def __init__(self, name: str, path: Path, code: str) -> None:
        self.name, self.path, self.code = name, path, code

    def find_spec(self, fullname: str, path: Any, target: ModuleType | None = None) -> Any:
        if fullname != self.name:
            return None
        return importlib.util.spec_from_loader(fullname, self, origin=str(self.path))

    def create_module(self, spec: Any) -> None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        module.__file__ = str(self.path)
        exec(compile(self.code, str(self.path), "exec"), module.__dict__)


def _run_child(name: str, path: Path, code: str, tests: list[str], imported: Path | None) -> int:
    """In a forked child: import `name` from `code`, run the tests, return pytest's exit code."""
    import pytest
    from hypothesis import settings

    settings.register_profile("mutation", database=None, deadline=None)
    settings.load_profile("mutation")
    sys.meta_path.insert(0, _MutantLoader(name, path, code))
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    exit_code = int(pytest.main(["-x", "-q", "-p", "no:cacheprovider", *tests]))
    if imported is not None:  # the baseline reports what to import once in the parent
        third_party = sorted(module for module, value in list(sys.modules.items()) if not _is_project_module(value))
        imported.write_text("\n".join(third_party))
    return exit_code


def _is_project_module(module: ModuleType | None) -> bool:
    file = getattr(module, "__file__", None)
    if not file:
        return module is not None and any(
            str(p).startswith(str(ROOT)) and ".venv" not in str(p) for p in getattr(module, "__path__", [])
        )
    resolved = Path(file).resolve()
    return resolved.is_relative_to(ROOT) and not resolved.is_relative_to(ROOT / ".venv")


def run_one(
    name: str, path: Path, code: str, tests: list[str], timeout: float, imported: Path | None = None
) -> tuple[str, float]:
    """Fork, run the tests against `code`, and classify the outcome."""
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        exit_code = 70  # EX_SOFTWARE: the child failed before pytest could report
        try:
            exit_code = _run_child(name, path, code, tests, imported)
        finally:
            os._exit(exit_code)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        elapsed = time.monotonic() - started
        if done:
            break
        if elapsed > timeout:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "timeout", elapsed
        time.sleep(0.02)
    exit_code = os.waitstatus_to_exitcode(status)
    if exit_code == 0:
        return "survived", elapsed
    if exit_code in (4, 5):  # usage error, no tests: the run itself is wrong
        raise SystemExit(f"pytest exit code {exit_code}: check the test paths {tests}")
    return "killed", elapsed


def _preload(names: list[str]) -> list[str]:
    """Import the third-party modules the tests use, once, so each child starts warm."""
    failed: list[str] = []
    for module in names:
        try:
            importlib.import_module(module)
        except Exception:  # noqa: BLE001 - a module that cannot be imported here is simply not preloaded
            failed.append(module)
    return failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("module", help="e.g. kernel/licet/kernel/globs.py")
    parser.add_argument("tests", nargs="+", help="test files, fastest and most specific first")
    parser.add_argument("--report", type=Path, help="write every mutant and its outcome as JSON here")
    parser.add_argument("--only", type=int, nargs="*", help="run only these mutant numbers")
    parser.add_argument("--sample", type=int, help="run only this many mutants, drawn at random (reproducibly)")
    parser.add_argument("--seed", type=int, default=27, help="the seed of --sample (default 27)")
    parser.add_argument("--list", action="store_true", help="print the mutants without running them")
    parser.add_argument(
        "--replace",
        nargs=2,
        action="append",
        metavar=("OLD", "NEW"),
        help="instead of mutmut's mutants, run the one mutant made by replacing the text OLD "
        "(which must occur exactly once) by NEW; repeat to change several places at once",
    )
    args = parser.parse_args()
    os.chdir(ROOT)
    path = Path(args.module).resolve()
    parts = path.with_suffix("").parts
    name = ".".join(parts[len(parts) - 1 - parts[::-1].index("licet") :])
    code = path.read_text()
    if args.replace:
        mutated = code
        for old, new in args.replace:
            if mutated.count(old) != 1:
                raise SystemExit(f"{old!r} occurs {mutated.count(old)} times in {args.module}, not once")
            mutated = mutated.replace(old, new)
        mutants = [(_described(1, code.splitlines(), mutated), mutated)]
    else:
        mutants = mutants_of(code)
    if args.list:
        for mutant, _ in mutants:
            print(f"#{mutant.number} line {mutant.line}: {mutant.before!r} -> {mutant.after!r}")
        return
    sys.dont_write_bytecode = True  # the tree is shared: leave no bytecode of a mutant behind

    marker = Path(f"/tmp/mutation-imports-{os.getpid()}.txt")
    outcome, baseline = run_one(name, path, code, args.tests, timeout=3600, imported=marker)
    if outcome != "survived":
        raise SystemExit(f"the tests fail on the unmutated {args.module}: fix that first")
    _preload(marker.read_text().split())
    marker.unlink()
    timeout = 5 * baseline + 10
    print(f"{name}: {len(mutants)} mutants, baseline {baseline:.1f} s, time limit {timeout:.0f} s", flush=True)

    selected = [(m, c) for m, c in mutants if not args.only or m.number in args.only]
    if args.sample is not None and args.sample < len(selected):
        # An estimate when a full run does not fit: a uniform sample, the same for the same seed.
        selected = sorted(random.Random(args.seed).sample(selected, args.sample), key=lambda pair: pair[0].number)
    for mutant, mutated in selected:
        mutant.outcome, mutant.seconds = run_one(name, path, mutated, args.tests, timeout)
        if mutant.outcome == "survived":
            print(f"  survived #{mutant.number} line {mutant.line}: {mutant.before!r} -> {mutant.after!r}", flush=True)
    counts = {kind: sum(m.outcome == kind for m, _ in selected) for kind in ("killed", "timeout", "survived")}
    print(
        f"{name}: {len(selected)} of {len(mutants)} mutants run, {counts['killed']} killed, "
        f"{counts['timeout']} timed out, {counts['survived']} survived"
    )
    if args.report:
        args.report.write_text(
            json.dumps(
                {
                    "module": name,
                    "tests": args.tests,
                    "baseline_seconds": baseline,
                    "total_mutants": len(mutants),
                    "mutants": [asdict(m) for m, _ in selected],
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
