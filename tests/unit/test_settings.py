"""Settings from flags and the environment: an unknown flag or a value outside its choices stops start-up
with exit code 2 and a message naming it; the CLI's engine flags become the same Settings as app.py's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import glmtts_inference
from glmtts.engines.glm.choices import CAPTURES, DECODES, DTYPES
from glmtts.settings import PROJECT_ROOT, Settings

from ..conftest import TESTS


def _exit_code_and_stderr(parse, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as stopped:
        parse()
    return stopped.value.code, capsys.readouterr().err


def test_an_unknown_flag_exits_2_naming_it_and_the_known_flags(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _exit_code_and_stderr(lambda: Settings.from_args(["--prot", "8000"]), capsys)
    assert code == 2
    assert "unrecognized arguments: --prot 8000" in err
    assert "--port" in err and "--dtype" in err  # the usage line lists the known flags
    code, err = _exit_code_and_stderr(lambda: glmtts_inference.parse_args(["--use-cache"]), capsys)
    assert code == 2 and "unrecognized arguments: --use-cache" in err and "--use_cache" in err


def test_app_py_stops_at_an_unknown_flag_before_loading_anything() -> None:
    run = subprocess.run(
        [sys.executable, "app.py", "--device", "cpu", "--max_batch", "2"],
        cwd=TESTS.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 2
    assert "unrecognized arguments: --max_batch 2" in run.stderr and "--max-batch" in run.stderr


@pytest.mark.parametrize(
    ("variable", "value", "choices"),
    [("GLMTTS_DTYPE", "fp64", DTYPES), ("GLMTTS_DECODE", "turbo", DECODES), ("GLMTTS_DECODE_CAPTURE", "cudagraph", CAPTURES)],
)
def test_an_environment_value_outside_its_choices_is_an_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], variable: str, value: str, choices: tuple[str, ...]
) -> None:
    monkeypatch.setenv(variable, value)
    for parse in (lambda: Settings.from_args([]), lambda: glmtts_inference.parse_args([])):
        code, err = _exit_code_and_stderr(parse, capsys)
        assert code == 2 and f"{variable}='{value}' is not one of {', '.join(choices)}" in err


def test_a_flag_outside_its_choices_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _exit_code_and_stderr(lambda: Settings.from_args(["--dtype", "fp64"]), capsys)
    assert code == 2 and "invalid choice: 'fp64'" in err and "'fp32', 'bf16', 'fp16'" in err


def test_environment_choices_are_read_and_a_flag_overrides_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLMTTS_DTYPE", "fp16")
    monkeypatch.setenv("GLMTTS_DECODE", "fast")
    monkeypatch.setenv("GLMTTS_DECODE_CAPTURE", "compile")
    monkeypatch.setenv("GLMTTS_MAX_BATCH", "0")
    settings = Settings.from_args(["--dtype", "bf16"])
    assert (settings.dtype, settings.decode, settings.capture, settings.max_batch) == ("bf16", "fast", "compile", 1)
    assert Settings.from_args([]).dtype == "fp16"


def test_defaults_without_flags_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GLMTTS_DTYPE", "GLMTTS_DECODE", "GLMTTS_DECODE_CAPTURE", "GLMTTS_CKPT", "GLMTTS_OUTPUTS", "GLMTTS_PORT"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings.from_args([])
    assert (settings.dtype, settings.decode, settings.capture, settings.ckpt) == (None, None, None, None)
    assert settings.port == 7860 and settings.outputs == PROJECT_ROOT / "outputs"


def test_the_cli_flags_map_to_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GLMTTS_DEVICE", "cuda:1")
    monkeypatch.setenv("GLMTTS_CKPT", "~/ckpt")
    argv = ["--data", "example_en", "--phoneme", "--seed", "7", "--dtype", "fp32", "--decode", "fast", "--capture", "eager"]
    args = glmtts_inference.parse_args([*argv, "--max-batch", "3", "--outputs", str(tmp_path / "out")])
    settings = Settings.from_namespace(args)
    assert (args.data, args.use_phoneme, args.seed, args.exp_name, args.sample_rate) == ("example_en", True, 7, "_test", 24000)
    assert settings.device == "cuda:1" and settings.ckpt == Path("~/ckpt").expanduser()
    assert (settings.dtype, settings.decode, settings.capture, settings.max_batch) == ("fp32", "fast", "eager", 3)
    assert settings.outputs == (tmp_path / "out").resolve()
    app_settings = Settings.from_args(["--outputs", str(tmp_path / "out"), *argv[-6:], "--max-batch", "3"])
    engine_fields = ("device", "ckpt", "dtype", "decode", "capture", "max_batch", "outputs")
    assert [getattr(settings, name) for name in engine_fields] == [getattr(app_settings, name) for name in engine_fields]


def test_the_cache_folder_is_under_outputs_unless_one_is_given(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("GLMTTS_CACHE", raising=False)
    outputs = ["--outputs", str(tmp_path / "out")]
    assert Settings.from_args(outputs).cache_dir == (tmp_path / "out").resolve() / "cache"
    monkeypatch.setenv("GLMTTS_CACHE", str(tmp_path / "shared"))
    assert Settings.from_args(outputs).cache_dir == (tmp_path / "shared").resolve()
    assert Settings.from_args([*outputs, "--cache", str(tmp_path / "flag")]).cache_dir == (tmp_path / "flag").resolve()
