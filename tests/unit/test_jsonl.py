"""JSON lines with arbitrary Unicode: the writer escapes every line break, the reader splits at "\\n" only;
batch input, manifests and job state round-trip whatever characters they hold (hypothesis)."""

import json
import sys
from types import SimpleNamespace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from glmtts.files import dumps_line, split_lines
from glmtts.jobs.batchfile import lines_to_jsonl, parse_jsonl
from glmtts.jobs.disk_store import DiskJobQueue, JobState, _Job
from glmtts.jobs.manifest import MANIFEST, append_record, open_manifest, read_manifest
from glmtts.settings import PROJECT_ROOT
from glmtts.types import SynthesisOptions

PROMPT = PROJECT_ROOT / "examples" / "prompt" / "libri_367.flac"
# Every character str.splitlines() ends a line at: the class the writer must escape, derived, not listed.
SPLITLINES_BREAKS = [chr(code) for code in range(sys.maxunicode + 1) if len(f"a{chr(code)}b".splitlines()) == 2]
LINE_BREAKS = st.sampled_from(SPLITLINES_BREAKS)
ANY_TEXT = st.text(st.one_of(st.characters(exclude_categories=("Cs",)), LINE_BREAKS))  # surrogates cannot be UTF-8
EXAMPLES = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def test_every_line_break_is_escaped_in_a_written_line():
    assert {"\n", "\r", "\x85", "\u2028", "\u2029"} <= set(SPLITLINES_BREAKS)
    line = dumps_line({"text": "".join(SPLITLINES_BREAKS)})
    assert len(line.splitlines()) == 1 and "\n" not in line
    assert json.loads(line) == {"text": "".join(SPLITLINES_BREAKS)}


def test_a_raw_u2028_inside_a_jsonl_string_is_one_valid_line():
    raw = json.dumps(
        {"uttid": "a", "prompt_text": "", "prompt_speech": str(PROMPT), "syn_text": "one\u2028two\x85three"}, ensure_ascii=False
    )
    assert "\u2028" in raw and "\x85" in raw  # raw, as a JSON-lines file may hold them
    items = parse_jsonl(raw + "\r\n", [PROMPT.parent])
    assert [(item.error, item.syn_text) for item in items] == [("", "one\u2028two\x85three")]


def test_split_lines_ends_lines_at_newline_only():
    assert split_lines("a\u2028b\r\nc\x0bd\n\ne") == ["a\u2028b", "c\x0bd", "", "e"]
    assert split_lines(b"x\n") == ["x"] and split_lines("") == []


@EXAMPLES
@given(st.lists(st.dictionaries(ANY_TEXT, ANY_TEXT, max_size=3), max_size=5))
def test_jsonl_round_trip(records):
    text = "".join(dumps_line(record) + "\n" for record in records)
    assert [json.loads(line) for line in split_lines(text)] == records
    assert len(text.splitlines()) == len(records)  # also for readers that split like str.splitlines()


@EXAMPLES
@given(st.lists(st.tuples(ANY_TEXT, ANY_TEXT), min_size=1, max_size=5, unique_by=lambda pair: pair[0]))
def test_batch_input_round_trip(pairs):
    text = "".join(
        dumps_line({"uttid": uttid, "prompt_text": "", "prompt_speech": str(PROMPT), "syn_text": syn_text}) + "\n"
        for uttid, syn_text in pairs
    )
    items = parse_jsonl(text, [PROMPT.parent])
    assert [(item.raw_uttid, item.syn_text, item.error) for item in items] == [(uttid, text, "") for uttid, text in pairs]


@EXAMPLES
@given(st.lists(ANY_TEXT.filter(lambda line: line.strip() and "\n" not in line and "\r" not in line), min_size=1, max_size=5))
def test_text_mode_keeps_each_line_whole(lines):
    items = parse_jsonl(lines_to_jsonl("\n".join(lines), str(PROMPT)), [PROMPT.parent])
    assert [item.syn_text for item in items] == [line.strip() for line in lines]


@EXAMPLES
@given(st.lists(ANY_TEXT, min_size=1, max_size=6, unique=True))
def test_manifest_round_trip(tmp_path_factory, texts):
    folder = tmp_path_factory.mktemp("job")
    records = [{"uttid": f"u{index}", "status": "ok", "text": text} for index, text in enumerate(texts)]
    with open_manifest(folder) as log:
        for record in records:
            append_record(log, record)
    assert read_manifest(folder) == {record["uttid"]: record for record in records}
    assert len((folder / MANIFEST).read_text(encoding="utf-8").splitlines()) == len(records)


OPTIONS = st.builds(
    SynthesisOptions,
    seed=st.integers(0, 2**32 - 1),
    speed=st.floats(0.5, 2.0),
    sample_rate=st.sampled_from([None, 24000]),
    top_p=st.one_of(st.none(), st.floats(0.01, 1.0)),
    use_cache=st.booleans(),
)


@EXAMPLES
@given(ANY_TEXT, st.lists(ANY_TEXT, max_size=4), OPTIONS, ANY_TEXT)
def test_job_state_round_trip(tmp_path_factory, name, uttids, options, message):
    folder = tmp_path_factory.mktemp("batch") / "20260101-000000_job"
    folder.mkdir()
    jobs = DiskJobQueue(SimpleNamespace(), SimpleNamespace(), folder.parent, [])
    state = JobState(folder.name, name, "failed", uttids, options, "2026-01-01T00:00:00+00:00", message=message)
    jobs._save(_Job(state, folder))
    assert jobs._load(folder).state == state
