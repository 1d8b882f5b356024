"""A user's first day, round two: what a new user hit with their own data, and `evaluate` on any model.

Through `cli.main([...])` in-process, on the built-in tiny model: an output directory of another
stage or base is refused before anything loads and left byte for byte; a finished stage rerun
changes no file; both commands take the preset either way and name the other command for a preset
of the other kind; `evaluate` takes any `model_name` and decodes greedily at temperature 0; data
messages name the format the user wrote; DPO drops over-long pairs as the RM does; wrong models
stop at once; export's files are as readable as the others, metrics.jsonl is strict JSON, and the
libraries' notes a user cannot act on stay quiet.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import re
import shutil
import stat
import warnings
from pathlib import Path

import pytest

from eulerforge_trl import cli
from eulerforge_trl.errors import DataError

REPO = Path(__file__).resolve().parents[1]


def _user_error(capsys, code: int) -> str:
    captured = capsys.readouterr()
    assert code == 2, f"exit code {code}, stderr:\n{captured.err}"
    assert "Traceback" not in captured.err
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, captured.err
    return errors[0].removeprefix("error: ")


def _train(argv: list[str]) -> int:
    """`eulerforge train --preset PRESET ...` (the positional form: `test_train_and_pipeline_take_...`)."""
    return cli.main(["train", "--preset", *argv])


def _snapshot(directory: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file under `directory`: its bytes, mode and modification time."""
    return {
        str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mode, p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory, tiny_argv) -> tuple[Path, list[str]]:
    """A finished 2-step tiny SFT run and the argv that trained it."""
    out = tmp_path_factory.mktemp("first_day") / "01_sft"
    argv = tiny_argv("tiny_sft.yml", out, "training.max_steps=2", "training.save_steps=2", "training.logging_steps=1")
    assert _train(argv) == 0
    return out, argv


@pytest.fixture
def sft_copy(sft_run, tmp_path) -> tuple[Path, list[str]]:
    """A copy of the finished SFT run, and its argv pointed at the copy."""
    out, argv = sft_run
    copy = tmp_path / "01_sft"
    shutil.copytree(out, copy)
    return copy, [str(copy) if a == str(out) else a for a in argv]


# ------------------------------------------------------------------ 1. another stage's directory


def test_dpo_into_an_sft_directory_is_one_line_and_leaves_the_sft_run_intact(sft_copy, tiny_argv, capsys):
    out, _ = sft_copy
    before = _snapshot(out)
    code = _train(tiny_argv("tiny_dpo.yml", out, f"model_name={out / 'final'}"))
    message = _user_error(capsys, code)
    assert message.startswith(f"--output-dir {out} holds an sft run on model_name tiny-qwen3.5, not this dpo run")
    assert str(out / "final") in message
    assert _snapshot(out) == before


def test_the_same_stage_on_another_base_is_refused(sft_copy, capsys):
    out, argv = sft_copy
    before = _snapshot(out)
    message = _user_error(capsys, _train([*argv, "--set", f"model_name={out / 'final'}"]))
    assert "holds an sft run on model_name tiny-qwen3.5, not this sft run on model_name" in message
    assert _snapshot(out) == before


def test_a_directory_without_a_run_record_is_read_from_its_preset(tmp_path, capsys):
    """A run written before run records existed: its preset.yml says which stage it was."""
    from eulerforge_trl.config import load_preset, preset_to_yaml
    from eulerforge_trl.errors import PresetError
    from eulerforge_trl.pipeline.existing_run import check_same_run
    from eulerforge_trl.rundir import RunDir

    run = RunDir(tmp_path / "old")
    run.root.mkdir()
    run.preset.write_text(preset_to_yaml(load_preset("tiny_rm.yml", ["model_name=tiny-qwen3.5"])))
    with pytest.raises(PresetError, match=r"holds an rm run on model_name tiny-qwen3\.5, not this sft run"):
        check_same_run(load_preset("tiny_sft.yml"), run)
    check_same_run(load_preset("tiny_rm.yml", ["model_name=tiny-qwen3.5"]), run)  # the same run: fine


# ------------------------------------------------------------------ 2. a finished stage rerun


def test_a_finished_sft_rerun_says_so_and_changes_no_file(sft_copy, capsys):
    out, argv = sft_copy
    before = _snapshot(out)
    assert _train(argv) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and printed[0].startswith(f"sft: {out} is finished"), printed
    assert "step 2" in printed[0] and "training.max_steps=2" in printed[0]
    assert _snapshot(out) == before


def test_a_finished_dpo_rerun_changes_no_file_either(sft_run, tiny_argv, tmp_path, capsys):
    """The same mechanism for every stage (`pipeline.existing_run`)."""
    sft, _ = sft_run
    argv = tiny_argv("tiny_dpo.yml", tmp_path / "dpo", f"model_name={sft / 'final'}", "training.max_steps=1")
    assert _train(argv) == 0
    before = _snapshot(tmp_path / "dpo")
    capsys.readouterr()
    assert _train(argv) == 0
    assert "dpo: " in capsys.readouterr().out and _snapshot(tmp_path / "dpo") == before


def test_more_steps_or_no_resume_are_not_finished(sft_run):
    from eulerforge_trl.config import load_preset
    from eulerforge_trl.pipeline.existing_run import finished_note
    from eulerforge_trl.rundir import RunDir

    out, _ = sft_run
    run = RunDir(out)
    assert finished_note(load_preset("tiny_sft.yml", ["training.max_steps=2"]), run) is not None
    assert finished_note(load_preset("tiny_sft.yml", ["training.max_steps=3"]), run) is None  # goes on
    assert finished_note(load_preset("tiny_sft.yml", ["training.max_steps=2"]), run, resume=False) is None
    assert json.loads((out / "final" / "eulerforge_final.json").read_text())["steps"] == 2


# ------------------------------------------------------------------ 3. both commands take the preset both ways


def test_train_and_pipeline_take_the_preset_positionally_and_as_a_flag(tiny_argv, tmp_path, capsys):
    from eulerforge_trl.pipeline.command import pipeline_main
    from eulerforge_trl.train import main as train_main

    argv = tiny_argv("tiny_sft.yml", tmp_path / "sft", "training.max_steps=1")
    assert cli.main(["train", *argv]) == 0  # eulerforge train tiny_sft.yml
    assert train_main(["--preset", *argv, "--no-resume"]) == 0  # python -m eulerforge_trl.train --preset P
    pipeline = tmp_path / "mine.yml"
    pipeline.write_text("stages:\n  sft: tiny_sft.yml\n")  # the shipped stage preset, found by name
    steps = ["--set", "sft.training.max_steps=1", "--set", "sft.training.report_to=[]"]
    assert cli.main(["pipeline", "--preset", str(pipeline), "--output-dir", str(tmp_path / "p"), *steps]) == 0
    assert (tmp_path / "p" / "01_sft" / "final" / "eulerforge_final.json").is_file()
    assert pipeline_main([str(pipeline), "--output-dir", str(tmp_path / "p"), *steps]) == 0  # finished: skipped
    assert "sft: " in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, command",
    [
        (["train", "tiny_pipeline.yml"], "`eulerforge pipeline tiny_pipeline.yml`"),
        (["train", "--preset", "tiny_pipeline.yml"], "`eulerforge pipeline tiny_pipeline.yml`"),
        (["pipeline", "tiny_sft.yml"], "`eulerforge train tiny_sft.yml`"),
        (["pipeline", "--preset", "tiny_sft.yml"], "`eulerforge train tiny_sft.yml`"),
    ],
)
def test_a_preset_of_the_other_kind_names_the_right_command(argv, command, capsys):
    message = _user_error(capsys, cli.main(argv))
    assert message.endswith(f"run it with {command}")


def test_two_different_presets_or_none_is_a_usage_error(capsys):
    for argv in (["train", "a.yml", "--preset", "b.yml"], ["pipeline"]):
        with pytest.raises(SystemExit) as info:
            cli.main(argv)
        assert info.value.code == 2
    assert "give one" in capsys.readouterr().err


# ------------------------------------------------------------------ 4. evaluate any model, greedily


@pytest.fixture(scope="module")
def tiny_ppo_final(sft_run, tiny_argv, tmp_path_factory) -> Path:
    """A 1-step tiny PPO `final/` (a LoRA adapter on the SFT run), rewarded by a function, no RM."""
    sft, _ = sft_run
    out = tmp_path_factory.mktemp("first_day_ppo") / "03_ppo"
    argv = tiny_argv(
        "tiny_ppo.yml",
        out,
        f"model_name={sft / 'final'}",
        "training.reward_model.checkpoint_path=",
        "training.reward_funcs=[eulerforge_trl.examples.animals:well_formed]",
        "training.max_steps=1",
        "training.batch_size=8",
        "training.ppo.max_gen_len=6",
        "training.ppo.num_mini_batches=1",
        "training.ppo.epochs=1",
    )
    assert _train(argv) == 0
    return out / "final"


def _evaluate(models, out: Path, *extra: str) -> list[dict]:
    printed = io.StringIO()
    argv = ["evaluate", "--models", *map(str, models), "--prompts", str(REPO / "examples/data/sft_eval.jsonl")]
    argv += ["--max-prompts", "3", "--max-new-tokens", "6", "--num-samples", "2", "--output", str(out), *extra]
    with contextlib.redirect_stdout(printed):
        assert cli.main(argv) == 0
    assert f"wrote {out / 'samples.jsonl'}" in printed.getvalue()
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


def test_evaluate_takes_a_built_in_name_beside_a_final_and_decodes_greedily(tiny_ppo_final, tmp_path):
    """`eulerforge evaluate --models tiny-qwen3.5 <PPO final/> --temperature 0`: the base by its name,
    and the same responses whatever the seed (greedy), for every sample of a prompt."""
    models = ["tiny-qwen3.5", tiny_ppo_final]
    first = _evaluate(models, tmp_path / "a", "--temperature", "0", "--seed", "0")
    again = _evaluate(models, tmp_path / "b", "--temperature", "0", "--seed", "1")
    assert {s["model"] for s in first} == {"tiny-qwen3.5", str(tiny_ppo_final)}
    assert [s["response"] for s in first] == [s["response"] for s in again]
    by_prompt: dict = {}
    for s in first:
        by_prompt.setdefault((s["model"], s["prompt_index"]), set()).add(s["response"])
    assert all(len(responses) == 1 for responses in by_prompt.values())
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["tiny-qwen3.5"]["kl_to_first"] == 0.0 and summary[str(tiny_ppo_final)]["kl_to_first"] is not None


@pytest.mark.parametrize(
    "name, expected",
    [
        ("tiny-qwen3", "--models tiny-qwen3: no such directory, and not a hub id of the form owner/name; did you mean"),
        # a name no other test asks the hub about (the answer is kept for the process)
        (
            "HuggingFaceTB/SmolLM2-135M-Instrcut",
            "--models HuggingFaceTB/SmolLM2-135M-Instrcut: not in the Hugging Face",
        ),
    ],
)
def test_evaluate_names_a_mistyped_model_at_once(name, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    argv = ["evaluate", "--models", name, "--prompts", str(REPO / "examples/data/sft_eval.jsonl")]
    message = _user_error(capsys, cli.main([*argv, "--output", str(tmp_path)]))
    assert message.startswith(expected)
    assert message.endswith("did you mean tiny-qwen3.5?") or "HF_HUB_OFFLINE is set" in message


# ------------------------------------------------------------------ 5. data messages name the format


def _alpaca_csv(path: Path, empty_row: int | None = None) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["instruction", "input", "output"])
        writer.writeheader()
        for i in range(5):
            writer.writerow(
                {"instruction": f"Describe animal {i}.", "input": "", "output": "" if i == empty_row else "Calm."}
            )
    return path


def test_an_empty_alpaca_output_cell_names_the_format_and_the_row(tmp_path):
    from eulerforge_trl.data.jsonl import read_rows

    path = _alpaca_csv(tmp_path / "alpaca.csv", empty_row=3)
    with pytest.raises(DataError) as info:
        read_rows(path, "sft")
    assert str(info.value).startswith(f"{path} row 3: this Alpaca row (instruction, input, output) has no 'output'")
    assert "has no column" not in str(info.value)


def test_alpaca_rows_are_called_alpaca_rows(tmp_path):
    from eulerforge_trl.data.jsonl import read_rows
    from eulerforge_trl.data.render import require_chat_template

    rows = read_rows(_alpaca_csv(tmp_path / "alpaca.csv"), "sft")

    class NoTemplate:
        chat_template = None

    with pytest.raises(DataError, match=r"the rows are Alpaca rows \(instruction, output, read as message lists\)"):
        require_chat_template(NoTemplate(), rows, "tiny-qwen3.5")
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(
        json.dumps({"instruction": "Describe.", "output": "Calm."})
        + "\n"
        + json.dumps({"prompt": "a", "response": "b"})
    )
    with pytest.raises(DataError, match=r":2: this row holds plain text but the rows before it hold Alpaca rows"):
        read_rows(mixed, "sft")


# ------------------------------------------------------------------ 6. data.max_length: one meaning


def _pairs(path: Path, n_long: int, n_short: int) -> str:
    """Short prompts; `n_long` pairs whose chosen answer alone is far over 64 tokens."""
    long = " ".join(["word"] * 120)
    rows = [
        {"prompt": f"Q{i}:", "chosen": long if i < n_long else "good", "rejected": "bad"}
        for i in range(n_long + n_short)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_dpo_drops_over_long_pairs_with_a_count_as_the_rm_does(sft_run, tiny_argv, tmp_path, caplog):
    sft, _ = sft_run
    argv = tiny_argv(
        "tiny_dpo.yml",
        tmp_path / "dpo",
        f"model_name={sft / 'final'}",
        f"data.path={_pairs(tmp_path / 'half.jsonl', 2, 6)}",
        "data.eval_path=null",
        "data.max_length=64",
        "training.max_steps=1",
        "training.batch_size=2",
    )
    with caplog.at_level(logging.WARNING):
        assert _train(argv) == 0
    assert "data.path: 2 of 8 rows are longer than data.max_length (64) tokens and are left out" in caplog.text


def test_dpo_with_every_pair_over_long_is_one_line(sft_run, tiny_argv, tmp_path, capsys):
    sft, _ = sft_run
    argv = tiny_argv(
        "tiny_dpo.yml",
        tmp_path / "dpo",
        f"model_name={sft / 'final'}",
        f"data.path={_pairs(tmp_path / 'long.jsonl', 4, 0)}",
        "data.eval_path=null",
        "data.max_length=64",
    )
    message = _user_error(capsys, _train(argv))
    assert message.startswith("data.path: all 4 rows are longer than data.max_length (64) tokens")


# ------------------------------------------------------------------ 7. wrong models stop at once


def test_ppo_from_a_reward_models_final_is_refused(tmp_path, tiny_argv, capsys):
    rm = tmp_path / "02_rm" / "final"
    rm.mkdir(parents=True)
    (rm / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "tiny-qwen3.5"}))
    (rm / "reward_head.pt").write_bytes(b"")
    argv = tiny_argv(
        "tiny_ppo.yml", tmp_path / "ppo", f"model_name={rm}", f"training.reward_model.checkpoint_path={rm}"
    )
    message = _user_error(capsys, _train(argv))
    assert message.startswith(f"model_name {rm}: a reward model (the rm stage's final/")
    assert "training.reward_model.checkpoint_path" in message


def test_a_near_built_in_name_and_an_offline_hub_typo_fail_at_once(tmp_path, tiny_argv, monkeypatch, capsys):
    message = _user_error(capsys, _train(tiny_argv("tiny_sft.yml", tmp_path, "model_name=tiny-qwen3")))
    assert message.endswith("did you mean tiny-qwen3.5?")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a name no other test asks the hub about
    message = _user_error(capsys, _train(tiny_argv("tiny_sft.yml", tmp_path, "model_name=Qwen/Qwen3.5-0.8B-Bsae")))
    assert message.startswith("model_name Qwen/Qwen3.5-0.8B-Bsae: not in the Hugging Face cache, and HF_HUB_OFFLINE")
    assert not (tmp_path / "preset.yml").exists()


# ------------------------------------------------------------------ 8. small things


def test_export_writes_its_weights_as_readable_as_its_other_files(sft_run, tmp_path):
    from eulerforge_trl.export import export_model
    from eulerforge_trl.rundir import default_mode

    sft, _ = sft_run
    export_model(sft / "final", tmp_path / "exported")
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "exported").iterdir()}
    assert modes["model.safetensors"] == default_mode(0o666) == modes["config.json"], modes
    assert stat.S_IMODE((sft / "final" / "model.safetensors").stat().st_mode) == default_mode(0o666)


def test_metrics_jsonl_holds_null_for_nan_and_infinity(tmp_path):
    from eulerforge_trl.rundir import append_metrics

    path = tmp_path / "metrics.jsonl"
    append_metrics(path, {"step": 1, "loss": float("nan"), "grad_norm": float("inf"), "parts": [1.0, float("-inf")]})

    def strict(token):
        raise ValueError(f"not JSON: {token}")

    assert json.loads(path.read_text(), parse_constant=strict) == {
        "step": 1,
        "loss": None,
        "grad_norm": None,
        "parts": [1.0, None],
    }


def test_the_libraries_notes_a_user_cannot_act_on_stay_quiet_and_others_do_not(caplog):
    from eulerforge_trl.runtime import library_notes_silenced

    kernels = logging.getLogger("transformers.integrations.hub_kernels")
    with warnings.catch_warnings(record=True) as seen, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        with library_notes_silenced():
            kernels.warning("`chunk_gated_delta_rule` is falling back to its reference PyTorch implementation ...")
            kernels.warning("a kernel note that is not a fallback")
            warnings.warn("`is_gradient_checkpointing` is deprecated, removed in v6.", FutureWarning, stacklevel=1)
            warnings.warn("a real deprecation", FutureWarning, stacklevel=1)
            for base in ("tiny-qwen3.5", "Qwen/Qwen3.5-0.8B-Base"):  # peft on a built-in base; on a hub id
                note = f"Could not find a config file in {base} - will assume that the vocabulary was not modified."
                warnings.warn(note, UserWarning, stacklevel=1)
        kernels.warning("`x` is falling back to its reference PyTorch implementation (outside the block)")
    logged = [r.getMessage() for r in caplog.records]
    assert logged == ["a kernel note that is not a fallback", logged[-1]] and "outside the block" in logged[-1]
    assert [str(w.message) for w in seen] == ["a real deprecation", note]


def test_a_stage_prints_none_of_those_notes(sft_run, tiny_argv, tmp_path, capfd):
    """An RM step on the SFT run: peft reads the deprecated property, the tiny model's Gated DeltaNet
    falls back to PyTorch on the CPU; neither reaches the user."""
    sft, _ = sft_run
    logging.Logger.warning_once.cache_clear()  # transformers says each note once per process
    argv = tiny_argv("tiny_rm.yml", tmp_path / "rm", f"model_name={sft / 'final'}", "training.max_steps=1")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert _train(argv) == 0
    err = capfd.readouterr().err
    assert "is falling back to its reference PyTorch" not in err
    assert not [w for w in seen if "is_gradient_checkpointing" in str(w.message)]


def test_the_readme_says_how_to_get_the_command_and_where_evaluate_writes():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "source .venv/bin/activate" in readme
    evaluate = readme[readme.index("## Evaluate") :]
    assert "outputs/evaluate" in evaluate and "summary.json" in evaluate and "--output" in evaluate


def test_the_readme_notebook_example_names_presets_found_from_any_directory(tmp_path, monkeypatch):
    from eulerforge_trl import train_sft
    from eulerforge_trl.config.shipped import resolve_preset_path

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    notebook = readme[readme.index("## Notebook API") :]
    code = notebook[notebook.index("```python") : notebook.index("```", notebook.index("```python") + 3)]
    presets = re.findall(r"\"([\w./-]+\.yml)\"", code)
    assert len(presets) >= 4, code
    monkeypatch.chdir(tmp_path)  # not the repository root
    for preset in presets:
        assert resolve_preset_path(preset).is_file(), preset
    result = train_sft(presets[0], ["training.max_steps=1", "training.report_to=[]"], output_dir="outputs/nb/01_sft")
    assert (tmp_path / result.final_dir / "eulerforge_final.json").is_file()
