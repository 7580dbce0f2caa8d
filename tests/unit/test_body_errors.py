"""A body that cannot be read says what is wrong and where, on a tiny app with the real error handlers and models."""

import re
import sys
from types import SimpleNamespace

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from glmtts.http.batch import BatchBody
from glmtts.http.errors import install_error_handlers
from glmtts.http.forms import read_json
from glmtts.http.speech import SpeechBody
from glmtts.options import check_options

ENGINE = SimpleNamespace(name="embedded", sample_rates=(24000,), speed_range=(0.5, 2.0))
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/speech")
    def speech(body: SpeechBody) -> dict[str, object]:  # parsed by FastAPI, checked as the speech route checks
        options = check_options(ENGINE, {"seed": body.seed, "speed": body.speed, "sample_rate": body.sample_rate})
        return {"seed": options.seed}

    @app.post("/batch-options")
    async def batch_options(request: Request) -> dict[str, object]:  # as the batch route reads its JSON body
        body = BatchBody.model_validate(await read_json(request))
        return {"seed": check_options(ENGINE, body.model_dump(exclude={"jsonl", "name"})).seed}

    @app.post("/read-json")
    async def read(request: Request) -> dict[str, object]:  # parsed by the routes' own reader (batch jobs)
        return {"type": type(await read_json(request)).__name__}

    return TestClient(app)


@pytest.mark.parametrize(
    ("route", "body", "fields"),
    [
        ("/speech", {"input": "a"}, ("seed", "speed", "sample_rate")),
        ("/batch-options", {"jsonl": ""}, ("seed", "top_k", "top_p")),
    ],
)
def test_a_boolean_is_not_a_number_for_any_option(client, route, body, fields):
    assert client.post(route, json={**body, "seed": 7.0}).json() == {"seed": 7}
    for field in fields:
        response = client.post(route, json={**body, field: True})
        assert response.status_code == 400 and response.json()["error"]["param"] == field, response.text
    message = client.post(route, json={**body, "seed": True}).json()["detail"]
    assert "seed must be an integer from 0 to 4294967295, not a boolean (got true)" in message


DEPTH, DIGITS = 10_000, 5_000
UNREADABLE = {
    "truncated": (b'{"input": "hel', r"not valid JSON: Unterminated string starting at at line 1 column 11 \(character 10\)"),
    "on line 3": (b'{\n  "input": "a",\n  "seed": }', r"not valid JSON: Expecting value at line 3 column 11 \(character 28\)"),
    "not UTF-8": (b'{"input": "caf\xe9"}', r"not UTF-8: byte 0xE9 at offset 14 \(invalid continuation byte\)"),
    "deep": (b"[" * DEPTH + b"]" * DEPTH, f"nested deeper than the limit of about {sys.getrecursionlimit()} levels"),
    "long number": (
        b'{"input": "a", "seed": ' + b"9" * DIGITS + b"}",
        f"a number longer than {sys.get_int_max_str_digits()} digits",
    ),
}


@pytest.mark.parametrize("route", ["/speech", "/read-json"])
@pytest.mark.parametrize("case", UNREADABLE)
def test_an_unreadable_body_is_a_400_saying_what_and_where(client, route, case):
    body, message = UNREADABLE[case]
    response = client.post(route, content=body, headers=JSON)
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert detail == response.json()["error"]["message"] and re.search(message, detail), detail


def test_the_schema_declares_the_error_body_that_errors_carry(client):
    """Found by the fuzzer (tests/server/test_fuzz.py): /openapi.json promised FastAPI's HTTPValidationError for 422."""
    schema = client.app.openapi()
    operation = schema["paths"]["/speech"]["post"]
    assert operation["responses"]["422"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
    assert operation["responses"]["default"]["content"] == operation["responses"]["422"]["content"]
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    declared = schema["components"]["schemas"]["ErrorBody"]
    body = client.post("/speech", json={"input": 12}).json()  # input not a string: a 422 (a missing one is a 400)
    assert set(body) == set(declared["required"]) and set(body["error"]) == set(declared["properties"]["error"]["required"])
    assert isinstance(body["detail"], str) and body["detail"].startswith("input: Input should be a valid string")
