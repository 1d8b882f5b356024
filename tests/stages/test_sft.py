"""The SFT stage end to end on the tiny model, through `train.main([...])` as the CLI runs it.

Most tests read the shared run `tiny_sft_run` (conftest.py: presets/tiny_sft.yml, 150 steps, eval
on examples/data/sft_eval.jsonl, checkpoints every 50 steps, the last two kept: 100 and 150).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import stat

import pytest
import torch

from eulerforge_trl.config import TINY_MODEL_NAME, load_preset
from eulerforge_trl.examples.animals import PLEASANT, UNPLEASANT
from eulerforge_trl.models.loading import load_causal_lm, load_tokenizer
from eulerforge_trl.rundir import FINAL_MARKER, read_metrics
from eulerforge_trl.train import main

PROMPT = re.compile(r"the (\w+) (?:in|near|at) the (\w+)")
N_PROMPTS = 6


def _eval_prompts(example_data) -> list[str]:
    lines = (example_data / "sft_eval.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["prompt"] for line in lines[:N_PROMPTS]]


def _greedy(model, tokenizer, prompt: str, max_new_tokens: int = 24) -> str:
    ids = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1] :])


def _writes_template(prompt: str, completion: str, eos: str) -> bool:
    """True if `completion` is " The <animal> in the <place> is <adj>, <adj> and <adj>." + EOS."""
    animal, place = PROMPT.search(prompt).groups()
    adjectives = "|".join(PLEASANT + UNPLEASANT)
    template = rf" The {animal} in the {place} is ({adjectives}), ({adjectives}) and ({adjectives})\.{re.escape(eos)}"
    return re.match(template, completion) is not None


# ---------------------------------------------------------------------------- the shared run


def test_sft_loss_falls_and_is_logged(tiny_sft_run):
    """metrics.jsonl holds step/loss lines and eval lines; the training loss fell by more than half."""
    records = read_metrics(tiny_sft_run / "metrics.jsonl")
    train = [r for r in records if "loss" in r]
    assert [r["step"] for r in train] == [1, *range(10, 151, 10)]  # logging_first_step + every 10
    assert train[-1]["loss"] < 0.5 * train[0]["loss"], (train[0]["loss"], train[-1]["loss"])
    evals = [r for r in records if "eval_loss" in r]
    assert evals, "data.eval_path is set, so evaluation lines are expected"
    assert evals[-1]["eval_loss"] < train[0]["loss"]


def test_sft_writes_plot_preset_and_complete_final(tiny_sft_run):
    """training_curves.png, preset.yml and final/ (full model, tokenizer, completion marker)."""
    assert (tiny_sft_run / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tiny_sft_run / "preset.yml").is_file()
    final = tiny_sft_run / "final"
    for name in ("config.json", "model.safetensors", "tokenizer.json", FINAL_MARKER):
        assert (final / name).is_file(), f"final/ lacks {name}"
    marker = json.loads((final / FINAL_MARKER).read_text())
    assert marker["stage"] == "sft" and marker["base"] == TINY_MODEL_NAME and marker["merged"] is False
    leftovers = [p.name for p in tiny_sft_run.iterdir() if p.name.startswith(".")]
    assert not leftovers, f"temporary files left behind: {leftovers}"
    # written through temp files, yet as readable as files created directly (not mkdtemp's 0700)
    assert _mode(final) == _mode(tiny_sft_run / "checkpoints")
    assert _mode(tiny_sft_run / "preset.yml") == _mode(tiny_sft_run / "training_curves.png")


def test_preset_yml_is_the_resolved_preset(tiny_sft_run, tiny_argv, tiny_sft_overrides):
    """<output_dir>/preset.yml loads back to the Preset the run used (defaults, file and --set merged)."""
    argv = tiny_argv("tiny_sft.yml", tiny_sft_run, *tiny_sft_overrides)
    overrides = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    expected = load_preset(argv[0], overrides, output_dir=str(tiny_sft_run))

    written = load_preset(tiny_sft_run / "preset.yml")
    assert written == expected
    assert written.training.max_steps == 150 and written.training.report_to == []


def test_sft_model_writes_the_example_template(tiny_sft_final, example_data):
    """final/ loads with load_causal_lm and, greedy, answers held-out prompts in the trained format."""
    tokenizer = load_tokenizer(str(tiny_sft_final))
    model = load_causal_lm(str(tiny_sft_final), tokenizer=tokenizer).eval()
    for prompt in _eval_prompts(example_data):
        completion = _greedy(model, tokenizer, prompt)
        assert _writes_template(prompt, completion, tokenizer.eos_token), (prompt, completion)


def test_untrained_tiny_model_does_not_write_the_template(example_data):
    """The check above is not vacuous: the random-init base fails it."""
    tokenizer = load_tokenizer(TINY_MODEL_NAME)
    model = load_causal_lm(TINY_MODEL_NAME, tokenizer=tokenizer).eval()
    prompt = _eval_prompts(example_data)[0]
    assert not _writes_template(prompt, _greedy(model, tokenizer, prompt), tokenizer.eos_token)


# ------------------------------------------------------------------------------ LoRA and adapters


def test_lora_sft_writes_a_merged_full_model(tiny_sft_final, tiny_argv, tmp_path):
    """LoRA SFT on a full model: final/ is the adapter merged into the base, loadable as a plain LM."""
    argv = tiny_argv(
        "tiny_sft.yml",
        tmp_path,
        f"model_name={tiny_sft_final}",
        "lora.r=8",
        "training.max_steps=4",
        "training.save_steps=100",
        "data.eval_path=null",
    )
    assert main(argv) == 0

    final = tmp_path / "final"
    assert (final / "config.json").is_file()
    assert not (final / "adapter_config.json").exists(), "final/ must hold the merged model, not the adapter"
    assert json.loads((final / FINAL_MARKER).read_text())["merged"] is True

    merged = load_causal_lm(str(final)).state_dict()
    base = load_causal_lm(str(tiny_sft_final)).state_dict()
    assert merged.keys() == base.keys()  # plain causal-LM names: no peft prefixes, no lora_A/B
    # LoRA (all-linear) moved the projections; the embeddings it does not adapt are untouched
    assert torch.equal(merged["model.embed_tokens.weight"], base["model.embed_tokens.weight"])
    changed = [k for k in base if k.endswith("proj.weight") and not torch.equal(merged[k], base[k])]
    assert changed, "no projection weight changed: the adapter was not merged"


def test_adapter_only_directory_loads_merged_onto_its_base(tiny_sft_final, tmp_path):
    """A directory with just a LoRA adapter loads via load_causal_lm, merged: same logits as base+adapter."""
    from peft import LoraConfig, PeftModel, get_peft_model

    sft = str(tiny_sft_final)
    tokenizer = load_tokenizer(sft)
    batch = tokenizer(["Describe the cat near the park.\nAnswer: The cat in the park is"], return_tensors="pt")
    base = load_causal_lm(sft).eval()
    with torch.no_grad():
        base_logits = base(**batch).logits
    torch.manual_seed(0)
    # init_lora_weights=False: B is random too, so the adapter changes the outputs from the start
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)).eval()
    adapter_dir = tmp_path / "adapter"
    peft_model.save_pretrained(adapter_dir)
    assert json.loads((adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"] == sft
    assert not (adapter_dir / "config.json").exists()
    with torch.no_grad():
        expected = peft_model(**batch).logits

    loaded = load_causal_lm(str(adapter_dir)).eval()
    assert not isinstance(loaded, PeftModel), "an adapter directory must load merged into a plain model"
    with torch.no_grad():
        logits = loaded(**batch).logits
    assert not torch.allclose(expected, base_logits, atol=1e-3), "the adapter should change the logits"
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)
    assert load_tokenizer(str(adapter_dir)).eos_token == tokenizer.eos_token  # taken from the base


# ---------------------------------------------------------------------------------------- resume


@pytest.mark.slow  # a run, then a resumed run
def test_rerun_after_a_kill_resumes_from_the_last_checkpoint(
    tiny_sft_run, tiny_argv, tiny_sft_overrides, tmp_path, caplog
):
    """Same command after a kill between checkpoints: resumes at checkpoint-100 and ends where the full run did.

    The kill is simulated on a copy of the shared run: checkpoint-150 and final/ are gone, and
    metrics.jsonl holds a line logged after the last checkpoint (which the rerun must drop).
    """
    out = tmp_path / "run"
    shutil.copytree(tiny_sft_run, out)
    shutil.rmtree(out / "checkpoints" / "checkpoint-150")
    shutil.rmtree(out / "final")
    with (out / "metrics.jsonl").open("a") as handle:
        handle.write(json.dumps({"step": 105, "loss": 99.0}) + "\n")

    with caplog.at_level(logging.WARNING, logger="eulerforge_trl.pipeline.run_stage"):
        assert main(tiny_argv("tiny_sft.yml", out, *tiny_sft_overrides)) == 0
    assert any("resuming sft from" in r.getMessage() and "checkpoint-100" in r.getMessage() for r in caplog.records)

    records = read_metrics(out / "metrics.jsonl")
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == sorted(set(steps)), f"steps repeated or out of order: {steps}"
    assert steps[-1] == 150 and 99.0 not in [r["loss"] for r in records if "loss" in r]
    state = json.loads((out / "checkpoints" / "checkpoint-150" / "trainer_state.json").read_text())
    assert state["global_step"] == 150
    assert (out / "final" / FINAL_MARKER).is_file()

    # steps 101-150 replayed from the checkpoint give the uninterrupted run's loss and weights
    original = [r for r in read_metrics(tiny_sft_run / "metrics.jsonl") if "loss" in r]
    assert _loss_at(records, 150) == pytest.approx(_loss_at(original, 150), rel=1e-4)
    resumed = load_causal_lm(str(out / "final")).state_dict()
    full = load_causal_lm(str(tiny_sft_run / "final")).state_dict()
    for key in full:
        torch.testing.assert_close(resumed[key], full[key], atol=1e-5, rtol=1e-4)


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _loss_at(records: list[dict], step: int) -> float:
    return next(r["loss"] for r in records if r.get("step") == step and "loss" in r)


@pytest.mark.slow  # a run, then a resumed run
def test_a_checkpoint_that_does_not_load_is_skipped_for_the_one_before(
    tiny_sft_run, tiny_argv, tiny_sft_overrides, tmp_path, caplog
):
    """A truncated newest checkpoint must not lose the run: warn, resume from the previous one, log each step once."""
    out = tmp_path / "run"
    shutil.copytree(tiny_sft_run, out)
    shutil.rmtree(out / "final")
    weights = out / "checkpoints" / "checkpoint-150" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # cut short, as by a full disk

    with caplog.at_level(logging.WARNING):
        assert main(tiny_argv("tiny_sft.yml", out, *tiny_sft_overrides)) == 0
    messages = [r.getMessage() for r in caplog.records]
    assert any("checkpoint-150 cannot be loaded" in m and "model.safetensors" in m for m in messages), messages
    assert any("resuming sft from" in m and "checkpoint-100" in m for m in messages)
    steps = [r["step"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 150, steps
    assert (out / "final" / FINAL_MARKER).is_file()
