"""Shipped presets by name, `eulerforge presets [--explain KEY]`, and the cross-stage warnings and rules.

The messages are part of the product: their text is checked.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from eulerforge_trl import cli
from eulerforge_trl.config import load_preset
from eulerforge_trl.config.explain import all_keys, explain, field_doc
from eulerforge_trl.config.shipped import (
    PACKAGE_ROOT,
    SHIPPED_DIR,
    is_shipped,
    resolve_preset_path,
    shipped_presets,
)
from eulerforge_trl.errors import PresetError

REPO = Path(__file__).resolve().parents[2]


def _error(preset, overrides=None) -> str:
    with pytest.raises(PresetError) as info:
        load_preset(preset, overrides)
    return str(info.value)


def _cli_error(capsys, argv: list[str]) -> str:
    code = cli.main(argv)
    captured = capsys.readouterr()
    assert code == 2, captured
    assert "Traceback" not in captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    return lines[0].removeprefix("error: ")


# ------------------------------------------------------------------------------ resolution


@pytest.mark.parametrize("name", ["qwen3.5_0.8b_dense_lora_sft.yml", "qwen3.5_0.8b_dense_lora_sft"])
def test_shipped_name_with_or_without_suffix_resolves_from_any_directory(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_preset_path(name) == SHIPPED_DIR / "qwen3.5_0.8b_dense_lora_sft.yml"
    preset = load_preset(name)
    assert preset.training.type == "sft" and preset.model_name == "Qwen/Qwen3.5-0.8B-Base"
    # the output directory is named after the file, dots in the name included
    assert preset.output_dir == str(Path("outputs") / "qwen3.5_0.8b_dense_lora_sft")
    assert preset.data.path == "data/sft.jsonl", "the user's own data path stays as written"


def test_a_local_file_of_the_same_name_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("tiny_sft.yml").write_text("data:\n  path: mine.jsonl\ntraining:\n  lr: 0.5\n", encoding="utf-8")
    assert resolve_preset_path("tiny_sft.yml") == Path("tiny_sft.yml")
    preset = load_preset("tiny_sft.yml")
    assert preset.training.lr == 0.5 and preset.data.path == "mine.jsonl"
    # without the suffix the name is not a local file: the shipped one
    assert load_preset("tiny_sft").training.lr == 1.0e-3


def test_repository_paths_still_work_through_the_symlink():
    preset_path = REPO / "presets" / "tiny_sft.yml"
    assert resolve_preset_path(preset_path) == preset_path
    assert is_shipped(preset_path)
    assert not is_shipped(REPO / "pyproject.toml")


def test_unknown_name_lists_the_closest_shipped_presets(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    message = _error("tiny_stf.yml")
    assert message.startswith("preset file not found: tiny_stf.yml (")
    assert "tiny_sft.yml" in message and "eulerforge presets" in message
    assert "\n" not in message
    assert "eulerforge presets" in _error("nothing_like_it_at_all")


def test_a_path_with_directories_is_never_replaced_by_a_shipped_preset(tmp_path, monkeypatch):
    """`somewhere/tiny_sft.yml` that does not exist is an error (with a hint), not the shipped file."""
    monkeypatch.chdir(tmp_path)
    message = _error("somewhere/tiny_sft.yml")
    assert message.startswith("preset file not found: somewhere/tiny_sft.yml") and "tiny_sft.yml" in message


def test_unknown_name_is_exit_2_through_the_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    message = _cli_error(capsys, ["train", "--preset", "qwen3.5_0.8b_dense_lora_sf"])
    assert "qwen3.5_0.8b_dense_lora_sft.yml" in message and "eulerforge presets" in message


def test_shipped_example_data_is_found_from_another_directory(tmp_path, monkeypatch):
    """Shipped presets name examples/data/... relative to the cwd; elsewhere the package's copy is used."""
    monkeypatch.chdir(tmp_path)
    preset = load_preset("tiny_sft.yml")
    assert Path(preset.data.path) == PACKAGE_ROOT / "examples" / "data" / "sft.jsonl"
    assert Path(preset.data.eval_path) == PACKAGE_ROOT / "examples" / "data" / "sft_eval.jsonl"
    assert Path(load_preset("smollm2_135m_lora_sft").data.path).is_file()
    # a file of that relative path in the working directory wins
    Path("examples/data").mkdir(parents=True)
    Path("examples/data/sft.jsonl").write_text('{"prompt": "a", "response": "b"}\n', encoding="utf-8")
    assert load_preset("tiny_sft.yml").data.path == "examples/data/sft.jsonl"


def test_data_of_a_local_preset_is_not_redirected(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("mine.yml").write_text("data:\n  path: examples/data/sft.jsonl\n", encoding="utf-8")
    assert load_preset("mine.yml").data.path == "examples/data/sft.jsonl"


# ------------------------------------------------------------------------------ eulerforge presets


def test_presets_command_lists_every_shipped_preset_with_its_purpose(capsys):
    assert cli.main(["presets"]) == 0
    out = capsys.readouterr().out
    presets = shipped_presets()
    assert {p.name for p in presets} == {p.name for p in SHIPPED_DIR.glob("*.yml")}
    for p in presets:
        line = next(line for line in out.splitlines() if line.startswith(p.name + " "))
        assert p.purpose and p.purpose in line and p.kind in line
    tiny = next(p for p in presets if p.name == "tiny_sft.yml")
    assert tiny.kind == "sft" and tiny.purpose.startswith("Tiny SFT on the built-in tiny-qwen3.5")
    assert next(p for p in presets if p.name == "tiny_pipeline.yml").kind == "pipeline"


def test_explain_a_key_prints_type_default_and_doc(capsys):
    assert cli.main(["presets", "--explain", "training.ppo.kl_coef"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("training.ppo.kl_coef\n")
    assert "type:    float" in out and "default: 0.05" in out and "read by: the ppo stage" in out
    assert "KL penalty" in out
    text = explain("training.ppo.kl_estimator")
    assert "one of k1, k2, k3" in text and "default: k1" in text
    assert "data.eval_path" in explain("data.eval_path") and "str or null" in explain("data.eval_path")
    assert "default: [tensorboard]" in explain("training.report_to")


def test_explain_a_section_lists_its_fields():
    text = explain("training.ppo")
    assert text.startswith("training.ppo (section)")
    for name in ("clip_range", "kl_coef", "kl_estimator", "critic", "save_merged"):
        assert f"\n  {name} = " in text
    assert "lora (section, may be null)" in explain("lora")
    assert "  ppo  (section; --explain training.ppo)" in explain("training")


def test_explain_unknown_key_suggests_and_exits_2(capsys):
    message = _cli_error(capsys, ["presets", "--explain", "training.ppo.kl_coeff"])
    assert message.startswith("--explain training.ppo.kl_coeff: unknown preset key; did you mean training.ppo.kl_coef")
    assert "training.ppo.kl_coef" in _cli_error(capsys, ["presets", "--explain", "kl_coef"])
    assert "unknown preset key" in _cli_error(capsys, ["presets", "--explain", "training.lr.deeper"])


def test_every_schema_field_is_documented():
    undocumented = [key for key in all_keys() if not field_doc(key)]
    assert not undocumented, f"fields without a doc: {undocumented}"
    assert len(all_keys()) > 50


def test_kl_estimator_doc_matches_the_maths():
    """The doc's formulas are what losses.kl_per_token computes, and its claims hold for them."""
    import math

    import torch

    from eulerforge_trl.trainers.ppo.losses import kl_per_token

    text = field_doc("training.ppo.kl_estimator")
    assert "k1 = r, unbiased, can be negative" in text
    assert "k2 = r^2 / 2, >= 0, biased" in text
    assert "k3 = exp(-r) - 1 + r, >= 0, unbiased" in text
    r = torch.tensor([[-2.0, -0.5, 0.0, 0.3, 1.5]])  # r = log pi - log pi_ref
    ref = torch.zeros_like(r)
    formulas = {"k1": lambda x: x, "k2": lambda x: x * x / 2, "k3": lambda x: math.exp(-x) - 1 + x}
    for name, formula in formulas.items():
        expected = torch.tensor([[formula(float(x)) for x in r[0]]])
        torch.testing.assert_close(kl_per_token(r, ref, name), expected)
    assert (kl_per_token(r, ref, "k1") < 0).any()
    assert (kl_per_token(r, ref, "k2") >= 0).all() and (kl_per_token(r, ref, "k3") >= 0).all()


def test_data_format_is_gone():
    assert "data.format" in _error("tiny_sft.yml", ["data.format=raw"])
    assert "unknown key" in _error("tiny_sft.yml", ["data.format=raw"])


# ------------------------------------------------------------------------------ stage sections


def test_a_key_of_another_stage_warns_once_naming_the_key_and_its_stage(caplog):
    with caplog.at_level(logging.WARNING, logger="eulerforge_trl.config.loading"):
        preset = load_preset("tiny_sft.yml", ["training.dpo.beta=0.3", "training.ppo.kl_coef=0.2"])
    assert preset.training.dpo.beta == 0.3
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert any("training.dpo.beta is set but only the dpo stage reads it" in m for m in messages)
    assert any("training.ppo.kl_coef is set but only the ppo stage reads it" in m for m in messages)
    assert all("training.type=sft" in m for m in messages)


def test_reward_model_section_is_the_ppo_stages(tmp_path, caplog):
    path = tmp_path / "rm.yml"
    path.write_text(
        "lora: {r: 8}\ndata: {task: preference, path: x.jsonl}\ntraining:\n  type: rm\n"
        "  reward_model: {checkpoint_path: somewhere}\n",
        encoding="utf-8",
    )
    with caplog.at_level(logging.WARNING, logger="eulerforge_trl.config.loading"):
        load_preset(path)
    (record,) = caplog.records
    message = record.getMessage()
    assert "training.reward_model.checkpoint_path" in message and "the ppo, grpo and rloo stages read it" in message


def test_own_stage_keys_defaults_and_resolved_presets_do_not_warn(tmp_path, caplog):
    from eulerforge_trl.config import preset_to_yaml

    with caplog.at_level(logging.WARNING, logger="eulerforge_trl.config.loading"):
        load_preset("tiny_ppo.yml", ["training.ppo.kl_coef=0.2"])
        load_preset("tiny_dpo.yml", ["training.dpo.beta=0.2"])
        load_preset("tiny_sft.yml", ["training.dpo.beta=0.1"])  # the default: nothing changes
        resolved = tmp_path / "preset.yml"  # what every run writes: every key, at its value
        resolved.write_text(preset_to_yaml(load_preset("tiny_sft.yml")), encoding="utf-8")
        load_preset(resolved)
    assert not caplog.records


# ------------------------------------------------------------------------------ rules


def test_reward_model_name_must_be_the_policy_base(tmp_path):
    base = ["training.reward_model.model_name=tiny-qwen3.5"]
    message = _error("tiny_ppo.yml", base)
    assert (
        "training.reward_model.model_name (tiny-qwen3.5) differs from model_name (outputs/tiny/01_sft/final)" in message
    )
    # the same directory spelt differently is the same base
    (tmp_path / "sft").mkdir()
    same = [f"model_name={tmp_path}/sft", f"training.reward_model.model_name={tmp_path}/./sft/"]
    assert load_preset("tiny_ppo.yml", same).training.reward_model.model_name
    # other stages do not check it (they warn that it is unused)
    assert load_preset("tiny_sft.yml", base).training.type == "sft"


def test_dpo_cannot_train_lm_head():
    message = _error("tiny_dpo.yml", ["lora.target_modules=[q_proj,lm_head]"])
    assert "lora.target_modules includes lm_head" in message
    assert load_preset("tiny_dpo.yml", ["lora.target_modules=[q_proj,v_proj]"]).lora.target_modules == [
        "q_proj",
        "v_proj",
    ]
