"""RLOO end to end on the shared base, as GRPO runs it: policy LoRA, reference = adapters off, RM adapter.

One base in memory: the policy adapter and the RM adapter sit on one PeftModel handed to TRL's
RLOOTrainer, the reference is that model with adapters disabled (no ref_model, no "ref" copy), and
the RM adapter never trains. Rewards are the RM and/or `training.reward_funcs`, logged under GRPO's
names; `final/` is the policy adapter, loadable as a later `model_name`.
"""

from __future__ import annotations

import json

import pytest
import torch

from eulerforge_trl.cli import pipeline_main
from eulerforge_trl.config import load_preset
from eulerforge_trl.errors import PresetError
from eulerforge_trl.rundir import FINAL_MARKER, read_metrics
from eulerforge_trl.train import main

SHORT = (
    "training.max_steps=4",
    "training.save_steps=4",
    "training.batch_size=8",
    "training.rloo.max_completion_length=12",
)
JUDGE = "pleasant_score_judge"


def test_rloo_on_the_rm_and_a_function_trains_the_policy_adapter_only(
    tmp_path, tiny_argv, tiny_sft_final, tiny_rm_final
):
    """Capture the trainer TRL builds: no ref_model, no second copy of the base, RM adapter frozen and
    unchanged, the policy adapter moved; the samples and metrics carry every reward source."""
    from trl import RLOOTrainer

    from eulerforge_trl.models.loading import load_causal_lm, load_tokenizer

    seen = {}
    original_train = RLOOTrainer.train

    def spy(self, *args, **kwargs):
        model = self.model
        seen["ref_model"] = self.ref_model
        seen["adapters"] = set(model.peft_config)
        seen["rm_before"] = {n: p.detach().clone() for n, p in model.named_parameters() if ".reward." in n}
        seen["base_before"] = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
        seen["trainable"] = {n for n, p in model.named_parameters() if p.requires_grad}
        result = original_train(self, *args, **kwargs)
        seen["rm_after"] = {n: p.detach().clone() for n, p in model.named_parameters() if ".reward." in n}
        seen["base_after"] = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
        seen["active"] = model.active_adapter
        return result

    RLOOTrainer.train = spy
    try:
        argv = tiny_argv(
            "tiny_rloo.yml",
            tmp_path,
            f"model_name={tiny_sft_final}",
            f"training.reward_model.checkpoint_path={tiny_rm_final}",
            *SHORT,
            "training.rloo.sample_every=2",
            "training.lr=1e-2",
        )
        assert main(argv) == 0
    finally:
        RLOOTrainer.train = original_train
    assert seen["ref_model"] is None
    assert seen["adapters"] == {"default", "reward"}  # no "ref" copy: the reference is adapters disabled
    assert seen["rm_before"] and all(".default." in n for n in seen["trainable"]) and seen["active"] == "default"
    for name, before in {**seen["rm_before"], **seen["base_before"]}.items():  # the reference and the RM stay
        after = seen["rm_after"].get(name, seen["base_after"].get(name))
        torch.testing.assert_close(after, before, rtol=0, atol=0)

    history = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "reward_mean" in r]
    assert [r["step"] for r in history] == [1, 2, 3, 4]
    for key in ("reward_mean", "reward/rm", f"reward/{JUDGE}", "reward/pleasant_words", "kl_divergence", "loss"):
        assert all(key in r for r in history), key
    assert history[0]["kl_divergence"] == pytest.approx(0.0, abs=1e-6)  # policy == reference at step 1
    assert history[-1]["kl_divergence"] != pytest.approx(0.0, abs=1e-6)  # the policy moved away from it
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert {s["step"] for s in samples} == {1, 2, 4}
    assert set(samples[0]["rewards"]) == {"rm", JUDGE, "pleasant_words"}

    final = tmp_path / "final"
    assert json.loads((final / FINAL_MARKER).read_text())["stage"] == "rloo"
    assert (final / "adapter_config.json").is_file() and not (final / "reward").exists()
    tokenizer = load_tokenizer(str(final))
    ids = tokenizer(["Describe the cat near the park.\nAnswer:"], return_tensors="pt").input_ids
    with torch.no_grad():
        policy = load_causal_lm(str(final), tokenizer=tokenizer)(ids).logits
        sft = load_causal_lm(str(tiny_sft_final), tokenizer=tokenizer)(ids).logits
    assert not torch.allclose(policy, sft)


def test_the_shipped_preset_trains_from_the_builtin_model(tmp_path, tiny_argv):
    """`eulerforge train --preset tiny_rloo.yml` runs as it is: the functions alone reward, no RM."""
    assert main(tiny_argv("tiny_rloo.yml", tmp_path, *SHORT)) == 0
    history = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "reward_mean" in r]
    assert len(history) == 4 and all("reward/rm" not in r for r in history)
    assert (tmp_path / "final" / "adapter_model.safetensors").is_file()
    config = json.loads((tmp_path / "trl_config.json").read_text())
    assert config["num_generations"] == 4 and config["beta"] == 0.05 and config["max_completion_length"] == 12


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (["training.rloo.num_generations=1"], "training.rloo.num_generations (1) must be >= 2"),
        (["training.batch_size=6"], "training.rloo.num_generations (4) must divide the completions per step"),
        (["lora.target_modules=[q_proj,lm_head]"], "lora.target_modules includes lm_head, which RLOO cannot train"),
        (["training.rloo.use_vllm=true"], "training.rloo.use_vllm is set by generation.backend"),
        (["training.rloo.normalize_advantage=true"], "did you mean normalize_advantages"),
        (["lora=null"], "the rloo stage trains a LoRA adapter on the shared base"),
    ],
)
def test_what_cannot_work_is_refused_at_load(overrides, says):
    with pytest.raises(PresetError) as err:
        load_preset("tiny_rloo.yml", overrides)
    assert says in str(err.value)


def test_merged_copy_is_refused_naming_rloo():
    from eulerforge_trl.trainers.grpo_generation import grpo_generation_args

    with pytest.raises(PresetError, match="generation.merged_copy: RLOO samples through TRL's generate"):
        grpo_generation_args(load_preset("tiny_rloo.yml", ["generation.merged_copy=true"]))


def test_too_few_prompts_for_one_step_names_rloo(tmp_path, tiny_argv, capsys):
    data = tmp_path / "one.jsonl"
    data.write_text(json.dumps({"prompt": "Describe the dog.\nAnswer:"}) + "\n", encoding="utf-8")
    assert main(tiny_argv("tiny_rloo.yml", tmp_path / "out", f"data.path={data}", "training.max_steps=1")) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith(("error", "Traceback"))]
    assert len(err) == 1 and "fewer than one RLOO step needs" in err[0] and "training.rloo.num_generations" in err[0]


@pytest.mark.slow  # three stages through the CLI
def test_sft_rm_rloo_pipeline_wires_the_sft_model_and_the_rm(tmp_path, repo, monkeypatch, capsys):
    monkeypatch.chdir(repo)  # the presets name their data relative to the repository root
    out = tmp_path / "out"
    sets = ["sft.training.max_steps=4", "rm.training.max_steps=4", "rm.training.save_steps=4"]
    sets += [f"{stage}.training.report_to=[]" for stage in ("sft", "rm", "rloo")]
    sets += [f"rloo.{item}" for item in SHORT]
    argv = ["tiny_rloo_pipeline.yml", "--output-dir", str(out)]
    for item in sets:
        argv += ["--set", item]
    assert pipeline_main(argv) == 0
    preset = (out / "03_rloo" / "preset.yml").read_text()
    assert str(out / "01_sft" / "final") in preset and str(out / "02_rm" / "final") in preset
    history = [r for r in read_metrics(out / "03_rloo" / "metrics.jsonl") if "reward_mean" in r]
    assert len(history) == 4 and all("reward/rm" in r for r in history)
    assert "rloo: reward_mean" in capsys.readouterr().out  # the pipeline's summary line of the stage


@pytest.mark.slow  # two stages through the CLI
def test_sft_then_rloo_on_reward_functions(tmp_path, repo, monkeypatch):
    monkeypatch.chdir(repo)
    path = tmp_path / "pipe.yml"
    path.write_text("stages:\n  sft: tiny_sft.yml\n  rloo: tiny_rloo.yml\n", encoding="utf-8")
    out = tmp_path / "out"
    sets = ["sft.training.max_steps=4", "sft.training.report_to=[]", "rloo.training.report_to=[]"]
    sets += [f"rloo.{item}" for item in SHORT]
    argv = [str(path), "--output-dir", str(out)]
    for item in sets:
        argv += ["--set", item]
    assert pipeline_main(argv) == 0
    history = [r for r in read_metrics(out / "03_rloo" / "metrics.jsonl") if "reward_mean" in r]
    assert len(history) == 4 and all(f"reward/{JUDGE}" in r and "reward/rm" not in r for r in history)
