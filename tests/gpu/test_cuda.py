"""GPU paths, skipped without CUDA: a bf16 PPO run that resumes from its checkpoint on the GPU.

On a CPU these skip; run them whenever a GPU is available (`pytest tests/gpu`). Resuming used to
fail on every GPU: torch.load maps the saved CUDA RNG states onto the device, and
`torch.cuda.set_rng_state_all` accepts CPU tensors only.
"""

from __future__ import annotations

import pytest
import torch

from eulerforge_trl.rundir import read_metrics
from eulerforge_trl.train import main

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_bf16_ppo_resumes_on_cuda(tmp_path, tiny_argv, tiny_sft_final, tiny_rm_final):
    def ppo(steps: int) -> int:
        return main(
            tiny_argv(
                "tiny_ppo.yml",
                tmp_path,
                f"model_name={tiny_sft_final}",
                f"training.reward_model.checkpoint_path={tiny_rm_final}",
                f"training.max_steps={steps}",
                "training.save_steps=2",
                "training.batch_size=8",
                "training.precision=bf16",
            )
        )

    assert ppo(2) == 0
    assert ppo(4) == 0  # resumes from checkpoint-2 on the GPU
    history = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "reward_mean" in r]
    assert [r["step"] for r in history] == [1, 2, 3, 4]
    assert all(torch.isfinite(torch.tensor(r["reward_mean"])) for r in history)


def test_compiled_static_cache_rollouts_on_cuda(tmp_path, tiny_argv, tiny_sft_final, tiny_rm_final):
    """generation.compile (on by default with CUDA): PPO samples through a static, compiled KV cache;
    bucketed prompt widths keep the cache's shape, the rollouts keep their layout, the run learns nothing odd."""
    code = main(
        tiny_argv(
            "tiny_ppo.yml",
            tmp_path,
            f"model_name={tiny_sft_final}",
            f"training.reward_model.checkpoint_path={tiny_rm_final}",
            "training.max_steps=3",
            "training.batch_size=8",
            "training.precision=bf16",
        )
    )
    assert code == 0
    history = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "reward_mean" in r]
    assert len(history) == 3 and history[0]["kl_divergence"] == pytest.approx(0.0, abs=1e-2)  # bf16
    assert all(torch.isfinite(torch.tensor(r["reward_mean"])) and r["response_length"] > 0 for r in history)


def test_compiled_merged_copy_follows_in_place_refreshes_on_cuda():
    """The default `hf` engine on CUDA: a merged copy decoded through a static, compiled cache. Its
    refresh writes into the tensors the compiled step captured, so after an update the copy samples
    the updated policy (greedy tokens equal to the hooked policy's, in fp32) without recompiling."""
    from peft import LoraConfig, get_peft_model

    from eulerforge_trl.config import load_preset
    from eulerforge_trl.generation import build_sampler
    from eulerforge_trl.generation.hf import HFSampler, MergedCopySampler
    from eulerforge_trl.models.loading import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer("tiny-qwen3.5")
    tokenizer.padding_side = "left"
    torch.manual_seed(0)
    policy = get_peft_model(load_causal_lm("tiny-qwen3.5").cuda(), LoraConfig(r=4, target_modules="all-linear"))
    policy.eval()
    texts = ["Describe the cat near the park.\nAnswer:", "The dog"]
    batch = tokenizer.pad({"input_ids": [tokenizer(t)["input_ids"] for t in texts]}, return_tensors="pt").to("cuda")
    settings = dict(adapter="default", max_new_tokens=8, temperature=1e-4, stop_ids=[tokenizer.eos_token_id])
    copy = build_sampler(load_preset("presets/tiny_ppo.yml").generation, policy, tokenizer, **settings)
    assert type(copy) is MergedCopySampler and copy.compile
    hooked = HFSampler(
        policy,
        max_new_tokens=8,
        temperature=1e-4,
        stop_ids=settings["stop_ids"],
        pad_token_id=tokenizer.pad_token_id,
        compile=False,
    )

    def both():
        return copy.sample(batch["input_ids"], batch["attention_mask"]), hooked.sample(
            batch["input_ids"], batch["attention_mask"]
        )

    before = []
    for _ in range(2):  # each step: an update to the policy's LoRA, then the sync the trainer does
        with torch.no_grad():
            for name, param in policy.named_parameters():
                if "lora_" in name:
                    param.add_(torch.randn_like(param) * 0.2)
        copy.sync_weights()
        from_copy, from_policy = both()
        assert torch.equal(from_copy.input_ids, from_policy.input_ids)
        before.append(from_copy.input_ids)
    assert not torch.equal(before[0], before[1])  # the updates changed what is sampled


def test_bf16_merged_copy_keeps_the_reference_and_logs_its_gap_on_cuda():
    """bf16, the GPU default: LoRA deltas as small as a few PPO steps make (~1e-3 of the weights) round
    away in base + delta. The copy may then sample a slightly different policy, so its rollouts carry
    the copy's own log-probs (the gap PPO logs and corrects for); the training model's base, which is
    also the reference, is never written, however often the copy refreshes."""
    from peft import LoraConfig, get_peft_model

    from eulerforge_trl.generation.hf import MergedCopySampler
    from eulerforge_trl.models.loading import load_causal_lm, load_tokenizer
    from eulerforge_trl.trainers.ppo.rollout import response_forward

    tokenizer = load_tokenizer("tiny-qwen3.5")
    tokenizer.padding_side = "left"
    torch.manual_seed(0)
    base = load_causal_lm("tiny-qwen3.5", dtype=torch.bfloat16).cuda()
    policy = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", lora_dropout=0.0))
    policy.eval()
    reference = {n: p.detach().clone() for n, p in policy.named_parameters() if "lora_" not in n}
    texts = ["Describe the cat near the park.\nAnswer:", "The dog"]
    batch = tokenizer.pad({"input_ids": [tokenizer(t)["input_ids"] for t in texts]}, return_tensors="pt").to("cuda")
    sampler = MergedCopySampler(
        policy,
        adapter="default",
        max_new_tokens=16,
        temperature=1.0,
        stop_ids=[tokenizer.eos_token_id],
        pad_token_id=tokenizer.pad_token_id,
        compile=True,
    )
    gaps = []
    for _ in range(3):  # small updates, the size a few optimizer steps at lr 1e-5 make
        with torch.no_grad():
            for name, param in policy.named_parameters():
                if "lora_B" in name:
                    param.add_(torch.randn_like(param) * 1e-3)
        sampler.sync_weights()
        roll = sampler.sample(batch["input_ids"], batch["attention_mask"])
        assert roll.engine_logprobs is not None  # the copy's own log-probs of what it sampled
        with torch.no_grad():
            trainer = response_forward(policy, roll.input_ids, roll.attention_mask, roll.n_prompt, 1.0).logprobs
        mask = roll.response_mask
        gaps.append(((roll.engine_logprobs - trainer).abs() * mask).sum().item() / mask.sum().item())
    assert all(gap < 0.05 for gap in gaps), gaps  # bf16 rounding: small, but what PPO logs
    after = {n: p.detach() for n, p in policy.named_parameters() if "lora_" not in n}
    assert all(torch.equal(reference[n], after[n]) for n in reference)  # the reference is untouched


def test_bf16_ppo_on_the_compiled_merged_copy_logs_the_gap_on_cuda(tmp_path, tiny_argv, tiny_sft_final, tiny_rm_final):
    """The GPU defaults end to end (bf16, compiled decoding, the merged copy): the sampler/trainer gap
    is logged every step and stays small."""
    code = main(
        tiny_argv(
            "tiny_ppo.yml",
            tmp_path,
            f"model_name={tiny_sft_final}",
            f"training.reward_model.checkpoint_path={tiny_rm_final}",
            "training.max_steps=4",
            "training.batch_size=8",
            "training.precision=bf16",
        )
    )
    assert code == 0
    history = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "reward_mean" in r]
    assert len(history) == 4
    assert all(0 <= r["generation/logprob_gap"] < 0.05 for r in history), history
