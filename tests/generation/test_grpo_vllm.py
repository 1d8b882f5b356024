"""GRPO with `generation.backend: vllm` on the real engine (vLLM's CPU build; `make install-vllm`), as a
GPU runs it: bf16 training weights and a bf16 engine.

What must hold: the engine gets the policy's merged weights pushed out of place, so after training
the base (adapters off: GRPO's reference, the RM adapter's base) is bit for bit a fresh load; the
engine samples the trained policy; the sampler/trainer gap is logged as `generation/logprob_gap`;
and GRPO learns. Here, beside the tiny-Llama fixtures it shares with test_vllm.py.
"""

from __future__ import annotations

import math

import pytest
import torch

import eulerforge_trl.trainers.group_policy as group_policy
from eulerforge_trl.rundir import read_metrics
from eulerforge_trl.train import main

from .test_vllm import PLEASANT

# the greedy tokens were equal here; a CPU whose bf16 kernels round otherwise may take a near-tie the
# other way: bf16 logits near 4-16 are 1/32-1/16 apart, so within two of those steps of the trainer's best
NEAR_TIE = 0.0625
# mean |log p trainer - log p engine| per sampled token, bf16 on both sides: 0.002-0.008 measured
GAP_BOUND = 0.02


def _engine_and_trainer_greedy(engine, model, prompt_ids, prompt_mask, n: int):
    """n greedy tokens per prompt from the engine, and the trainer's log-probs along them (teacher forced)."""
    import vllm

    params = vllm.SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True)
    prompts = [{"prompt_token_ids": ids[m.bool()].tolist()} for ids, m in zip(prompt_ids, prompt_mask)]
    tokens = torch.tensor([list(o.outputs[0].token_ids) for o in engine.llm.generate(prompts, params, use_tqdm=False)])
    ids = torch.cat([prompt_ids, tokens], dim=1)
    mask = torch.cat([prompt_mask, torch.ones_like(tokens)], dim=1)
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0)).logits
    logprobs = logits[:, prompt_ids.shape[1] - 1 : -1].float().log_softmax(-1)
    return tokens, logprobs


@pytest.mark.slow  # a learning run with the real engine
def test_grpo_with_vllm_in_bf16_learns_and_leaves_the_base_alone(
    tmp_path, tiny_argv, tiny_llama_sft_final, monkeypatch
):
    pytest.importorskip("vllm", reason="vLLM is not installed: make install-vllm")
    from eulerforge_trl.generation.merged import base_model, plain_name
    from eulerforge_trl.models.loading import load_causal_lm, load_tokenizer

    functions = tmp_path / "rewards.py"
    functions.write_text(PLEASANT, encoding="utf-8")
    installed = {}

    def install(trainer, preset):  # observe the trainer and its engine from outside
        installed["trainer"], installed["engine"] = trainer, grpo_vllm_install(trainer, preset)
        return installed["engine"]

    grpo_vllm_install = group_policy.install_vllm_engine
    monkeypatch.setattr(group_policy, "install_vllm_engine", install)
    steps = 20
    argv = tiny_argv(
        "tiny_grpo.yml",
        tmp_path / "run",
        f"model_name={tiny_llama_sft_final}",
        "training.reward_model.checkpoint_path=",
        f"training.reward_funcs=[{functions}:pleasant_count]",
        "training.precision=bf16",
        "generation.backend=vllm",
        "generation.vllm_dtype=bf16",
        "generation.vllm_enforce_eager=true",  # no compile: a faster start for a test
        f"training.max_steps={steps}",
        f"training.save_steps={steps}",
        "training.batch_size=16",
        "training.grpo.max_completion_length=12",
        "data.max_prompt_length=64",
        "training.lr=2e-3",
    )
    assert main(argv) == 0
    trainer, engine = installed["trainer"], installed["engine"]
    model = trainer.model
    assert trainer.use_vllm and trainer.vllm_generation.engine is engine
    assert trainer.vllm_importance_sampling_correction  # TRL corrects the sampler/trainer mismatch

    # the base (adapters off) is the SFT model as loaded, bit for bit: no merge ever wrote into it
    tokenizer = load_tokenizer(str(tiny_llama_sft_final))
    fresh = load_causal_lm(str(tiny_llama_sft_final), dtype=torch.bfloat16, tokenizer=tokenizer).state_dict()
    trained = {plain_name(k): v for k, v in base_model(model).state_dict().items() if "lora_" not in k}
    assert fresh.keys() == trained.keys()
    assert next(iter(trained.values())).dtype == torch.bfloat16
    assert [name for name in fresh if not torch.equal(fresh[name], trained[name])] == []

    # the engine samples the trained policy: its greedy tokens are the trainer's, up to bf16 near-ties
    tokenizer.padding_side = "left"
    prompts = [f"Describe the {animal} near the park.\nAnswer:" for animal in ("dog", "cat", "horse", "bird")]
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    trainer.vllm_generation.sync_weights()  # as TRL does before its next generation: the last step's update
    tokens, logprobs = _engine_and_trainer_greedy(engine, model, batch["input_ids"], batch["attention_mask"], 12)
    behind = logprobs.max(-1).values - logprobs.gather(-1, tokens[..., None])[..., 0]
    assert behind.max() <= NEAR_TIE, behind
    assert (behind == 0).all(dim=1).sum() >= len(prompts) // 2  # most rows exactly the trainer's greedy

    history = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["step"] > 0 and "reward_mean" in r]
    assert len(history) == steps
    gaps = [r["generation/logprob_gap"] for r in history]
    assert all(math.isfinite(g) and 0 < g < GAP_BOUND for g in gaps), gaps
    k = steps // 4
    first = sum(r["reward_mean"] for r in history[:k]) / k
    last = sum(r["reward_mean"] for r in history[-k:]) / k
    assert last > first + 0.15, f"reward_mean did not rise with vllm rollouts: {first:.2f} -> {last:.2f}"
