"""`licet policy test`: YAML files of cases, each a request (with optional session history and time) and
the decision expected for it, run against a policy; failures shown with the actual proof in words,
coverage (rules and invariants no case exercised), and a JUnit XML report.

The format is documented in docs/cli.md ("Policy tests").
"""

from __future__ import annotations

import json
import os
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from licet import kernel
from licet.cli_explain import certificate_view, explanation, outcome_headline
from licet.cli_inputs import Unreadable, load_located, moment, text_of
from licet.kernel.document import Located
from licet.output import BAD_INPUT, console, escape, fail

TOP_FIELDS = {"policy", "now", "description", "cases"}
CASE_FIELDS = {"name", "description", "request", "state", "now", "decision", "rules", "approval", "error"}
APPROVAL_FIELDS = {"quorum", "role", "ttl_seconds"}
DECISIONS = ("permit", "forbid", "deny", "require_approval", "invalid")
TEST_FOLDER = "tests"


@dataclass(frozen=True)
class Case:
    """One case of a test file: what to decide, when, and what is expected."""

    name: str
    line: int
    request: Mapping[str, Any]
    state: Mapping[str, Any] | None
    now: datetime | None
    decision: str
    rules: tuple[str, ...] | None  # None: the rules are not checked
    approval: Mapping[str, Any] | None
    error: str | None

    def expected(self) -> dict[str, Any]:
        """What the case expects, as JSON."""
        out: dict[str, Any] = {"decision": self.decision}
        if self.rules is not None:
            out["rules"] = list(self.rules)
        if self.approval is not None:
            out["approval"] = dict(self.approval)
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass(frozen=True)
class TestFile:
    """A loaded test file: the policy it tests and its cases."""

    file: str
    policy_file: str
    policy: kernel.Policy
    cases: tuple[Case, ...]


@dataclass
class Outcome:
    """What a case actually gave, and how that differs from what it expects ([] when it passed)."""

    case: Case
    decision: str  # the outcome, "invalid" for a refused request, "error" when the solver failed
    rules: tuple[str, ...] = ()
    approval: Mapping[str, Any] | None = None
    decided: dict[str, Any] | None = None  # Decision.to_json(), for the proof
    message: str = ""  # why the request was invalid, or the solver failed
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        actual: dict[str, Any] = {"decision": self.decision, "rules": list(self.rules)}
        if self.approval is not None:
            actual["approval"] = dict(self.approval)
        if self.message:
            actual["error"] = self.message
        return {
            "name": self.case.name,
            "line": self.case.line,
            "passed": self.passed,
            "expected": self.case.expected(),
            "actual": actual,
            "problems": self.problems,
        }


# --- finding and loading test files ---------------------------------------------------------------


def test_files(paths: list[str]) -> list[Path]:
    """Each file as given; in a folder, every *.yaml and *.yml file inside a folder named `tests` at or
    below it (so `licet policy test examples/` finds `examples/<policy>/tests/*.yaml`)."""
    found: list[Path] = []
    for value in paths:
        path = Path(value)
        if not path.is_dir():
            found.append(path)
            continue
        inside = sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and p.suffix in (".yaml", ".yml") and TEST_FOLDER in p.relative_to(path.parent).parts[:-1]
        )
        if not inside:
            raise fail(f"{value}: no test files (*.yaml in a folder named {TEST_FOLDER}/)")
        found.extend(inside)
    return found


class _Loader:
    """Validates one test file's document, every error pointing at FILE:LINE:COL of the field."""

    def __init__(self, located: Located, base: Path) -> None:
        self.doc = located
        self.base = base

    def fail(self, where: str, message: str) -> kernel.PolicyError:
        return self.doc.error(where, message)

    def mapping(self, value: Any, where: str, allowed: set[str], required: set[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, "must be a mapping")
        for key in value:
            if key not in allowed:
                raise self.fail(
                    f"{where}.{key}" if where else key, f"unknown field {key!r} (allowed: {', '.join(sorted(allowed))})"
                )
        missing = sorted(required - set(value))
        if missing:
            raise self.fail(where, f"missing required field {missing[0]!r}")
        return value

    def time(self, value: Any, where: str) -> datetime:
        try:
            return moment(value)
        except ValueError as exc:
            raise self.fail(where, str(exc)) from exc

    def json_file(self, value: str, where: str) -> Any:
        path = Path(os.path.normpath(self.base / value))
        try:
            return json.loads(text_of(path))
        except Unreadable as exc:
            raise self.fail(where, f"{path}: {exc}") from exc
        except ValueError as exc:
            raise self.fail(where, f"{path}: not valid JSON ({exc})") from exc

    def document(self, value: Any, where: str) -> Mapping[str, Any]:
        """An inline mapping, or a JSON file named relative to the test file."""
        loaded = self.json_file(value, where) if isinstance(value, str) else value
        if not isinstance(loaded, dict):
            raise self.fail(where, "must be a mapping, or the name of a JSON file holding one")
        return loaded

    def state(self, value: Any, where: str) -> Mapping[str, Any]:
        state = dict(self.document(value, where))
        history = state.get("history")
        if isinstance(history, list):
            # Inline histories may date their events like the rest of the file; the kernel takes epoch seconds.
            state["history"] = [
                {**event, "time": self.time(event["time"], f"{where}.history[{i}].time").timestamp()}
                if isinstance(event, dict) and "time" in event and not isinstance(event["time"], (int, float))
                else event
                for i, event in enumerate(history)
            ]
        return state

    def case(self, value: Any, where: str, policy: kernel.Policy) -> Case:
        item = self.mapping(value, where, CASE_FIELDS, {"name", "request", "decision"})
        name = item["name"]
        if not isinstance(name, str) or not name:
            raise self.fail(f"{where}.name", "must be a non-empty string")
        decision = item["decision"]
        if decision not in DECISIONS:
            raise self.fail(f"{where}.decision", f"must be one of {', '.join(DECISIONS)}")
        rules = item.get("rules")
        if rules is not None:
            if not isinstance(rules, list) or not all(isinstance(r, str) for r in rules):
                raise self.fail(f"{where}.rules", "must be a list of rule and invariant ids")
            known = {r.id for r in policy.rules} | {i.id for i in policy.invariants}
            for i, rule in enumerate(rules):
                if rule not in known:
                    raise self.fail(f"{where}.rules[{i}]", f"policy {policy.id} has no rule or invariant {rule!r}")
            if decision == "invalid" and rules:
                raise self.fail(f"{where}.rules", "an invalid request is decided by no rule")
        approval = item.get("approval")
        if approval is not None:
            self.mapping(approval, f"{where}.approval", APPROVAL_FIELDS, set())
            if decision != "require_approval":
                raise self.fail(f"{where}.approval", "only a require_approval decision has an approval")
        error = item.get("error")
        if error is not None and (decision != "invalid" or not isinstance(error, str)):
            raise self.fail(f"{where}.error", "a text the error contains, for an invalid decision only")
        return Case(
            name=name,
            line=self.doc.positions.get(where, (0, 0))[0],
            request=self.document(item["request"], f"{where}.request"),
            state=self.state(item["state"], f"{where}.state") if "state" in item else None,
            now=self.time(item["now"], f"{where}.now") if "now" in item else None,
            decision=decision,
            rules=tuple(sorted(rules)) if rules is not None else None,
            approval=approval,
            error=error,
        )


def load_test_file(path: Path, default_policy: Path | None) -> TestFile:
    """Read and validate a test file and the policy it tests; raises `kernel.PolicyError` (FILE:LINE:COL)."""
    try:
        text = text_of(path)
    except Unreadable as exc:
        raise kernel.PolicyError(str(exc), file=str(path), line=1, column=1) from exc
    located = load_located(text, str(path))
    loader = _Loader(located, path.parent)
    top = loader.mapping(located.value, "", TOP_FIELDS, {"cases"})
    if "policy" in top:
        if not isinstance(top["policy"], str):
            raise loader.fail("policy", "must be the policy file's path, relative to this file")
        policy_path = Path(os.path.normpath(path.parent / top["policy"]))
    elif default_policy is not None:
        policy_path = default_policy
    else:
        raise loader.fail("", "names no policy: add `policy: <file>` or pass --policy")
    try:
        policy = kernel.load_policy(text_of(policy_path), str(policy_path))
    except Unreadable as exc:
        raise loader.fail("policy", f"{policy_path}: {exc}") from exc
    now = loader.time(top["now"], "now") if "now" in top else None
    cases = top["cases"]
    if not isinstance(cases, list) or not cases:
        raise loader.fail("cases", "must be a non-empty list of cases")
    loaded: list[Case] = []
    for i, item in enumerate(cases):
        case = loader.case(item, f"cases[{i}]", policy)
        if any(c.name == case.name for c in loaded):
            raise loader.fail(f"cases[{i}].name", f"a second case named {case.name!r}")
        loaded.append(case if case.now is not None or now is None else replace(case, now=now))
    return TestFile(str(path), str(policy_path), policy, tuple(loaded))


# --- running ----------------------------------------------------------------------------------------


def run_case(policy: kernel.Policy, case: Case, default_now: datetime) -> Outcome:
    """Decide the case's request and compare the result with what it expects."""
    started = time.perf_counter()
    try:
        decision = kernel.decide(policy, case.request, state=case.state, now=case.now or default_now)
    except kernel.InvalidRequest as exc:
        # A malformed history is the test file's mistake, not a request the kernel refused: never a pass.
        broken_state = exc.field == "state" or exc.field.startswith("state.")
        outcome = Outcome(
            case,
            "error" if broken_state else "invalid",
            message=f"the case's state is invalid: {exc}" if broken_state else str(exc),
        )
    except kernel.LicetError as exc:  # the solver could not decide: never a pass
        outcome = Outcome(case, "error", message=str(exc))
    else:
        decided = decision.to_json()
        outcome = Outcome(case, decision.outcome, tuple(sorted(decision.rules)), decided["approval"], decided)
    outcome.seconds = time.perf_counter() - started
    outcome.problems = _differences(case, outcome)
    return outcome


def _differences(case: Case, actual: Outcome) -> list[str]:
    if actual.decision != case.decision:
        got = f"{actual.decision} ({actual.message})" if actual.message else actual.decision
        return [f"expected {case.decision}, got {got}"]
    problems = []
    if case.rules is not None and tuple(case.rules) != actual.rules:
        problems.append(f"expected rules [{', '.join(case.rules)}], got [{', '.join(actual.rules)}]")
    for key, value in (case.approval or {}).items():
        approved = (actual.approval or {}).get(key)
        if approved != value:
            problems.append(f"expected approval {key} {value!r}, got {approved!r}")
    if case.error is not None and case.error not in actual.message:
        problems.append(f"expected an error containing {case.error!r}, got {actual.message!r}")
    return problems


@dataclass
class FileReport:
    """The outcomes of one test file's cases."""

    test: TestFile
    outcomes: list[Outcome]


@dataclass
class Report:
    """Every file's outcomes, and per policy the rules and invariants no case exercised."""

    files: list[FileReport]

    @property
    def passed(self) -> bool:
        return all(o.passed for f in self.files for o in f.outcomes)

    def coverage(self) -> list[dict[str, Any]]:
        """Per policy tested (by content hash): the rules and invariants that decided at least one case,
        and those that decided none."""
        by_hash: dict[str, tuple[kernel.Policy, str, set[str]]] = {}
        for report in self.files:
            policy = report.test.policy
            _, _, used = by_hash.setdefault(policy.hash, (policy, report.test.policy_file, set()))
            used.update(rule for o in report.outcomes for rule in o.rules)
        out = []
        for policy, policy_file, used in by_hash.values():
            every = [r.id for r in policy.rules] + [i.id for i in policy.invariants]
            out.append(
                {
                    "policy": policy.id,
                    "file": policy_file,
                    "hash": policy.hash,
                    "rules": len(every),
                    "exercised": [r for r in every if r in used],
                    "never": [r for r in every if r not in used],
                }
            )
        return out

    def counts(self) -> tuple[int, int]:
        outcomes = [o for f in self.files for o in f.outcomes]
        return len(outcomes), sum(1 for o in outcomes if not o.passed)

    def to_json(self) -> dict[str, Any]:
        total, failed = self.counts()
        return {
            "passed": self.passed,
            "cases": total,
            "failed": failed,
            "files": [
                {"file": f.test.file, "policy": f.test.policy_file, "cases": [o.to_json() for o in f.outcomes]}
                for f in self.files
            ],
            "coverage": self.coverage(),
        }

    def print(self, *, verbose: bool, json_out: bool) -> None:
        """The report on standard output: JSON, or failures with their proofs, then coverage."""
        if json_out:
            print(json.dumps(self.to_json(), indent=2))
            return
        for report in self.files:
            for outcome in report.outcomes:
                if outcome.passed:
                    if verbose:
                        console.print(
                            f"[green]ok[/]   {escape(report.test.file)}:{outcome.case.line} "
                            f"{escape(outcome.case.name)}",
                            highlight=False,
                        )
                    continue
                for line in failure_lines(report.test, outcome):
                    console.print(line, highlight=False)
        for item in self.coverage():
            never = item["never"]
            console.print(
                f"coverage {escape(item['policy'])} ({escape(item['file'])}): "
                f"{len(item['exercised'])}/{item['rules']} rules and invariants exercised"
                + (f"; never: {escape(', '.join(never))}" if never else ""),
                highlight=False,
            )
        total, failed = self.counts()
        status = "[red]FAILED[/]" if failed else "[green]passed[/]"
        console.print(
            f"{status}: {total - failed} of {total} cases passed in {len(self.files)} file(s)", highlight=False
        )

    def write_junit(self, path: Path) -> None:
        """A JUnit XML report (one testsuite per test file, one testcase per case)."""
        total, failed = self.counts()
        seconds = sum(o.seconds for f in self.files for o in f.outcomes)
        suites = ET.Element(
            "testsuites",
            name="licet policy test",
            tests=str(total),
            failures=str(failed),
            errors="0",
            time=f"{seconds:.3f}",
        )
        coverage = {item["hash"]: item for item in self.coverage()}
        for report in self.files:
            outcomes = report.outcomes
            suite = ET.SubElement(
                suites,
                "testsuite",
                name=report.test.file,
                tests=str(len(outcomes)),
                failures=str(sum(1 for o in outcomes if not o.passed)),
                errors="0",
                time=f"{sum(o.seconds for o in outcomes):.3f}",
            )
            for outcome in outcomes:
                testcase = ET.SubElement(
                    suite,
                    "testcase",
                    classname=report.test.policy.id,
                    name=outcome.case.name,
                    file=report.test.file,
                    line=str(outcome.case.line),
                    time=f"{outcome.seconds:.3f}",
                )
                if not outcome.passed:
                    failure = ET.SubElement(testcase, "failure", message="; ".join(outcome.problems), type="decision")
                    failure.text = "\n".join(_plain(line) for line in failure_lines(report.test, outcome))
            never = coverage[report.test.policy.hash]["never"]
            ET.SubElement(suite, "system-out").text = (
                f"rules and invariants of {report.test.policy.id} no case exercised: "
                f"{', '.join(never) if never else 'none'}"
            )
        ET.indent(suites)
        ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)


def failure_lines(test: TestFile, outcome: Outcome) -> list[str]:
    """A failed case: where it is, what differed, and the actual decision's proof in words."""
    lines = [f"[red]FAIL[/] {escape(test.file)}:{outcome.case.line} {escape(outcome.case.name)}"]
    lines.extend(f"     {escape(problem)}" for problem in outcome.problems)
    if outcome.decided is not None:
        lines.append(f"     actual: {outcome_headline(outcome.decision, outcome.rules)}")
        lines.extend(explanation(certificate_view(outcome.decided), test.policy, indent="       "))
    return lines


def _plain(markup: str) -> str:
    from rich.text import Text

    return Text.from_markup(markup).plain


def run_policy_tests(paths: list[str], default_policy: Path | None) -> Report:
    """Load every test file (all invalid ones reported, then exit 2), then run every case."""
    files, broken = [], 0
    for path in test_files(paths):
        try:
            files.append(load_test_file(path, default_policy))
        except kernel.PolicyError as exc:
            print(exc.render(), file=sys.stderr)
            broken += 1
    if broken:
        raise typer.Exit(BAD_INPUT)
    now = datetime.now(UTC)
    return Report([FileReport(test, [run_case(test.policy, case, now) for case in test.cases]) for test in files])
