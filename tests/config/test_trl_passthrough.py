"""`training.<stage>` of a TRL stage takes any field of the stage's TRL config class: checked at load
(did you mean, the value's type, fields the wrapper sets refused naming their key), shown by
`--explain` with TRL's own help, and written with the rest of the config to `trl_config.json`.

The end-to-end runs go through `eulerforge train` (`cli.main`) on the tiny model, one step each.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from eulerforge_trl import cli
from eulerforge_trl.cli import pipeline_main
from eulerforge_trl.config import load_preset, preset_to_yaml
from eulerforge_trl.config.trl_fields import COMMON_OWNED, trl_config_class
from eulerforge_trl.errors import PresetError
from eulerforge_trl.rundir import RunDir

REWARD = "def short(prompts, completions, **kwargs):\n    return [-len(c) / 10.0 for c in completions]\n"


def _user_error(capsys, code: int) -> str:
    """The one `error: ` line of a refused command (exit 2, no traceback), without its prefix."""
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0].removeprefix("error: ")


# ------------------------------------------------------------------------------ the must-show runs

ONE_STEP = ("training.max_steps=1", "training.batch_size=4", "training.save_steps=100", "data.eval_path=null")


def _sft(tmp_path):
    return ("tiny_sft.yml", ["training.sft.packing=true"])


def _dpo(tmp_path):
    return ("tiny_dpo.yml", ["model_name=tiny-qwen3.5", "training.dpo.rpo_alpha=0.5"])


def _grpo(tmp_path):
    rule = tmp_path / "rule.py"
    rule.write_text(REWARD, encoding="utf-8")
    return (
        "tiny_grpo.yml",
        [
            "model_name=tiny-qwen3.5",
            "training.reward_model.checkpoint_path=",
            f"training.reward_funcs=[{rule}:short]",
            "training.grpo.max_completion_length=4",
            "training.grpo.loss_type=dr_grpo",
        ],
    )


@pytest.mark.parametrize("stage", [_sft, _dpo, _grpo], ids=["sft", "dpo", "grpo"])
def test_a_trl_field_set_in_the_preset_reaches_the_trl_config(stage, tmp_path, tiny_argv):
    """`eulerforge train` with a TRL field under training.<stage> trains one step and writes the TRL
    config it trained with to trl_config.json: the field, and the fields mapped from our keys."""
    preset, sets = stage(tmp_path)
    out = tmp_path / "run"
    argv = tiny_argv(preset, out, *ONE_STEP, *sets)
    assert cli.main(["train", *argv]) == 0
    written = json.loads(RunDir(out).trl_config.read_text(encoding="utf-8"))
    assert written["learning_rate"] == load_preset(*_loaded(argv)).training.lr  # training.lr
    assert written["per_device_train_batch_size"] == 4 and written["max_steps"] == 1
    if preset == "tiny_sft.yml":
        # the tiny model's linear-attention layers cannot keep padding-free packed rows apart on a CPU
        assert written["packing"] is True and written["packing_strategy"] == "wrapped"
    elif preset == "tiny_dpo.yml":  # TRL 1.16 spells RPO as the sft loss beside DPO's
        assert written["rpo_alpha"] == 0.5
        assert written["loss_type"] == ["sigmoid", "sft"] and written["loss_weights"] == [1.0, 0.5]
    else:
        assert written["loss_type"] == "dr_grpo" and written["num_generations"] == 4 and written["beta"] == 0.04


def _loaded(argv: list[str]) -> tuple[str, list[str]]:
    """(preset, overrides) of a `tiny_argv` argv, for `load_preset`."""
    return argv[0], [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]


# ------------------------------------------------------------------------------ refused at load


def test_a_misspelt_trl_field_gets_did_you_mean(tmp_path, tiny_argv, capsys):
    code = cli.main(["train", *tiny_argv("tiny_grpo.yml", tmp_path / "run", "training.grpo.num_generatons=4")])
    message = _user_error(capsys, code)
    assert "training.grpo.num_generatons" in message and "did you mean num_generations" in message
    assert not (tmp_path / "run").exists()  # refused before anything loaded


def test_a_value_of_the_wrong_type_names_the_key_with_its_file_and_line(tmp_path, capsys):
    preset = tmp_path / "sft.yml"
    preset.write_text(
        "model_name: tiny-qwen3.5\ndata:\n  path: x.jsonl\ntraining:\n  type: sft\n  sft:\n    packing: maybe\n",
        encoding="utf-8",
    )
    message = _user_error(capsys, cli.main(["train", str(preset), "--output-dir", str(tmp_path / "run")]))
    assert message.startswith(f"{preset}:7: training.sft.packing: must be true or false"), message
    assert "'maybe'" in message


@pytest.mark.parametrize(
    ("item", "key"),
    [
        ("training.sft.learning_rate=1e-3", "training.lr"),
        ("training.sft.per_device_train_batch_size=2", "training.batch_size"),
        ("training.sft.num_train_epochs=2", "training.epochs"),
        ("training.sft.max_length=32", "data.max_length"),
        ("training.sft.output_dir=/tmp/x", "output_dir"),
        ("training.sft.bf16=true", "training.precision"),
        ("training.sft.report_to=[wandb]", "training.report_to"),
    ],
)
def test_a_field_the_wrapper_sets_is_refused_naming_its_key(item, key):
    name = item.partition("=")[0]
    with pytest.raises(PresetError, match=rf"{name} is set by {key}[ ;]"):
        load_preset("tiny_sft.yml", [item])


def test_a_field_set_for_correctness_is_refused_saying_why():
    with pytest.raises(PresetError, match=r"training\.grpo\.disable_dropout is set by the stage itself: the reference"):
        load_preset("tiny_grpo.yml", ["training.grpo.disable_dropout=false"])


def test_a_value_trl_checks_only_while_training_is_refused_at_load():
    with pytest.raises(PresetError, match=r"'drgrpo' is not one of .*; did you mean dr_grpo\?"):
        load_preset("tiny_grpo.yml", ["training.grpo.loss_type=drgrpo"])


def test_the_pipeline_refuses_a_later_stages_trl_field_before_anything_trains(repo, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(repo)
    path = tmp_path / "pipe.yml"
    path.write_text("stages:\n  sft: tiny_sft.yml\n  dpo: tiny_dpo.yml\n", encoding="utf-8")
    code = pipeline_main([str(path), "--output-dir", str(tmp_path / "out"), "--set", "dpo.training.dpo.rpo_alpa=1"])
    assert "did you mean rpo_alpha" in _user_error(capsys, code)
    assert not (tmp_path / "out" / "01_sft").exists()


# ------------------------------------------------------------------------------ the preset tree


def test_trl_fields_keep_their_values_through_preset_yml(tmp_path):
    preset = load_preset("tiny_dpo.yml", ["training.dpo.label_smoothing=0.1", "training.dpo.loss_type=robust"])
    assert preset.training.dpo.passthrough == {"label_smoothing": 0.1, "loss_type": ["robust"]}
    written = tmp_path / "preset.yml"
    written.write_text(preset_to_yaml(preset), encoding="utf-8")
    assert "    label_smoothing: 0.1\n" in written.read_text(encoding="utf-8")  # beside beta, as a preset sets it
    assert load_preset(written, output_dir=preset.output_dir) == preset


def test_a_preset_without_trl_fields_does_not_import_trl():
    code = "import sys; from eulerforge_trl.config import load_preset; load_preset('tiny_grpo.yml'); print('trl' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


def test_the_fields_every_trl_stage_sets_are_the_refused_ones(tmp_path):
    """common_trainer_args sets exactly fields the table refuses (build_trl_config also checks it)."""
    from eulerforge_trl.trainers.common import common_trainer_args

    set_there = common_trainer_args(load_preset("tiny_sft.yml"), RunDir(tmp_path), has_eval=True)
    assert set(set_there) <= set(COMMON_OWNED), set(set_there) - set(COMMON_OWNED)
    trl_names = {f.name for f in dataclasses.fields(trl_config_class("sft"))}
    assert set(COMMON_OWNED) <= trl_names, set(COMMON_OWNED) - trl_names


def test_the_rm_stage_config_takes_its_trl_fields(tmp_path):
    from eulerforge_trl.trainers.trl_config import build_trl_config

    preset = load_preset("tiny_rm.yml", ["training.rm.center_rewards_coefficient=0.01", "model_name=tiny-qwen3.5"])
    config = build_trl_config("rm", preset, RunDir(tmp_path), False, max_length=64, eos_token="<eos>")
    assert config.center_rewards_coefficient == 0.01 and config.max_length == 64
    assert json.loads(config.to_json_string())["center_rewards_coefficient"] == 0.01  # as trl_config.json has it


# ------------------------------------------------------------------------------ --explain


def test_explain_shows_trls_own_help_for_a_trl_field(capsys):
    assert cli.main(["presets", "--explain", "training.grpo.loss_type"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    help_text = " ".join(trl_config_class("grpo").__dataclass_fields__["loss_type"].metadata["help"].split())
    assert help_text[:120] in text and "default: dapo (TRL's)" in text


def test_explain_of_a_section_lists_the_trl_fields(capsys):
    assert cli.main(["presets", "--explain", "training.sft"]) == 0
    text = capsys.readouterr().out
    help_text = " ".join(trl_config_class("sft").__dataclass_fields__["packing"].metadata["help"].split())
    assert "  packing = false  (bool)" in text and help_text[:60] in " ".join(text.split())
    assert "[learning_rate is set by training.lr" in text


def test_rpo_alpha_adds_the_sft_loss_beside_the_preset_losses(tmp_path):
    from eulerforge_trl.trainers.dpo import to_dpo_config

    sets = ["training.dpo.loss_type=[sigmoid,ipo]", "training.dpo.loss_weights=[1,0.5]", "training.dpo.rpo_alpha=0.2"]
    config = to_dpo_config(load_preset("tiny_dpo.yml", sets), RunDir(tmp_path), has_eval=False)
    assert config.loss_type == ["sigmoid", "ipo", "sft"] and config.loss_weights == [1.0, 0.5, 0.2]
    with pytest.raises(PresetError, match=r"rpo_alpha adds the sft loss, and training\.dpo\.loss_type has one"):
        load_preset("tiny_dpo.yml", ["training.dpo.loss_type=[sigmoid,sft]", "training.dpo.rpo_alpha=0.2"])
