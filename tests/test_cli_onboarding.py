"""What a new user meets first: names from TRL, --version, the pipeline chains, a missing earlier stage,
step caps that stop before one epoch, and `attn_implementation`.

Everything here answers before a model is loaded (seconds), through `cli.main` in-process.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time

import pytest

from eulerforge_trl import __version__, cli
from eulerforge_trl.config import load_preset
from eulerforge_trl.errors import PresetError
from eulerforge_trl.pipeline.inputs import check_earlier_stages, looks_local, step_cap_note
from eulerforge_trl.stages import pipeline_chains


def _user_error(capsys, code: int) -> str:
    captured = capsys.readouterr()
    assert code == 2, f"exit code {code}, stderr:\n{captured.err}"
    assert "Traceback" not in captured.err
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, captured.err
    return errors[0].removeprefix("error: ")


# ------------------------------------------------------------------------ names people already know


@pytest.mark.parametrize(
    ("key", "ours"),
    [
        ("training.learning_rate", "training.lr"),
        ("training.per_device_train_batch_size", "training.batch_size"),
        ("training.gradient_accumulation_steps", "training.grad_accum"),
        ("training.num_train_epochs", "training.epochs"),
        ("training.bf16", "training.precision=bf16"),
        ("training.warmup_steps", "training.warmup_ratio"),
        ("learning_rate", "training.lr"),
        ("training.kl_coef", "training.ppo.kl_coef"),  # our own name, in another section
    ],
)
def test_a_trl_name_in_set_suggests_ours(key, ours, capsys):
    code = cli.main(["train", "--preset", "tiny_sft.yml", "--set", f"{key}=1"])
    message = _user_error(capsys, code)
    assert "tiny_sft.yml" in message and f"{key}: unknown key; did you mean {ours}" in message


def test_a_trl_name_in_the_file_names_file_line_and_ours(tmp_path, capsys):
    preset = tmp_path / "mine.yml"
    preset.write_text("data:\n  path: x.jsonl\ntraining:\n  num_train_epochs: 3\n", encoding="utf-8")
    message = _user_error(capsys, cli.main(["train", "--preset", str(preset)]))
    assert message.startswith(f"{preset}:4: training.num_train_epochs: unknown key; did you mean training.epochs?")


def test_a_plain_typo_keeps_the_closest_key():
    with pytest.raises(PresetError, match=r"training\.lrr: unknown key\. Did you mean: 'lr'"):
        load_preset("tiny_sft.yml", ["training.lrr=1"])


def test_attn_implementation_is_a_model_level_key():
    assert load_preset("tiny_sft.yml").attn_implementation is None
    assert load_preset("tiny_sft.yml", ["attn_implementation=eager"]).attn_implementation == "eager"


def test_attn_implementation_reaches_the_loaded_model():
    from eulerforge_trl.models.loading import attention_implementation, load_causal_lm

    assert load_causal_lm("tiny-qwen3.5", attn_implementation="eager").config._attn_implementation == "eager"
    with attention_implementation("eager"):  # what run_stage wraps every runner in
        assert load_causal_lm("tiny-qwen3.5").config._attn_implementation == "eager"


# ------------------------------------------------------------------------------ --version, --help


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"eulerforge-trl {__version__}"


@pytest.mark.parametrize("argv", [["pipeline", "--help"]])
def test_pipeline_help_lists_every_chain(argv, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    out = capsys.readouterr().out
    assert info.value.code == 0
    for chain in pipeline_chains():
        assert f"\n  {', '.join(chain)}\n" in out
    assert ("sft", "rm", "grpo") in pipeline_chains()


# ------------------------------------------------------------------------------ a missing earlier stage


def test_ppo_preset_alone_names_the_stages_to_run_first(tmp_path, monkeypatch, capsys):
    """The shipped SmolLM2 PPO preset in a fresh directory: one line, at once, before any model loads."""
    monkeypatch.chdir(tmp_path)
    start = time.monotonic()
    code = cli.main(["train", "--preset", "smollm2_135m_lora_ppo.yml"])
    message = _user_error(capsys, code)
    assert time.monotonic() - start < 5
    assert message.startswith(
        "model_name outputs/smollm2/01_sft/final does not exist: run the sft stage first "
        "(eulerforge train --preset smollm2_135m_lora_sft.yml --output-dir outputs/smollm2/01_sft), "
        "or --set model_name=DIR"
    )
    assert (
        "training.reward_model.checkpoint_path outputs/smollm2/02_rm/final does not exist: run the rm stage first "
        "(eulerforge train --preset smollm2_135m_lora_rm.yml --set model_name=outputs/smollm2/01_sft/final "
        "--output-dir outputs/smollm2/02_rm)"
    ) in message
    assert not (tmp_path / "outputs").exists()


def test_missing_rm_final_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs/tiny/01_sft/final").mkdir(parents=True)
    preset = load_preset("tiny_ppo.yml")
    with pytest.raises(PresetError) as info:
        check_earlier_stages(preset)
    assert str(info.value).startswith("training.reward_model.checkpoint_path outputs/tiny/02_rm/final does not")
    assert "model_name" not in str(info.value).split(":")[0]
    assert "--preset YOUR_RM_PRESET.yml --set model_name=outputs/tiny/01_sft/final" in str(info.value)


def test_the_check_runs_in_a_subprocess_without_loading_torch(tmp_path):
    code = (
        "import sys; from eulerforge_trl.cli import main; rc = main(['train', '--preset', 'tiny_dpo.yml']); "
        "print(rc, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["2", "False"], out.stderr
    assert "run the sft stage first (eulerforge train --preset tiny_sft.yml" in out.stderr


@pytest.mark.parametrize(
    ("value", "local"),
    [
        ("outputs/smollm2/01_sft/final", True),
        ("./sft", True),
        ("/abs/final", True),
        ("Qwen/Qwen3.5-0.8B-Base", False),
        ("tiny-qwen3.5", False),
        ("smollm2-135m-instruct", False),
        ("gpt2", False),
    ],
)
def test_only_local_looking_values_are_checked(value, local):
    assert looks_local(value) is local


# ------------------------------------------------------------------------------------ step caps


def test_step_cap_below_one_epoch_says_how_much_and_which_key():
    preset = load_preset("smollm2_135m_lora_sft.yml")  # 40 steps of 8 rows, 5% held out
    note = step_cap_note(preset, 50_000)
    assert note.startswith("training.max_steps=40 covers 320 of the 47500 training rows")
    assert "(0.7% of one epoch, 8 rows a step)" in note
    assert "raise training.max_steps (one epoch = 5938 steps)" in note and "training.epochs" in note
    assert step_cap_note(preset, 300) is None  # 40 x 8 rows cover 285 rows
    assert step_cap_note(load_preset("smollm2_135m_lora_sft.yml", ["training.max_steps=-1"]), 50_000) is None


def test_step_cap_counts_prompts_for_ppo_and_grpo():
    ppo = load_preset("tiny_ppo.yml", ["training.max_steps=10", "data.eval_split=0"])  # 32 prompts a step
    assert "covers 640 of the 1000 training rows" in step_cap_note(ppo, 1000, processes=2)
    grpo = load_preset("tiny_grpo.yml", ["training.max_steps=10"])
    per_step = grpo.training.batch_size * grpo.training.grad_accum / grpo.training.grpo.num_generations
    assert f"{per_step:g} rows a step" in step_cap_note(grpo, 10_000)


def test_a_short_run_logs_the_step_cap_once(tiny_argv, tmp_path, caplog):
    from eulerforge_trl.train import main

    with caplog.at_level(logging.WARNING):
        assert main(tiny_argv("tiny_sft.yml", tmp_path / "sft", "training.max_steps=1")) == 0
    notes = [r.getMessage() for r in caplog.records if "of one epoch" in r.getMessage()]
    assert len(notes) == 1 and notes[0].startswith("training.max_steps=1 covers 32 of the")
