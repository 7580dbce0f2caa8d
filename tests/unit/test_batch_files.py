"""Batch-file validation and prompt-path confinement (no model needed)."""

import json
from pathlib import Path

import numpy as np
import pytest

from glmtts.audio import crossfade_join, read_prompt
from glmtts.files import dumps_line
from glmtts.jobs.batchfile import (
    BatchItem,
    BatchTooLarge,
    confine_path,
    lines_to_jsonl,
    parse_jsonl,
    safe_name,
    uttid_collisions,
)
from glmtts.settings import PROJECT_ROOT, Settings
from glmtts.types import SynthesisError

ALLOWED = Settings().allowed_roots


def line(**record) -> str:
    base = {"uttid": "u1", "prompt_text": "", "prompt_speech": "examples/prompt/libri_367.flac", "syn_text": "Hello."}
    base.update(record)
    return json.dumps({k: v for k, v in base.items() if v is not ...}, ensure_ascii=False)


def test_valid_lines_resolve_inside_examples():
    items = parse_jsonl("\n".join([line(uttid="a"), "", line(uttid="b", syn_text="你好")]), ALLOWED)
    assert [i.uttid for i in items] == ["a", "b"]
    assert all(not i.error for i in items)
    assert items[0].prompt_speech == (PROJECT_ROOT / "examples/prompt/libri_367.flac").resolve()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (line(syn_text=...), "missing syn_text"),
        (line(prompt_speech=["x"]), "prompt_speech must be text"),
        (line(prompt_speech="../../etc/passwd"), "outside the allowed folders"),
        (line(prompt_speech="/etc/passwd"), "outside the allowed folders"),
        (line(prompt_speech="examples/prompt/../../app.py"), "outside the allowed folders"),
        (line(prompt_speech="examples/prompt/missing.wav"), "does not exist"),
        (line(prompt_speech="examples/prompt/a\u0000.wav"), "not a usable path"),
        (line(prompt_speech="x" * 5000), "not a usable path"),
        (line(prompt_speech="examples/" + "y" * 300 + ".wav"), "not a usable path"),
        ("[" * 5000 + "]" * 5000, "nested too deeply"),
        ('{"uttid": ' * 5000 + "1" + "}" * 5000, "nested too deeply"),
    ],
)
def test_bad_lines_are_kept_with_their_error(text, message):
    items = parse_jsonl("\n".join([line(uttid="good"), text, line(uttid="after")]), ALLOWED)
    assert items[0].error == "" and items[2].error == ""
    assert message in items[1].error and items[1].error.startswith("line 2:")


def test_symlink_out_of_allowed_folder_is_refused(tmp_path):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "escape.wav").symlink_to(PROJECT_ROOT / "app.py")
    with pytest.raises(SynthesisError, match="outside"):
        confine_path(str(allowed / "escape.wav"), [allowed])


def test_unsafe_uttids_become_safe_file_names():
    items = parse_jsonl("\n".join([line(uttid="../x"), line(uttid="")]), ALLOWED)
    assert [i.uttid for i in items] == ["x", "line2"]
    assert safe_name("..", "fallback") == "fallback"
    assert uttid_collisions(items) == []


@pytest.mark.parametrize(
    ("uttids", "lines"),
    [
        (["a_1", "a", "a"], "lines 2, 3"),
        (["../x", "x"], "lines 1, 2"),
        (["A", "b", "a"], "lines 1, 3"),
        (["语音", "语音"], "lines 1, 2"),
    ],
)
def test_colliding_uttids_are_named_with_their_lines(uttids, lines):
    items = parse_jsonl("\n".join(line(uttid=u) for u in uttids), ALLOWED)
    [message] = uttid_collisions(items)
    assert message.startswith(lines) and "own uttid" in message


def test_empty_and_oversized_files_are_refused():
    with pytest.raises(SynthesisError, match="no utterances"):
        parse_jsonl("\n\n", ALLOWED)
    with pytest.raises(SynthesisError, match="larger than"):
        lines_to_jsonl("x" * (3 * 1024 * 1024), "libri_367")


def test_too_many_lines_are_refused_before_any_is_parsed(monkeypatch):
    parsed = []
    monkeypatch.setattr("glmtts.jobs.batchfile.confine_path", lambda raw, roots: parsed.append(raw))
    with pytest.raises(BatchTooLarge, match="1001 utterances; the limit is 1000"):
        parse_jsonl("\n".join(line(uttid=f"u{i}") for i in range(1001)), ALLOWED)
    assert parsed == []


def test_items_stored_as_records_come_back_equal_with_paths_and_voice_names_apart():
    jsonl = "\n".join([line(uttid="by_path"), line(uttid="by_name", prompt_speech="libri_367"), "{broken"])
    items = parse_jsonl(jsonl, ALLOWED, voice_names={"libri_367"})
    stored = [json.loads(dumps_line(item.to_record())) for item in items]
    assert [BatchItem.from_record(record) for record in stored] == items
    assert isinstance(items[0].prompt_speech, Path) and items[1].prompt_speech == "libri_367"
    assert items[2].prompt_speech is None and items[2].error


def test_text_mode_gives_one_item_a_line_in_one_voice():
    jsonl = lines_to_jsonl("first\n\n  second  \n", "libri_367", "its transcript")
    items = parse_jsonl(jsonl, ALLOWED, voice_names={"libri_367"})
    assert [(i.uttid, i.syn_text, i.prompt_speech, i.prompt_text, i.error) for i in items] == [
        ("0001", "first", "libri_367", "its transcript", ""),
        ("0003", "second", "libri_367", "its transcript", ""),
    ]


def test_text_mode_ends_lines_at_newlines_only_never_inside_an_utterance():
    jsonl = lines_to_jsonl("one\r\ntwo\rthree\u2028still three\x85and\x0cthree\n", "libri_367")
    assert len(jsonl.splitlines()) == 3  # escaped: even readers that split like str.splitlines() see 3 lines
    items = parse_jsonl(jsonl, ALLOWED, voice_names={"libri_367"})
    assert [item.syn_text for item in items] == ["one", "two", "three\u2028still three\x85and\x0cthree"]


def test_a_jsonl_line_is_split_at_newline_only():
    text = line(uttid="a", syn_text="x").replace('"x"', '"x\u2028y\u2029z\x85w"') + "\r\n" + line(uttid="b") + "\n"
    items = parse_jsonl(text, ALLOWED)
    assert [(item.uttid, item.syn_text, item.error) for item in items] == [("a", "x\u2028y\u2029z\x85w", ""), ("b", "Hello.", "")]


def test_a_voice_name_is_a_prompt_only_when_the_voice_exists():
    line = '{"uttid": "a", "prompt_text": "", "prompt_speech": "libri_367", "syn_text": "Hi."}'
    assert parse_jsonl(line, ALLOWED, voice_names={"libri_367"})[0].prompt_speech == "libri_367"
    assert "there is no voice 'libri_367'" in parse_jsonl(line, ALLOWED, voice_names={"other"})[0].error


def write(path: Path, audio: np.ndarray, rate: int = 16000) -> Path:
    import soundfile as sf

    sf.write(path, audio, rate)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_bytes(b"RIFF\x00\x00not audio at all" * 10), "could not be decoded"),
        (lambda p: write(p, np.zeros(16000 * 3, dtype=np.float32)), "silent"),
        (lambda p: write(p, 0.1 * np.ones(4000, dtype=np.float32)), "at least"),
    ],
)
def test_bad_prompts_get_clear_errors(tmp_path, make, message):
    path = tmp_path / "prompt.wav"
    make(path)
    with pytest.raises(SynthesisError, match=message):
        read_prompt(path)


def test_long_stereo_prompt_is_cut_and_mixed_down(tmp_path):
    rng = np.random.default_rng(0)
    stereo = (0.1 * rng.standard_normal((96000 * 40, 2))).astype(np.float32)
    audio, rate = read_prompt(write(tmp_path / "long.wav", stereo, 96000))
    assert rate == 96000 and audio.ndim == 1 and len(audio) == 96000 * 30


def test_a_long_prompt_is_decoded_only_as_far_as_it_is_used(tmp_path):
    """Two hours of silence after a few seconds of speech: only the first 30 s are ever decoded."""
    import tracemalloc

    import soundfile as sf

    rate = 8000
    path = tmp_path / "long.flac"
    with sf.SoundFile(path, "w", rate, 1, format="FLAC") as sound:
        sound.write((0.2 * np.sin(np.arange(rate * 5) * 0.05)).astype(np.float32))
        silence = np.zeros(rate * 60, dtype=np.float32)
        for _ in range(120):
            sound.write(silence)
    tracemalloc.start()
    audio, got_rate = read_prompt(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert got_rate == rate and len(audio) == rate * 30
    assert peak < 20 * rate * 30 * 4  # a few copies of 30 s, not two hours (230 MB as float32)


def test_crossfade_join_keeps_length_minus_overlaps():
    pieces = [np.ones(1000, dtype=np.float32), np.ones(500, dtype=np.float32)]
    joined = crossfade_join(pieces, 10000)
    assert len(joined) == 1500 - 300
    assert np.max(np.abs(joined)) <= np.sqrt(2) + 1e-6
