"""`eulerforge export RUN/final --output DIR`: standalone directories that plain transformers loads.

On the shared tiny SFT and RM runs (conftest) and a 2-step PPO run on them: the exported causal LM
generates what the adapter model generates (greedy), loaded in a process where eulerforge_trl cannot
be imported; the exported RM is a stock sequence classifier whose score is `eulerforge_trl.score`'s.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch

from eulerforge_trl import cli
from eulerforge_trl.export import EXPORT_PAD_TOKEN, export_model
from eulerforge_trl.rundir import FINAL_MARKER
from eulerforge_trl.train import main

PROMPTS = ["Describe the cat.\nAnswer:", "Describe the weather.\nAnswer:", "Describe a book.\nAnswer:"]
NEW_TOKENS = 12

# generate greedily with plain transformers, in a process where importing eulerforge_trl fails
STANDALONE = """
import json, sys
sys.modules["eulerforge_trl"] = None  # `import eulerforge_trl` raises ImportError from here on
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
out = []
for prompt in json.loads(sys.argv[2]):
    ids = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        seq = model.generate(**ids, do_sample=False, max_new_tokens=int(sys.argv[3]), pad_token_id=tokenizer.pad_token_id)
    out.append(seq[0, ids["input_ids"].shape[1]:].tolist())
print(json.dumps(out))
"""


def greedy(model, tokenizer, prompts=PROMPTS) -> list[list[int]]:
    out = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            seq = model.generate(**ids, do_sample=False, max_new_tokens=NEW_TOKENS, pad_token_id=tokenizer.pad_token_id)
        out.append(seq[0, ids["input_ids"].shape[1] :].tolist())
    return out


def standalone_greedy(directory) -> list[list[int]]:
    result = subprocess.run(
        [sys.executable, "-c", STANDALONE, str(directory), json.dumps(PROMPTS), str(NEW_TOKENS)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def tiny_ppo_final(tmp_path_factory, tiny_argv, tiny_sft_final, tiny_rm_final):
    """final/ of a 2-step PPO run on the shared SFT and RM: the policy's LoRA adapter."""
    out = tmp_path_factory.mktemp("export_ppo")
    argv = tiny_argv(
        "tiny_ppo.yml",
        out,
        f"model_name={tiny_sft_final}",
        f"training.reward_model.checkpoint_path={tiny_rm_final}",
        "training.max_steps=2",
        "training.batch_size=8",
        "training.ppo.max_gen_len=8",
        "training.ppo.eval_prompts=8",
        "training.lr=1e-2",  # a LoRA far enough from zero that generations differ from the SFT model's
    )
    assert main(argv) == 0
    return out / "final"


@pytest.mark.slow  # a 2-step PPO run and a fresh interpreter: ~45 s on 2 cores
def test_ppo_export_generates_as_the_adapter_model_without_eulerforge(tmp_path, tiny_ppo_final, tiny_sft_final):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from eulerforge_trl.models.loading import load_tokenizer

    out = tmp_path / "ppo_model"
    assert cli.main(["export", str(tiny_ppo_final), "--output", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert "auto_map" not in config and not list(out.glob("*.py")) and not list(out.glob("adapter_*"))

    tokenizer = load_tokenizer(str(tiny_ppo_final))
    adapter_dir = tiny_ppo_final / "policy" if (tiny_ppo_final / "policy").is_dir() else tiny_ppo_final
    base = AutoModelForCausalLM.from_pretrained(tiny_sft_final).eval()
    with_adapter = PeftModel.from_pretrained(base, adapter_dir).eval()  # unmerged: the adapter on its base
    expected = greedy(with_adapter, tokenizer)
    with with_adapter.disable_adapter():
        sft_only = greedy(with_adapter, tokenizer)
    assert standalone_greedy(out) == expected
    assert expected != sft_only, "the PPO adapter should change some greedy generation (else the test proves little)"


def test_sft_export_is_the_sft_model(tmp_path, tiny_sft_final):
    from transformers import AutoModelForCausalLM

    result = export_model(tiny_sft_final, tmp_path / "sft_model")
    assert (result.stage, result.model_class) == ("sft", "AutoModelForCausalLM")
    exported = AutoModelForCausalLM.from_pretrained(result.output_dir)
    original = AutoModelForCausalLM.from_pretrained(tiny_sft_final)
    for (name, a), (_, b) in zip(exported.state_dict().items(), original.state_dict().items()):
        assert torch.equal(a, b), name
    assert (result.output_dir / "generation_config.json").is_file()
    assert (result.output_dir / "tokenizer.json").is_file()


def _rm_inputs(tokenizer, prompts, responses):
    # rendered as the RM was trained on plain text: prompt + response + EOS, right-padded
    texts = [p + r + tokenizer.eos_token for p, r in zip(prompts, responses)]
    return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)


def _preference_rows(example_data, n=12):
    rows = [json.loads(line) for line in (example_data / "preference_eval.jsonl").read_text().splitlines()[:n]]
    prompts = [r["prompt"] for r in rows] * 2
    responses = [r["chosen"] for r in rows] + [r["rejected"] for r in rows]
    return prompts, responses


def _check_rm_export(rm_final, out, example_data) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from eulerforge_trl import load_reward_model, score

    result = export_model(rm_final, out)
    assert result.model_class == "AutoModelForSequenceClassification"
    prompts, responses = _preference_rows(example_data)
    scorer, tokenizer = load_reward_model(str(rm_final))
    ours = torch.tensor(score(scorer, tokenizer, prompts, responses))

    classifier = AutoModelForSequenceClassification.from_pretrained(out).eval()
    exported_tokenizer = AutoTokenizer.from_pretrained(out)
    assert classifier.config.num_labels == 1
    assert classifier.config.pad_token_id == exported_tokenizer.pad_token_id != exported_tokenizer.eos_token_id
    batch = _rm_inputs(exported_tokenizer, prompts, responses)
    real = batch["input_ids"][batch["attention_mask"].bool()]
    assert not (real == classifier.config.pad_token_id).any(), "the pad token must never be a real token"
    with torch.no_grad():
        theirs = classifier(**batch).logits[:, 0]
    assert torch.allclose(theirs, ours, atol=1e-4), (theirs - ours).abs().max()
    assert ours.std() > 0.1  # scores that differ across inputs: the comparison means something


def test_rm_export_scores_as_eulerforge_score(tmp_path, tiny_rm_final, example_data):
    _check_rm_export(tiny_rm_final, tmp_path / "rm_model", example_data)


def test_rm_export_with_a_tokenizer_that_pads_with_eos_gets_its_own_pad(tmp_path, tiny_rm_final, example_data):
    """pad == EOS (SmolLM2, most Llama/Qwen tokenizers): the stock classifier would skip the final EOS."""
    from eulerforge_trl.models.loading import load_tokenizer

    rm = tmp_path / "rm_pad_eos"
    shutil.copytree(tiny_rm_final, rm)
    tokenizer = load_tokenizer(str(tiny_rm_final))
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.save_pretrained(rm)
    _check_rm_export(rm, tmp_path / "rm_model", example_data)
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(tmp_path / "rm_model").pad_token == EXPORT_PAD_TOKEN


def _export_error(capsys, argv) -> str:
    code = cli.main(["export", *argv])
    captured = capsys.readouterr()
    assert code == 2 and "Traceback" not in captured.err, captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    return lines[0]


def test_bad_inputs_are_one_line_and_exit_2(tmp_path, tiny_sft_final, capsys):
    assert "no such directory" in _export_error(capsys, [str(tmp_path / "nope"), "--output", str(tmp_path / "o")])
    message = _export_error(capsys, [str(tmp_path), "--output", str(tmp_path / "o")])
    assert f"RUN/final {tmp_path}: not a stage's final/ directory (no {FINAL_MARKER}" in message
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    message = _export_error(capsys, [str(tiny_sft_final), "--output", str(taken)])
    assert "--output" in message and "not an empty directory" in message
    assert (taken / "keep.txt").read_text() == "mine"
    inside = tiny_sft_final / "export"
    assert "outside RUN/final" in _export_error(capsys, [str(tiny_sft_final), "--output", str(inside)])
    assert not inside.exists()
