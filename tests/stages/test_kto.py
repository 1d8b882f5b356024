"""KTO end to end on the tiny model: unpaired labelled rows, a LoRA adapter, the reference = adapters off.

What must hold: the rows {prompt, completion, label} are read as TRL's unpaired preference format
(message lists and ShareGPT too, a label that is not a bool refused naming the field); TRL's trainer
gets a PeftModel with one adapter and no reference copy, the base weights never change while the
adapter learns (the desirable answers' log-ratio rises above the undesirable ones'), and `final/`
is the adapter merged into the base; what TRL would reject with a bare ValueError is one line.
"""

from __future__ import annotations

import json

import pytest
import torch

from eulerforge_trl.cli import pipeline_main
from eulerforge_trl.config import load_preset
from eulerforge_trl.data.jsonl import read_rows
from eulerforge_trl.errors import DataError, PresetError
from eulerforge_trl.rundir import FINAL_MARKER, read_metrics
from eulerforge_trl.train import main

SHORT = ("training.max_steps=8", "training.save_steps=8", "training.batch_size=8", "training.logging_steps=1")


def _write(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_unpaired_rows_in_every_form_are_prompt_completion_label(tmp_path):
    chat = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    rows = [
        {"prompt": "p", "completion": " c", "label": True, "source": "x"},
        {"prompt": "p", "response": " r", "label": False},  # our SFT spelling of the completion
    ]
    assert read_rows(_write(tmp_path / "a.jsonl", rows), "unpaired_preference") == [
        {"prompt": "p", "completion": " c", "label": True},
        {"prompt": "p", "completion": " r", "label": False},
    ]
    expected = [{"prompt": chat[:1], "completion": chat[1:], "label": False}]
    assert read_rows(_write(tmp_path / "m.jsonl", [{"messages": chat, "label": False}]), "unpaired_preference") == (
        expected
    )
    sharegpt = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}], "label": False}
    assert read_rows(_write(tmp_path / "s.jsonl", [sharegpt]), "unpaired_preference") == expected
    alpaca = {"instruction": "q", "output": "a", "label": False}
    assert read_rows(_write(tmp_path / "al.jsonl", [alpaca]), "unpaired_preference") == expected


def test_a_label_that_is_not_true_or_false_is_one_line(tmp_path, tiny_argv, capsys):
    path = _write(tmp_path / "bad.jsonl", [{"prompt": "p", "completion": " c", "label": "yes"}])
    with pytest.raises(DataError, match=r"bad.jsonl:1: field 'label' must be true .* got 'yes'"):
        read_rows(path, "unpaired_preference")
    with pytest.raises(DataError, match=r"missing field 'label'"):
        read_rows(_write(tmp_path / "none.jsonl", [{"prompt": "p", "completion": " c"}]), "unpaired_preference")
    argv = tiny_argv("tiny_kto.yml", tmp_path / "out", f"data.path={path}", "data.eval_path=null")
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith(("error", "Traceback"))]
    assert len(err) == 1 and "field 'label' must be true" in err[0], err


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (["training.batch_size=1"], "KTO estimates its KL term from the other rows of a batch"),
        (["training.kto.train_sampling_strategy=random"], "training.kto.train_sampling_strategy (random)"),
        (["lora.target_modules=[q_proj,lm_head]"], "lora.target_modules includes lm_head, which KTO cannot train"),
        (["training.kto.beta=0"], "training.kto.beta (0"),
        (["data.task=preference"], "data.task (preference) does not fit training.type=kto"),
    ],
)
def test_what_trl_would_reject_is_refused_at_load(overrides, says):
    with pytest.raises(PresetError, match=None) as err:
        load_preset("tiny_kto.yml", overrides)
    assert says in str(err.value)


def test_batch_size_1_passes_with_a_loss_that_estimates_no_kl():
    load_preset("tiny_kto.yml", ["training.batch_size=1", "training.kto.loss_type=apo_zero_unpaired"])


def test_kto_trains_the_adapter_against_the_untouched_base(tmp_path, tiny_argv):
    """Capture the trainer TRL builds: no ref_model, one adapter, base weights unchanged; the loss falls."""
    from trl import KTOTrainer

    from eulerforge_trl.models.loading import load_causal_lm, load_tokenizer

    seen = {}
    original_train = KTOTrainer.train

    def spy(self, *args, **kwargs):
        model = self.model
        seen["ref_model"] = self.ref_model
        seen["adapters"] = set(model.peft_config)
        seen["base_before"] = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
        seen["lora_before"] = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
        seen["trainable"] = {n for n, p in model.named_parameters() if p.requires_grad}
        result = original_train(self, *args, **kwargs)
        seen["base_after"] = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
        seen["lora_after"] = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
        return result

    KTOTrainer.train = spy
    try:
        assert main(tiny_argv("tiny_kto.yml", tmp_path, *SHORT)) == 0
    finally:
        KTOTrainer.train = original_train
    assert seen["ref_model"] is None and seen["adapters"] == {"default"}  # the reference: adapters disabled
    assert seen["trainable"] and all("lora_" in n for n in seen["trainable"])
    for name, before in seen["base_before"].items():
        torch.testing.assert_close(seen["base_after"][name], before, rtol=0, atol=0)
    assert any(not torch.equal(seen["lora_after"][n], b) for n, b in seen["lora_before"].items())

    history = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "loss" in r and "train_runtime" not in r]
    assert [r["step"] for r in history] == list(range(1, 9))
    assert history[0]["loss"] == pytest.approx(0.5, abs=1e-3)  # policy == reference: 1 - sigmoid(0)
    assert history[-1]["loss"] < history[0]["loss"] - 0.005
    assert history[-1]["rewards/margins"] > 0  # desirable answers rose above the undesirable ones
    evals = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "eval_rewards/margins" in r]
    assert evals and evals[-1]["eval_rewards/margins"] > 0  # on the held-out rows too

    final = tmp_path / "final"
    assert json.loads((final / FINAL_MARKER).read_text())["stage"] == "kto"
    assert (final / "model.safetensors").is_file() and not (final / "adapter_config.json").exists()  # merged
    assert (tmp_path / "trl_config.json").is_file()
    tokenizer = load_tokenizer(str(final))
    ids = tokenizer(["Describe the cat near the park.\nAnswer:"], return_tensors="pt").input_ids
    with torch.no_grad():
        trained = load_causal_lm(str(final), tokenizer=tokenizer)(ids).logits
        base = load_causal_lm("tiny-qwen3.5", tokenizer=tokenizer)(ids).logits
    assert not torch.allclose(trained, base)


@pytest.mark.slow  # two stages through the CLI
def test_sft_then_kto_pipeline(tmp_path, repo, monkeypatch, capsys):
    monkeypatch.chdir(repo)  # the presets name their data relative to the repository root
    out = tmp_path / "out"
    sets = ["sft.training.max_steps=4", "sft.training.report_to=[]", "kto.training.report_to=[]"]
    sets += [f"kto.{item}" for item in (*SHORT[:2], "training.batch_size=4")]
    argv = ["tiny_kto_pipeline.yml", "--output-dir", str(out)]
    for item in sets:
        argv += ["--set", item]
    assert pipeline_main(argv) == 0
    marker = json.loads((out / "02_kto" / "final" / FINAL_MARKER).read_text())
    assert marker["stage"] == "kto" and marker["base"] == str(out / "01_sft" / "final")
    assert "kto: loss" in capsys.readouterr().out  # the pipeline's summary line of the stage
