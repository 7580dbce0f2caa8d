"""Every HTTP operation in /openapi.json fuzzed with schemathesis against the real app process.

For each operation, EXAMPLES requests valid by the schema and EXAMPLES invalid ones: none may get a
5xx, every answer must match the schema (errors included: ErrorBody), and none may take longer than
REQUEST_TIMEOUT_S. The app's memory (process and children) is sampled throughout: its peak and what
is left afterwards stay within generous bounds, as in test_memory.py. The app is a process of its
own, so that the voices and jobs the fuzzer creates meet no other test.
"""

import json
import time
from collections import Counter

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from .conftest import ROOT, launched_app
from .test_memory import PeakRss

EXAMPLES = 25  # per operation and generation mode
REQUEST_TIMEOUT_S = 60.0
MAX_INPUT_CHARS = 24  # speech texts cut to this: the fuzzer tests parsing and checking, not synthesis speed
PEAK_LIMIT_MIB = 600
AFTER_LIMIT_MIB = 300
CHECKS = [not_a_server_error, response_schema_conformance]


@pytest.fixture(scope="module")
def fuzzed_app(tmp_path_factory):
    with launched_app(tmp_path_factory.mktemp("fuzz-outputs")) as (url, _codes):
        yield url


def short_input(case) -> None:
    """Cut a generated speech text (the schema sets no length; the service takes 20,000 characters)."""
    if isinstance(case.body, dict) and isinstance(case.body.get("input"), str):
        case.body["input"] = case.body["input"][:MAX_INPUT_CHARS]


def existing_ids(url: str) -> dict[str, str]:
    """A saved voice and a batch job to aim at, beside the ids the fuzzer makes up (which only find 404s)."""
    prompt = ROOT / "examples" / "prompt" / "libri_367.flac"
    voice = httpx.post(
        f"{url}/v1/voices", files={"file": (prompt.name, prompt.read_bytes())}, data={"name": "fuzzed"}, timeout=120
    )
    lines = "\n".join(
        json.dumps({"uttid": f"u{n}", "prompt_text": "", "prompt_speech": "libri_367", "syn_text": "A short line."})
        for n in range(2)
    )
    job = httpx.post(f"{url}/v1/batch", json={"jsonl": lines, "name": "fuzzed"}, timeout=60)
    assert voice.status_code == 201 and job.status_code == 202, (voice.text, job.text)
    return {"voice_id": voice.json()["id"], "job_id": job.json()["id"]}


def fuzz(operation, url: str, mode: GenerationMode, statuses: Counter, path_parameters: dict[str, str] | None = None) -> None:
    """EXAMPLES generated requests of `mode` to one operation (with these path parameters, if given),
    each checked; counts their statuses."""
    calls = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,  # the same requests on every run: a failure reproduces
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: report the first failure as it came
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
    def each(case) -> None:
        short_input(case)
        response = case.call(base_url=url, timeout=REQUEST_TIMEOUT_S)
        calls.append(response.status_code)
        case.validate_response(response, checks=CHECKS)

    try:
        each()
    except Unsatisfiable:  # no invalid request exists for an operation without parameters or body
        assert mode is GenerationMode.NEGATIVE and not calls, operation.label
    statuses.update(calls)


def test_every_operation_fuzzed_gets_no_5xx_matches_its_schema_and_memory_comes_back(fuzzed_app):
    schema = schemathesis.openapi.from_url(f"{fuzzed_app}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15, [operation.label for operation in operations]
    pid = httpx.get(f"{fuzzed_app}/v1/status", timeout=10).json()["pid"]
    rss = PeakRss(pid)
    started, statuses = time.perf_counter(), Counter()
    ids = existing_ids(fuzzed_app)
    for operation in operations:
        for mode in GenerationMode:
            fuzz(operation, fuzzed_app, mode, statuses)
        known = {name: value for name, value in ids.items() if f"{{{name}}}" in operation.path}
        if known:
            fuzz(operation, fuzzed_app, GenerationMode.POSITIVE, statuses, known)
    seconds = time.perf_counter() - started
    before = rss.before
    peak, after = rss.stop()
    print(
        f"fuzzed {len(operations)} operations with {statuses.total()} requests in {seconds:.0f} s "
        f"(statuses: {dict(sorted(statuses.items()))}); "
        f"RSS before {before:.0f} MiB, peak +{peak:.0f} MiB, after +{after:.0f} MiB"
    )
    assert httpx.get(f"{fuzzed_app}/ready", timeout=10).status_code == 200
    assert peak < PEAK_LIMIT_MIB and after < AFTER_LIMIT_MIB, (peak, after)
