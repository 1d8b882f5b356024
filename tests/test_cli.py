"""The CLI edge: a user mistake is one `error: ...` line on stderr and exit code 2, never a traceback.

Both entry points are called in-process: `python -m eulerforge_trl.train PRESET ...` is
`train.main(argv)`, and `eulerforge train --preset PRESET ...` is `cli.main(argv)`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eulerforge_trl import cli, train
from eulerforge_trl.rundir import FINAL_MARKER, atomic_directory


def _run_train(argv: list[str]) -> int:
    return train.main(argv)


def _run_eulerforge(argv: list[str]) -> int:
    # `eulerforge train --preset P ...`: the same arguments with the preset behind a flag
    return cli.main(["train", "--preset", argv[0], *argv[1:]])


ENTRY_POINTS = pytest.mark.parametrize("run", [_run_train, _run_eulerforge], ids=["train.main", "eulerforge"])


def _user_error(capsys, code: int) -> str:
    """Check the user-error contract and return the message after `error: `."""
    captured = capsys.readouterr()
    assert code == 2, f"exit code {code}, stderr:\n{captured.err}"
    assert "Traceback" not in captured.err
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, f"expected one error line, stderr:\n{captured.err}"
    assert captured.err.rstrip().splitlines()[-1] == errors[0], "the error line must end stderr"
    return errors[0].removeprefix("error: ")


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------ preset mistakes


@ENTRY_POINTS
def test_unknown_key_names_it_and_suggests_the_closest(run, tiny_argv, tmp_path, capsys):
    message = _user_error(capsys, run(tiny_argv("tiny_sft.yml", tmp_path, "training.max_step=5")))
    assert "training.max_step" in message and "Did you mean" in message and "max_steps" in message
    assert "tiny_sft.yml" in message


@ENTRY_POINTS
def test_ill_typed_value_names_key_and_value(run, tiny_argv, tmp_path, capsys):
    message = _user_error(capsys, run(tiny_argv("tiny_sft.yml", tmp_path, "training.lr=fast")))
    assert "training.lr" in message and "'fast'" in message


@ENTRY_POINTS
def test_missing_preset_file(run, tmp_path, capsys):
    missing = tmp_path / "nope.yml"
    message = _user_error(capsys, run([str(missing)]))
    assert "not found" in message and str(missing) in message


@ENTRY_POINTS
def test_set_without_equals_sign(run, tiny_argv, tmp_path, capsys):
    message = _user_error(capsys, run(tiny_argv("tiny_sft.yml", tmp_path, "training.lr")))
    assert "--set training.lr" in message and "KEY=VALUE" in message


# -------------------------------------------------------------------------- data and model mistakes


@ENTRY_POINTS
def test_missing_data_file_names_the_preset_key(run, tiny_argv, tmp_path, capsys):
    missing = tmp_path / "missing.jsonl"
    message = _user_error(capsys, run(tiny_argv("tiny_sft.yml", tmp_path / "out", f"data.path={missing}")))
    assert "data.path" in message and str(missing) in message


@ENTRY_POINTS
def test_malformed_jsonl_line_gives_file_and_line(run, tiny_argv, tmp_path, capsys):
    data = _write(tmp_path / "bad.jsonl", '{"prompt": "a", "response": "b"}\n{"prompt": "a", "response": \n')
    message = _user_error(capsys, run(tiny_argv("tiny_sft.yml", tmp_path / "out", f"data.path={data}")))
    assert f"{data}:2:" in message and "not valid JSON" in message


@ENTRY_POINTS
def test_row_missing_a_field_names_field_and_line(run, tiny_argv, tmp_path, capsys):
    data = _write(tmp_path / "rows.jsonl", '{"prompt": "a", "response": "b"}\n\n{"prompt": "c"}\n')
    message = _user_error(capsys, run(tiny_argv("tiny_sft.yml", tmp_path / "out", f"data.path={data}")))
    assert f"{data}:3:" in message and "'response'" in message


@ENTRY_POINTS
def test_unknown_model_path(run, tiny_argv, tmp_path, capsys):
    message = _user_error(capsys, run(tiny_argv("tiny_sft.yml", tmp_path / "out", "model_name=does-not-exist")))
    assert "model_name does-not-exist" in message


@ENTRY_POINTS
def test_output_dir_that_is_a_file_is_exit_2_and_the_file_is_kept(run, tiny_argv, tmp_path, capsys):
    existing = _write(tmp_path / "notes.txt", "keep me\n")
    message = _user_error(capsys, run(tiny_argv("tiny_sft.yml", existing, "training.max_steps=1")))
    assert "--output-dir" in message and str(existing) in message and "not a directory" in message
    nested = tiny_argv("tiny_sft.yml", existing / "run", "training.max_steps=1")
    assert "not a directory" in _user_error(capsys, run(nested))
    assert existing.read_text() == "keep me\n"


@ENTRY_POINTS
def test_unknown_lr_scheduler_lists_the_valid_names(run, tiny_argv, tmp_path, capsys):
    message = _user_error(
        capsys, run(tiny_argv("tiny_sft.yml", tmp_path / "out", "training.lr_scheduler=cosine_annealing"))
    )
    assert "training.lr_scheduler" in message and "cosine_annealing" in message and "'constant'" in message
    assert not (tmp_path / "out").exists()


def test_preference_file_where_every_chosen_equals_rejected_is_exit_2(tiny_argv, tmp_path, capsys):
    rows = [{"prompt": f"Q{i}", "chosen": " same", "rejected": " same"} for i in range(4)]
    data = _write(tmp_path / "pairs.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    # model_name set: the preset's own (outputs/tiny/01_sft/final) is missing here and would be reported first
    argv = tiny_argv(
        "tiny_rm.yml", tmp_path / "out", f"data.path={data}", "data.eval_path=null", "model_name=tiny-qwen3.5"
    )
    message = _user_error(capsys, train.main(argv))
    assert str(data) in message and "chosen equals rejected" in message


def test_some_degenerate_rows_are_counted_and_warned_about(tmp_path, caplog):
    from eulerforge_trl.data.jsonl import read_rows

    rows = [{"prompt": "Q1", "response": " A"}, {"prompt": "Q2", "response": "  "}, {"prompt": "Q3", "response": ""}]
    data = _write(tmp_path / "sft.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    assert len(read_rows(data, "sft")) == 3
    assert "2 of 3 rows are degenerate (the response is empty)" in caplog.text


def test_failed_run_leaves_an_existing_final_intact(tiny_argv, tmp_path, capsys):
    """A run that fails on bad data, into a directory holding an earlier final/, keeps every byte of it."""
    out = tmp_path / "out"
    (out / "final").mkdir(parents=True)
    (out / "final" / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    (out / "final" / "config.json").write_text('{"model_type": "qwen3_5_text"}\n')
    (out / "final" / FINAL_MARKER).write_text('{"stage": "sft"}\n')
    before = _digests(out / "final")
    data = _write(tmp_path / "bad.jsonl", "not json\n")

    _user_error(capsys, train.main(tiny_argv("tiny_sft.yml", out, f"data.path={data}")))

    assert _digests(out / "final") == before
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


def test_error_while_writing_final_keeps_the_previous_final(tmp_path):
    """atomic_directory: a crash while the new final/ is written leaves the old one and no temp dir."""
    target = tmp_path / "final"
    target.mkdir()
    (target / FINAL_MARKER).write_text('{"stage": "sft"}\n')
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (tmp / "model.safetensors").write_text("half written")
            raise RuntimeError("killed while saving")
    assert [p.name for p in tmp_path.iterdir()] == ["final"]
    assert [p.name for p in target.iterdir()] == [FINAL_MARKER]

    with atomic_directory(target) as tmp:
        (tmp / "new.txt").write_text("complete")
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["final"]
    (tmp_path / "plain").mkdir()
    assert target.stat().st_mode == (tmp_path / "plain").stat().st_mode, "final/ must not keep mkdtemp's 0700"


def _digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


# ------------------------------------------------------------------------------------ --help


def test_help_answers_at_once_without_loading_torch():
    """`python -m eulerforge_trl.train --help` exits 0 quickly: torch and TRL load only when a stage runs."""
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "eulerforge_trl.train", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "--set" in result.stdout and "--output-dir" in result.stdout
    assert time.monotonic() - start < 20

    probe = "import sys, eulerforge_trl.train, eulerforge_trl.config; print(json.dumps(sorted(m for m in ('torch', 'transformers', 'trl') if m in sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", "import json; " + probe], capture_output=True, text=True, timeout=60)
    assert loaded.returncode == 0, loaded.stderr
    assert json.loads(loaded.stdout) == []


# ------------------------------------------------------------------------------------ the output directory of a rerun


def _files(directory: Path) -> dict[str, bytes]:
    return {name: (directory / name).read_bytes() for name in ("preset.yml", "metrics.jsonl", "trl_config.json")}


@pytest.mark.parametrize("resume", [True, False], ids=["resume", "no-resume"])
def test_a_run_that_fails_before_its_first_step_leaves_the_earlier_run_as_it_was(
    resume, tiny_argv, tmp_path, monkeypatch
):
    """The data and the model load before preset.yml and metrics.jsonl change: a failure on the way
    leaves the finished run's files (with --no-resume too: it starts over only once it can train)."""
    from eulerforge_trl.trainers import sft

    out = tmp_path / "out"
    assert _run_eulerforge(tiny_argv("tiny_sft.yml", out, "training.max_steps=2")) == 0
    before = _files(out)

    def broken(*args, **kwargs):
        raise RuntimeError("the model does not load")

    monkeypatch.setattr(sft, "load_base", broken)
    argv = tiny_argv("tiny_sft.yml", out, "training.lr=0.001") + ([] if resume else ["--no-resume"])
    with pytest.raises(RuntimeError, match="does not load"):
        _run_eulerforge(argv)
    assert _files(out) == before


def test_a_run_that_fails_after_building_its_trl_config_leaves_the_earlier_one(tiny_argv, tmp_path, monkeypatch):
    """trl_config.json is the trainer's config as training begins: a run that fails once its config is
    built, before its first step, leaves the finished run's file (and preset.yml, metrics.jsonl)."""
    from eulerforge_trl.trainers import sft

    out = tmp_path / "out"
    assert _run_eulerforge(tiny_argv("tiny_sft.yml", out, "training.max_steps=2")) == 0
    before = _files(out)

    def broken(*args, **kwargs):
        raise RuntimeError("the trainer does not start")

    monkeypatch.setattr(sft, "SFTTrainer", broken)
    with pytest.raises(RuntimeError, match="does not start"):
        _run_eulerforge(tiny_argv("tiny_sft.yml", out, "training.lr=0.001", "training.sft.packing=true"))
    assert _files(out) == before


@pytest.mark.slow  # a run, then a resumed run
def test_no_resume_on_a_finished_run_logs_each_step_once(tiny_argv, tmp_path):
    """--no-resume starts metrics.jsonl over (no line of the earlier run stays); a run resumed from a
    checkpoint at its last step logs its closing lines (the train summary) again instead of beside
    the old ones (a finished run itself is left alone: tests/test_first_day.py)."""
    out = tmp_path / "out"
    argv = tiny_argv("tiny_sft.yml", out, "training.max_steps=3", "training.save_steps=2", "training.logging_steps=1")

    def steps():
        return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]

    assert _run_eulerforge(argv) == 0
    first = steps()
    # losses at 1, 2, 3; evaluations at save_steps 2 and after the last step; the train summary at 3
    assert first == [1, 2, 2, 3, 3, 3]
    assert _run_eulerforge([*argv, "--no-resume"]) == 0
    assert steps() == first
    shutil.rmtree(out / "final")  # killed after checkpoint-3 was saved, before final/ was written
    assert _run_eulerforge(argv) == 0  # from checkpoint-3, the last step
    # the lines checkpoint-3 had seen stay (its loss and evaluation), the old summary goes; transformers
    # itself may train a step past max_steps when it resumes at max_steps, so later lines are not checked
    assert [s for s in steps() if s <= 3] == first[:-1]
    summaries = [line for line in (out / "metrics.jsonl").read_text().splitlines() if "train_runtime" in line]
    assert len(summaries) == 1
