"""What schemathesis campaigns (tests/e2e/test_fuzz_openapi.py with random seeds) found,
one case each: the served schema says what the edge accepts, and the edge refuses what
the schema refuses with a 400 before any request reaches a sandbox's agent."""

from __future__ import annotations

import json
import re

import pytest
from starlette.requests import Request
from starlette.testclient import TestClient

from cove.agent import computer, computer_input, lsp
from cove.api.errors import envelope
from cove.errors import ClientGone
from cove.schemas import toolbox_computeruse as cu
from cove.schemas.toolbox_lsp import LanguageId
from tests.unit.api.conftest import AUTH, create_sandbox
from tests.unit.api.test_input_limits import CountingRuntime, _bad


@pytest.fixture
def runtime() -> CountingRuntime:
    return CountingRuntime()


REFUSED = {
    "move without y": ("post", "/computeruse/mouse/move", {"json": {"x": 1}}),
    "move to a fraction": ("post", "/computeruse/mouse/move", {"json": {"x": 1.5, "y": 2}}),
    "press at x without y": ("post", "/computeruse/mouse/down", {"json": {"x": 1}}),
    "press at a null x": ("post", "/computeruse/mouse/up", {"json": {"x": None, "y": 1}}),
    "an unknown button": ("post", "/computeruse/mouse/down", {"json": {"button": "fourth"}}),
    "11 clicks": ("post", "/computeruse/mouse/click", {"json": {"x": 1, "y": 1, "clicks": 11}}),
    "an unknown modifier": ("post", "/computeruse/mouse/click",
                            {"json": {"x": 1, "y": 1, "modifiers": ["hyper"]}}),
    "a drag without its end": ("post", "/computeruse/mouse/drag",
                               {"json": {"startX": 1, "startY": 1}}),
    "a scroll without direction": ("post", "/computeruse/mouse/scroll", {"json": {"x": 1, "y": 1}}),
    "typing without text": ("post", "/computeruse/keyboard/type", {"json": {"delay": 5}}),
    "a key with a space": ("post", "/computeruse/keyboard/key", {"json": {"key": "a b"}}),
    "no key to hold": ("post", "/computeruse/keyboard/down", {"json": {}}),
    "a hotkey of two keys": ("post", "/computeruse/keyboard/hotkey", {"json": {"keys": "a+b"}}),
    "a region past the screen": ("get", "/computeruse/screenshot/region",
                                 {"params": {"x": 1024, "y": 0, "width": 1, "height": 1}}),
    "a GIF screenshot": ("get", "/computeruse/screenshot/compressed",
                         {"params": {"format": "gif"}}),
    "an unknown language": ("post", "/lsp/start",
                            {"json": {"languageId": "cobol", "pathToProject": "/p"}}),
    "a document URI with NUL": ("post", "/lsp/did-open", {"json": {
        "languageId": "python", "pathToProject": "/p", "uri": "file:///a\0"}}),
    "symbols of an unknown language": ("get", "/lsp/workspacesymbols", {"params": {
        "query": "x", "languageId": "0", "pathToProject": "/p"}}),
}


@pytest.mark.parametrize("method,path,kwargs", REFUSED.values(), ids=REFUSED.keys())
def test_what_the_schema_refuses_never_reaches_the_agent(
    client: TestClient, runtime: CountingRuntime, method: str, path: str, kwargs: dict
) -> None:
    sid = create_sandbox(client)["id"]
    before = runtime.requests  # (the warm-up ping each create sends once answered)
    _bad(client.request(method, f"/toolbox/{sid}{path}", headers=AUTH, **kwargs))
    assert runtime.requests == before


def test_a_bulk_upload_with_a_stray_part_is_refused(client: TestClient,
                                                    runtime: CountingRuntime) -> None:  # fmt: skip
    sid = create_sandbox(client)["id"]
    before = runtime.requests  # (the warm-up ping each create sends once answered)
    r = client.post(f"/toolbox/{sid}/files/bulk-upload", headers=AUTH,
                    files={"±~\n": ("x", b"false"), "": ("y", b"true")})  # fmt: skip
    assert r.status_code == 400, r.text
    assert r.json()["files"] == [] and "unexpected part" in r.json()["errors"][0]
    assert runtime.requests == before
    doc = client.get("/openapi.json").json()["paths"]["/toolbox/{sandbox_id}/files/bulk-upload"]
    schema = doc["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert schema["propertyNames"]["pattern"] == r"^files\[(\d+)\]\.(path|file)$"


def test_a_state_filter_names_a_state(client: TestClient) -> None:
    sid = create_sandbox(client)["id"]
    _bad(client.get("/api/sandbox", params={"states": "-4.7786249383957624e+16"}, headers=AUTH),
         "states")  # fmt: skip
    r = client.get("/api/sandbox", params={"states": "forking"}, headers=AUTH)  # Daytona's
    assert r.status_code == 200 and r.json()["items"] == []
    r = client.get("/api/sandbox", params={"states": ["forking", "started"]}, headers=AUTH)
    assert [sb["id"] for sb in r.json()["items"]] == [sid]


def test_an_integral_number_is_an_integer(client: TestClient) -> None:
    """JSON Schema's integer includes 15.0; 15.5, true and "15" are not integers."""
    sid = create_sandbox(client, autoStopInterval=15.0)["id"]
    assert client.get(f"/api/sandbox/{sid}", headers=AUTH).json()["autoStopInterval"] == 15
    for bad in (15.5, True, "15"):
        _bad(client.post("/api/sandbox", json={"autoStopInterval": bad}, headers=AUTH),
             "autoStopInterval")  # fmt: skip


def test_the_schema_states_what_the_agent_accepts() -> None:
    assert cu.SCREEN == computer.SCREEN
    assert (cu.MAX_TEXT, cu.KEY.strip("^$")) == (computer_input.MAX_TEXT,
                                                 computer_input.KEY_RE.pattern)  # fmt: skip
    assert set(cu.Button.__args__) == set(computer_input.BUTTONS)
    assert set(LanguageId.__args__) == set(lsp.SERVERS)
    for name in computer_input.MODIFIERS:
        cu.MouseClickRequest.model_validate({"x": 0, "y": 0, "modifiers": [name.upper()]})
    for fmt in computer_input.FORMATS:
        assert re.fullmatch(cu.FORMAT, fmt.upper())


def test_the_answer_to_a_client_that_left_is_made_without_error() -> None:
    """A client that hung up (here: schemathesis' request timeout) gets a 499 nobody reads;
    making it must not raise (it did: 499 is no HTTPStatus), a 500 in the log."""
    scope = {"type": "http", "method": "POST", "path": "/toolbox/x/process/execute",
             "query_string": b"", "headers": []}  # fmt: skip
    gone = ClientGone()
    answer = envelope(Request(scope), gone.status_code, gone.message, gone.code)
    assert answer.status_code == 499
    assert json.loads(answer.body)["error"] == "Client Closed Request"


def test_answers_without_a_body_are_documented_without_one(client: TestClient) -> None:
    """The language server's start, stop, did-open and did-close answer an empty 200
    (as Daytona's daemon); the document said JSON (schemathesis: no Content-Type)."""
    paths = client.get("/openapi.json").json()["paths"]
    for name in ("start", "stop", "did-open", "did-close"):
        assert "content" not in paths[f"/toolbox/{{sandbox_id}}/lsp/{name}"]["post"][
            "responses"]["200"], name  # fmt: skip


def test_a_400_may_be_the_http_servers_plain_text(client: TestClient) -> None:
    """uvicorn refuses a request line above 16 KiB itself, in plain text (schemathesis:
    ``GET /api/sandbox`` with a 100 KiB ``labels``)."""
    listed = client.get("/openapi.json").json()["paths"]["/api/sandbox"]["get"]
    assert set(listed["responses"]["400"]["content"]) == {"application/json", "text/plain"}
