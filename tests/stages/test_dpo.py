"""DPO end to end on the tiny model, through `main([...])`: the preference margin grows, the
reward accuracy ends high, and `final/` is the trained policy (the adapter merged), not the SFT model.
"""

import json
from pathlib import Path

import pytest
import torch

from eulerforge_trl.models.loading import load_causal_lm, load_tokenizer
from eulerforge_trl.rundir import read_metrics
from eulerforge_trl.train import main

DPO_STEPS = 60
BETA = 0.1  # presets/tiny_dpo.yml


@pytest.fixture(scope="module")
def dpo_run(tiny_sft_final, tiny_argv, tmp_path_factory) -> Path:
    """Output directory of a tiny DPO run on the shared tiny SFT model (tests/conftest.py)."""
    out = tmp_path_factory.mktemp("dpo")
    argv = tiny_argv(
        "tiny_dpo.yml",
        out,
        f"model_name={tiny_sft_final}",
        f"training.max_steps={DPO_STEPS}",
        f"training.save_steps={DPO_STEPS}",
    )
    assert main(argv) == 0
    return out


@pytest.mark.slow  # a learning run
def test_margin_rises_and_accuracy_ends_high(dpo_run):
    history = read_metrics(dpo_run / "metrics.jsonl")
    train = [r for r in history if "rewards/margins" in r]
    evals = [r for r in history if "eval_rewards/margins" in r]
    assert train[0]["step"] == 1 and train[-1]["step"] == DPO_STEPS
    # Step 1: the fresh adapter is zero (LoRA B = 0), so policy == reference and the margin is 0.
    assert abs(train[0]["rewards/margins"]) < 1e-4
    assert train[-1]["rewards/margins"] > train[0]["rewards/margins"] + 1.0, [r["rewards/margins"] for r in train]
    assert train[-1]["loss"] < 0.4 < train[0]["loss"]  # ln 2 = 0.693 at step 1
    assert train[-1]["rewards/accuracies"] >= 0.9
    assert evals[-1]["eval_rewards/accuracies"] >= 0.8  # form pairs differ in few tokens: DPO lags the RM here
    assert evals[-1]["eval_rewards/margins"] > 1.0


@pytest.mark.slow  # a learning run
def test_final_is_the_merged_policy(dpo_run, tiny_sft_final, example_data):
    final = dpo_run / "final"
    marker = json.loads((final / "eulerforge_final.json").read_text())
    assert marker["stage"] == "dpo" and marker["merged"] is True
    assert not (final / "adapter_config.json").exists()

    tokenizer = load_tokenizer(str(final))
    policy = load_causal_lm(str(final), tokenizer=tokenizer).eval()
    reference = load_causal_lm(str(tiny_sft_final), tokenizer=tokenizer).eval()
    rows = [json.loads(line) for line in (example_data / "preference_eval.jsonl").read_text().splitlines()[:32]]
    prompts = [r["prompt"] for r in rows]

    def implied_reward(completions: list[str]) -> torch.Tensor:
        # beta * (log pi(y|x) - log pi_ref(y|x)), the reward DPO's margin is made of  [rows]
        return BETA * (
            _completion_logps(policy, tokenizer, prompts, completions)
            - _completion_logps(reference, tokenizer, prompts, completions)
        )

    margin = implied_reward([r["chosen"] for r in rows]) - implied_reward([r["rejected"] for r in rows])
    assert (margin > 0).float().mean() >= 0.9, margin
    assert margin.mean() > 1.0


@torch.no_grad()
def _completion_logps(model, tokenizer, prompts: list[str], completions: list[str]) -> torch.Tensor:
    """Summed log-probability of each `completion + EOS` after its prompt, as DPO scores it.  [rows]"""
    prompt_lens, sequences = [], []
    for prompt, completion in zip(prompts, completions):
        prompt_lens.append(len(tokenizer(prompt)["input_ids"]))
        sequences.append(torch.tensor(tokenizer(prompt + completion + tokenizer.eos_token)["input_ids"]))
    ids = torch.nn.utils.rnn.pad_sequence(sequences, batch_first=True, padding_value=tokenizer.pad_token_id)
    mask = torch.zeros_like(ids)
    for i, seq in enumerate(sequences):
        mask[i, : len(seq)] = 1
    logps = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits[:, :-1].float(), dim=-1)
    token_logps = logps.gather(-1, ids[:, 1:, None]).squeeze(-1)  # [rows, T-1]: log p(token t+1 | <= t)
    completion = mask[:, 1:].clone()
    for i, n in enumerate(prompt_lens):
        completion[i, : n - 1] = 0  # targets 1..n-1 are prompt tokens
    return (token_logps * completion).sum(-1)
