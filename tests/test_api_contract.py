"""The API contract: the served OpenAPI document is valid, every example in it validates against its
schema, every success response is typed, each operation's security and error statuses follow from
its dependencies, the error codes are one registry (docs/errors.md is generated from it, and no code
outside it can be raised), and /docs and /redoc work with no network but the server's own."""

from __future__ import annotations

import ast
import inspect
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate

from licet.server import errors
from licet.server.app import create_app
from licet.server.contract import BEGIN, END, errors_markdown
from licet.server.errors import ERRORS, ApiError
from licet.server.route_table import route_mark, route_table, walk_routes
from licet.server.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SERVER_SOURCE = ROOT / "server" / "licet" / "server"
ERRORS_DOC = ROOT / "docs" / "errors.md"


def _app() -> Any:
    data_dir = Path(tempfile.mkdtemp())
    return create_app(Settings(data_dir=data_dir, database_url=f"sqlite+aiosqlite:///{data_dir}/unused.db"))


APP = _app()


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    """The document the server serves at /openapi.json."""
    with TestClient(APP) as client:
        served = client.get("/openapi.json")
    assert served.status_code == 200
    return dict(served.json())


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield method.upper(), path, operation


def test_the_served_document_is_valid_openapi(document: dict[str, Any]) -> None:
    validate(document)  # raises, naming the place, if it is not a valid OpenAPI 3.1 document
    broken = json.loads(json.dumps(document))
    broken["paths"]["/v1/decide"]["post"]["responses"]["200"] = {"content": {}}  # no description
    with pytest.raises(Exception, match="description"):
        validate(broken)


def _examples(node: Any, schema_context: bool) -> Iterator[tuple[dict[str, Any], Any]]:
    """(schema, example) for every example in the document: `examples` lists in schemas, `example`
    and `examples` maps in media types and parameters."""
    if isinstance(node, dict):
        if schema_context and isinstance(node.get("examples"), list):
            for example in node["examples"]:
                yield {k: v for k, v in node.items() if k != "examples"}, example
        if "schema" in node and isinstance(node["schema"], dict):
            if "example" in node:
                yield node["schema"], node["example"]
            if isinstance(node.get("examples"), dict):
                for named in node["examples"].values():
                    yield node["schema"], named["value"]
        for key, value in node.items():
            yield from _examples(value, schema_context=key in ("schema", "schemas", "properties", "items")
                                 or (schema_context and key not in ("examples", "example")))
    elif isinstance(node, list):
        for item in node:
            yield from _examples(item, schema_context)


def test_every_example_round_trips_and_validates_against_its_schema(document: dict[str, Any]) -> None:
    found = list(_examples(document, schema_context=False))
    assert len(found) >= 20, "the document should carry examples"
    for schema, example in found:
        assert json.loads(json.dumps(example)) == example  # plain JSON, nothing lost on the way
        validator = OAS31Validator({"allOf": [schema], "components": document["components"]})
        problems = [e.message for e in validator.iter_errors(example)]
        assert not problems, f"example {example!r} does not match {schema!r}: {problems}"


def test_a_wrong_example_is_caught(document: dict[str, Any]) -> None:
    schema = {"$ref": "#/components/schemas/Certificate"}
    validator = OAS31Validator({"allOf": [schema], "components": document["components"]})
    assert not list(validator.iter_errors(document["components"]["schemas"]["Certificate"]["examples"][0]))
    assert list(validator.iter_errors({"id": "no other field"}))


def test_every_success_response_is_typed(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for method, path, operation in _operations(document):
        successes = {s: r for s, r in operation["responses"].items() if s.startswith("2")}
        assert successes, f"{method} {path} documents no success"
        for response in successes.values():
            for media, content in response["content"].items():
                schema = content["schema"]
                if media != "application/json":
                    assert schema == {"type": "string"} or schema.get("type") == "string", (method, path, media)
                    continue
                assert set(schema) == {"$ref"}, f"{method} {path}: {schema}"
                model = schemas[schema["$ref"].rsplit("/", 1)[1]]
                assert model["type"] == "object" and model["properties"], (method, path)
                assert model.get("additionalProperties") is False, f"{method} {path}: untyped extra fields"


def test_security_follows_the_role_table(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["apiKey"] == {**schemes["apiKey"], "type": "http", "scheme": "bearer"}
    assert schemes["sessionCookie"]["name"] == "licet_session" and schemes["sessionCookie"]["in"] == "cookie"
    assert schemes["csrfToken"]["name"] == "X-CSRF-Token" and schemes["csrfToken"]["in"] == "header"
    rows = route_table(APP)
    assert len(rows) >= 50
    for row in rows:
        security = document["paths"][row.path][row.method.lower()]["security"]
        names = [set(requirement) for requirement in security]
        if row.permission == "public":
            assert security == [], row
            continue
        assert ({"apiKey"} in names) == (row.permission != "account" and not row.step_up), row
        assert {"sessionToken"} in names, row
        cookie = {"sessionCookie", "csrfToken"} if row.method != "GET" else {"sessionCookie"}
        assert cookie in names, row
    for path in ("/healthz", "/readyz", "/metrics"):
        assert document["paths"][path]["get"]["security"] == []


def test_error_statuses_are_listed_with_the_error_schema(document: dict[str, Any]) -> None:
    for method, path, operation in _operations(document):
        errors_listed = {s: r for s, r in operation["responses"].items() if int(s) >= 400}
        assert "500" in errors_listed, (method, path)
        for status, response in errors_listed.items():
            assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
            for code in response["x-error-codes"]:
                assert int(status) in ERRORS[code].statuses, (method, path, code)
        if operation.get("security"):
            assert {"401", "403"} <= set(errors_listed), (method, path)
    assert "HTTPValidationError" not in document["components"]["schemas"]  # FastAPI's 422, never sent


def _raised_codes(node: ast.AST) -> Iterator[tuple[str, int | None, int]]:
    """(code, status, line) of every ApiError(status, "code", …), not_found(…) and error_body("code", …)."""
    for call in ast.walk(node):
        if not isinstance(call, ast.Call):
            continue
        name = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", None)
        args = call.args
        if name == "ApiError" and len(args) >= 2 and isinstance(args[1], ast.Constant):
            status = args[0].value if isinstance(args[0], ast.Constant) else None
            yield str(args[1].value), status, call.lineno
        elif name == "not_found":
            yield "not_found", 404, call.lineno
        elif name == "error_body" and args and isinstance(args[0], ast.Constant):
            yield str(args[0].value), None, call.lineno


def test_every_code_raised_in_the_server_is_registered() -> None:
    seen = set()
    for source in SERVER_SOURCE.rglob("*.py"):
        for code, status, line in _raised_codes(ast.parse(source.read_text())):
            where = f"{source.relative_to(ROOT)}:{line}"
            assert code in ERRORS, f"{where}: {code!r} is not in errors.ERRORS"
            assert status is None or status in ERRORS[code].statuses, f"{where}: {code!r} is not sent with {status}"
            seen.add(code)
    assert len(seen) >= 35  # the scan finds the calls (a scan that finds none proves nothing)


def test_an_unregistered_code_cannot_be_raised() -> None:
    with pytest.raises(LookupError, match="not_a_code"):
        ApiError(400, "not_a_code", "x")
    with pytest.raises(LookupError, match="not_found"):
        ApiError(418, "not_found", "x")  # a registered code with another status
    with pytest.raises(LookupError):
        errors.error_body("not_a_code", "x")
    assert ApiError(404, "not_found", "x").status == 404


def _module_functions(tree: ast.Module) -> dict[str, ast.AST]:
    return {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}


def _codes_reached(function: ast.AST, functions: dict[str, ast.AST], seen: set[str]) -> set[str]:
    """Codes a function raises itself or through the functions of its own module it calls."""
    codes = {code for code, _, _ in _raised_codes(function)}
    for call in ast.walk(function):
        if (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id in functions
                and call.func.id not in seen):
            seen.add(call.func.id)
            codes |= _codes_reached(functions[call.func.id], functions, seen)
    return codes


def test_each_route_lists_the_codes_its_own_code_raises(document: dict[str, Any]) -> None:
    checked = 0
    for route in walk_routes(APP.routes):
        if not route.include_in_schema:
            continue
        module = inspect.getmodule(route.endpoint)
        assert module is not None and module.__file__ is not None
        tree = ast.parse(Path(module.__file__).read_text())
        functions = _module_functions(tree)
        if route.endpoint.__name__ not in functions:  # the operations routes, defined inside create_app
            assert not route.path.startswith("/v1"), route.path
            continue
        raised = _codes_reached(functions[route.endpoint.__name__], functions, {route.endpoint.__name__})
        for method in route.methods or ():
            operation = document["paths"][route.path_format][method.lower()]
            listed = {c for r in operation["responses"].values() for c in r.get("x-error-codes", [])}
            assert raised <= listed, f"{method} {route.path_format} raises {sorted(raised - listed)} unlisted"
            checked += 1 if raised else 0
    assert checked >= 20


def test_errors_md_is_generated_from_the_registry(document: dict[str, Any]) -> None:
    text = ERRORS_DOC.read_text()
    table = text[text.index(BEGIN) + len(BEGIN):text.index(END)].strip()
    assert table == errors_markdown(document).strip(), \
        "docs/errors.md is stale: regenerate its table with licet.server.contract.errors_markdown"
    for code in ERRORS:
        assert f"| `{code}` |" in table


def test_every_route_has_one_permission_check_or_is_an_operations_route() -> None:
    for route in walk_routes(APP.routes):
        mark = route_mark(route)
        assert (mark is None) == (not route.path.startswith("/v1")), route.path


def test_evidence_keys_has_the_shape_the_sdk_reads(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    response = document["paths"]["/v1/evidence/keys"]["get"]["responses"]["200"]
    keys = schemas[response["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]]
    assert set(keys["required"]) == {"certificate_keys", "log", "history"}
    assert set(schemas["PublicKey"]["required"]) == {"type", "key_id", "public_key"}
    assert set(schemas["KeyPeriod"]["required"]) == {"type", "key_id", "public_key", "not_before", "not_after",
                                                     "status", "log_verifier_key"}
    assert set(schemas["LogKey"]["required"]) == {"origin", "verifier_key"}


# ------------------------------------------------------------------- /docs and /redoc, offline


def _browser_ready() -> bool:
    from tests.server_harness import IN_CI
    if Path("/usr/bin/chromium").exists():
        return True
    if IN_CI:
        raise RuntimeError("Chromium is missing (/usr/bin/chromium): scripts/test installs it")
    return False


@pytest.fixture(scope="module")
def live_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`licet serve` (the dashboard mounted too), as an operator starts it."""
    from tests.server_harness import launch
    data_dir = tmp_path_factory.mktemp("docs-server")
    process, url = launch(f"sqlite+aiosqlite:///{data_dir / 'licet.db'}", data_dir, data_dir / "server.log")
    yield url
    process.terminate()
    process.wait(10)


@pytest.mark.skipif(not _browser_ready(), reason="Chromium is not installed")
def test_docs_and_redoc_render_offline_with_an_authorize_button(live_url: str) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    outside: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"])
        page = browser.new_page()

        def only_the_server(route: Any) -> None:
            if route.request.url.startswith(live_url):
                route.continue_()
            else:  # blocked: the pages must render without them
                # ReDoc's footer shows Redocly's logo from its CDN; a missing image changes nothing else.
                if route.request.url != "https://cdn.redoc.ly/redoc/logo-mini.svg":
                    outside.append(f"{route.request.resource_type} {route.request.url}")
                route.abort()

        page.route("**/*", only_the_server)
        page.goto(f"{live_url}/docs")
        authorize = page.locator("button.authorize")
        authorize.wait_for(timeout=30_000)
        page.locator(".opblock-summary-path", has_text="/v1/decide").first.wait_for()
        shots = ROOT / "test-artifacts" / "screenshots"
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / "docs.png"), full_page=False)
        authorize.click()
        dialog = page.locator(".modal-ux")
        dialog.wait_for()
        for scheme in ("apiKey", "sessionToken", "sessionCookie", "csrfToken"):
            assert dialog.get_by_text(scheme).count() >= 1, scheme
        page.screenshot(path=str(shots / "docs-authorize.png"), full_page=False)
        page.goto(f"{live_url}/redoc")
        page.locator("h2", has_text="Decide an action and certify the decision").first.wait_for(timeout=30_000)
        page.screenshot(path=str(shots / "redoc.png"), full_page=False)
        browser.close()
    assert outside == [], f"the documentation pages asked for resources elsewhere: {outside}"
    assert (ROOT / "test-artifacts" / "screenshots" / "docs.png").stat().st_size > 10_000
