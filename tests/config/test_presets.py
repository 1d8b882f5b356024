"""Presets: loading, `--set` overrides, and the text of every error (the message is part of the product)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from eulerforge_trl.config import Preset, load_preset, preset_to_yaml
from eulerforge_trl.config.schema import DataSection, LoraSection
from eulerforge_trl.errors import PresetError
from eulerforge_trl.pipeline.full import read_pipeline_preset

PRESETS = Path(__file__).resolve().parents[2] / "presets"


def _is_pipeline(path: Path) -> bool:
    return "stages" in (yaml.safe_load(path.read_text(encoding="utf-8")) or {})


STAGE_PRESETS = sorted(
    p for p in PRESETS.glob("*.yml") if p.name.startswith(("tiny_", "qwen3.5_")) and not _is_pipeline(p)
)
PIPELINE_PRESETS = sorted(p for p in PRESETS.glob("*.yml") if _is_pipeline(p))
TASK_OF_STAGE = {
    "sft": "sft",
    "rm": "preference",
    "dpo": "preference",
    "ppo": "prompt_only",
    "grpo": "prompt_only",
    "rloo": "prompt_only",
    "kto": "unpaired_preference",
}


def _write(tmp_path: Path, text: str, name: str = "preset.yml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _error(preset, overrides=None) -> str:
    with pytest.raises(PresetError) as info:
        load_preset(preset, overrides)
    return str(info.value)


# ------------------------------------------------------------------------------ shipped presets


def test_stage_presets_are_found():
    """The parametrised tests below would pass vacuously on an empty glob."""
    names = {p.name for p in STAGE_PRESETS}
    assert {"tiny_sft.yml", "tiny_rm.yml"} <= names
    assert "tiny_pipeline.yml" not in names


@pytest.mark.parametrize("path", STAGE_PRESETS, ids=lambda p: p.stem)
def test_shipped_stage_preset_loads_and_round_trips(path, tmp_path):
    """Each preset loads, its data task fits its stage, and its resolved YAML loads back equal."""
    preset = load_preset(path)
    assert isinstance(preset, Preset)
    assert preset.data.task == TASK_OF_STAGE[preset.training.type]
    assert preset.training.type in path.stem.split("_"), "the file name should say which stage it trains"
    assert preset.output_dir == str(Path("outputs") / path.stem)
    if "lora" in path.stem.split("_"):
        assert preset.lora is not None, "a *_lora_* preset must have a lora: section"

    resolved = _write(tmp_path, preset_to_yaml(preset))
    assert load_preset(resolved) == preset


@pytest.mark.parametrize("path", PIPELINE_PRESETS, ids=lambda p: p.stem)
def test_pipeline_preset_names_stage_presets_of_the_right_type(path):
    """A pipeline preset has its own schema (`stages:`); each stage file it names loads as that stage."""
    stages = read_pipeline_preset(path)
    assert list(stages)[0] == "sft"
    for stage, stage_path in stages.items():
        assert stage_path.is_file(), f"{path.name}: stages.{stage} names a missing file {stage_path}"
        assert load_preset(stage_path).training.type == stage


def test_pipeline_preset_is_not_a_stage_preset():
    """Loading tiny_pipeline.yml as a stage preset is an error naming the unknown key."""
    assert "stages" in _error(PRESETS / "tiny_pipeline.yml")


def test_file_values_override_defaults_and_the_rest_keep_them():
    """tiny_sft.yml: its keys win, unlisted keys keep the schema defaults, no lora section = full FT."""
    preset = load_preset(PRESETS / "tiny_sft.yml")
    defaults = Preset()
    assert preset.training.lr == 1.0e-3 and preset.data.max_length == 64 and preset.training.batch_size == 32
    assert preset.training.grad_accum == defaults.training.grad_accum
    assert preset.training.ppo == defaults.training.ppo
    assert preset.lora is None
    assert load_preset(PRESETS / "tiny_rm.yml").lora == LoraSection(r=16, alpha=32, dropout=0.0)


def test_defaults_alone_lack_a_data_path():
    assert "data.path must name a JSONL file" in _error(None)


def test_no_preset_gives_the_defaults():
    expected = Preset(data=DataSection(path="x.jsonl"), output_dir="outputs/run")
    assert load_preset(None, ["data.path=x.jsonl"]) == expected


# ------------------------------------------------------------------------------------ overrides


def test_overrides_convert_types_and_reach_nested_keys():
    preset = load_preset(
        PRESETS / "tiny_sft.yml",
        [
            "training.lr=1e-4",
            "training.max_steps=7",
            "training.ppo.kl_coef=0.3",
            "training.gradient_checkpointing=true",
        ],
    )
    assert preset.training.lr == 1e-4 and isinstance(preset.training.lr, float)
    assert preset.training.max_steps == 7 and isinstance(preset.training.max_steps, int)
    assert preset.training.ppo.kl_coef == 0.3
    assert preset.training.gradient_checkpointing is True


def test_overrides_take_lists_and_empty_lists():
    preset = load_preset(PRESETS / "tiny_rm.yml", ["lora.target_modules=[q_proj,v_proj]", "training.report_to=[]"])
    assert preset.lora.target_modules == ["q_proj", "v_proj"]
    assert preset.training.report_to == []


def test_override_creates_and_removes_the_lora_section():
    """`lora.r=8` on a full-FT preset adds a LoRA section (other fields default); `lora=null` removes it."""
    added = load_preset(PRESETS / "tiny_sft.yml", ["lora.r=8"])
    assert added.lora == LoraSection(r=8)
    assert load_preset(PRESETS / "tiny_sft.yml", ["lora.r=8", "lora=null"]).lora is None


def test_later_overrides_win_and_dict_overrides_work():
    preset = load_preset(PRESETS / "tiny_sft.yml", ["training.lr=1e-4", "training.lr=3e-4"])
    assert preset.training.lr == 3e-4
    nested = load_preset(PRESETS / "tiny_sft.yml", {"training": {"lr": 5e-4, "ppo": {"epochs": 2}}})
    assert nested.training.lr == 5e-4 and nested.training.ppo.epochs == 2


def test_output_dir_argument_wins_over_the_preset():
    assert load_preset(PRESETS / "tiny_sft.yml", output_dir="/tmp/elsewhere").output_dir == "/tmp/elsewhere"


def test_set_without_equals_sign_is_explained():
    message = _error(PRESETS / "tiny_sft.yml", ["training.lr"])
    assert message.startswith("--set training.lr:") and "KEY=VALUE" in message


# ------------------------------------------------------------------------------- error messages


def test_unknown_key_in_set_names_it_and_suggests_the_closest():
    message = _error(PRESETS / "tiny_sft.yml", ["training.max_step=5"])
    assert message.startswith(f"{PRESETS / 'tiny_sft.yml'} (in --set): training.max_step:")
    assert "unknown key" in message and "Did you mean" in message and "'max_steps'" in message


def test_unknown_top_level_key_suggests_the_closest():
    message = _error(PRESETS / "tiny_sft.yml", ["trainig.lr=1"])
    assert "trainig" in message and "'training'" in message


def test_unknown_key_in_file_gives_file_and_line(tmp_path):
    """A typo in the YAML file points at its file:line (line 9 here, under training:)."""
    path = _write(
        tmp_path,
        "# a preset with a typo\n"  # 1
        "model_name: tiny-qwen3.5\n"  # 2
        "data:\n"  # 3
        "  task: sft\n"  # 4
        "  path: examples/data/sft.jsonl\n"  # 5
        "training:\n"  # 6
        "  type: sft\n"  # 7
        "  lr: 1.0e-3\n"  # 8
        "  max_step: 10\n",  # 9
    )
    message = _error(path)
    assert message.startswith(f"{path}:9: training.max_step:")
    assert "Did you mean" in message and "'max_steps'" in message


def test_unknown_nested_key_in_file_gives_its_line(tmp_path):
    path = _write(tmp_path, "data:\n  path: x.jsonl\nlora:\n  r: 8\n  alpha: 16\n  dropuot: 0.1\n")
    message = _error(path)
    assert message.startswith(f"{path}:6: lora.dropuot:") and "'dropout'" in message


def test_wrong_type_names_key_and_value(tmp_path):
    message = _error(PRESETS / "tiny_sft.yml", ["training.batch_size=lots"])
    assert "training.batch_size" in message and "'lots'" in message
    path = _write(tmp_path, "data:\n  path: x.jsonl\n  max_length: long\n")
    message = _error(path)
    assert message.startswith(f"{path}:3: data.max_length:") and "'long'" in message


def test_literal_choice_lists_the_choices(tmp_path):
    message = _error(PRESETS / "tiny_sft.yml", ["training.type=orpo"])
    assert "training.type" in message and "'orpo'" in message
    for choice in ("sft", "rm", "ppo", "grpo", "dpo", "rloo", "kto"):
        assert f"'{choice}'" in message
    path = _write(tmp_path, "data:\n  path: x.jsonl\n  task: chat\n")
    message = _error(path)
    assert message.startswith(f"{path}:3: data.task:") and "'prompt_only'" in message


def test_invalid_yaml_gives_file_and_line(tmp_path):
    path = _write(tmp_path, "data:\n  path: [x.jsonl\ntraining:\n  lr: 1\n")
    assert _error(path).startswith(f"{path}:")
    assert "not valid YAML" in _error(path)


def test_preset_must_be_a_mapping(tmp_path):
    assert "mapping" in _error(_write(tmp_path, "- sft\n- rm\n"))


def test_missing_preset_file():
    assert "preset file not found" in _error(PRESETS / "no_such_preset.yml")


def test_cross_key_rules_are_reported_together_in_one_message():
    """Three broken rules at once: each is named with its values and the fix, in one PresetError."""
    message = _error(
        PRESETS / "tiny_sft.yml",
        ["training.type=ppo", "training.batch_size=8", "training.ppo.num_mini_batches=3", "lora=null"],
    )
    assert message.startswith(f"{PRESETS / 'tiny_sft.yml'}: ")
    assert "training.ppo.num_mini_batches (3) must divide training.batch_size (8)" in message
    assert "data.task (sft) does not fit training.type=ppo: set data.task=prompt_only" in message
    assert "the ppo stage trains a LoRA adapter" in message and "lora" in message
    assert len(message.split("; ")) == 3


def test_rm_without_lora_is_refused():
    message = _error(PRESETS / "tiny_rm.yml", ["lora=null"])
    assert "rm stage trains a LoRA adapter" in message


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("training.lr=-1", "training.lr (-1.0) must be >= 0"),
        ("training.warmup_ratio=1.5", "training.warmup_ratio (1.5) must be in [0, 1)"),
        ("data.eval_split=1", "data.eval_split (1.0) must be in [0, 1)"),
        ("training.max_steps=-1", "set training.max_steps > 0 or training.epochs > 0"),
        ("data.max_length=4", "data.max_length (4) must be >= 8"),
    ],
)
def test_single_rules_name_key_and_value(override, expected):
    overrides = [override] + (["training.epochs=0"] if "max_steps" in override else [])
    assert expected in _error(PRESETS / "tiny_sft.yml", overrides)


def test_ppo_rules_apply_only_to_ppo():
    """training.ppo.* is ignored by other stages: a bad PPO value does not block an SFT run."""
    assert load_preset(PRESETS / "tiny_sft.yml", ["training.ppo.num_mini_batches=3"]).training.type == "sft"
