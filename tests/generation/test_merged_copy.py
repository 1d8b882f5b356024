"""`generation.merged_copy`: the hf engine sampling from a plain copy of the model with the policy's
LoRA merged in (no LoRA hooks while decoding), refreshed after every optimizer step."""

from __future__ import annotations

import pytest
import torch

from eulerforge_trl.config import load_preset
from eulerforge_trl.errors import PresetError
from eulerforge_trl.generation import build_sampler
from eulerforge_trl.generation.hf import HFSampler, MergedCopySampler
from eulerforge_trl.models.loading import load_causal_lm, load_tokenizer
from eulerforge_trl.rundir import RunDir, read_metrics


def lora_policy(seed: int = 0):
    """The tiny Qwen3.5 (Gated DeltaNet and attention layers) with an all-linear LoRA whose B is not zero."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    model = get_peft_model(load_causal_lm("tiny-qwen3.5"), LoraConfig(r=4, target_modules="all-linear"))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.05)
    return model.eval()


def prompts(tokenizer):
    tokenizer.padding_side = "left"
    texts = ["Describe the cat near the park.\nAnswer:", "The dog"]
    batch = tokenizer.pad({"input_ids": [tokenizer(t)["input_ids"] for t in texts]}, return_tensors="pt")
    return batch["input_ids"], batch["attention_mask"]


def test_the_copy_samples_the_lora_policy_follows_its_updates_and_leaves_the_reference_alone():
    tokenizer = load_tokenizer("tiny-qwen3.5")
    policy = lora_policy()
    ids, mask = prompts(tokenizer)
    with torch.no_grad(), policy.disable_adapter():
        reference = policy(input_ids=ids, attention_mask=mask).logits
    settings = dict(max_new_tokens=8, temperature=1e-4, stop_ids=[tokenizer.eos_token_id], pad_token_id=0)
    copy = MergedCopySampler(policy, adapter="default", **settings)
    hooked = HFSampler(policy, **settings)
    merged = copy.copy.model

    def logits(model):
        with torch.no_grad():
            return model(input_ids=ids, attention_mask=mask).logits

    assert not any("lora" in name for name, _ in merged.named_modules())  # a plain transformers model
    assert torch.allclose(logits(merged), logits(policy), atol=1e-5)
    assert torch.equal(copy.sample(ids, mask).input_ids, hooked.sample(ids, mask).input_ids)  # greedy

    # what LoRA does not touch is the training model's own memory; what it touches is the copy's
    own = {p.data_ptr() for p in policy.parameters()}
    shared = [name for name, p in merged.named_parameters() if p.data_ptr() in own]
    assert "model.embed_tokens.weight" in shared and not any(name.endswith("proj.weight") for name in shared)

    with torch.no_grad():  # an optimizer step on the policy's LoRA
        for name, param in policy.named_parameters():
            if "lora_" in name:
                param.add_(torch.randn_like(param) * 0.05)
    assert not torch.allclose(logits(merged), logits(policy), atol=1e-3)  # stale until synced
    copy.sync_weights()
    assert torch.allclose(logits(merged), logits(policy), atol=1e-5)
    with torch.no_grad(), policy.disable_adapter():
        assert torch.equal(policy(input_ids=ids, attention_mask=mask).logits, reference)  # base untouched
    copy.close()


def test_null_resolves_to_the_plain_engine_off_cuda_and_true_builds_the_copy():
    tokenizer = load_tokenizer("tiny-qwen3.5")
    policy = lora_policy()
    settings = dict(adapter="default", max_new_tokens=4, temperature=1.0, stop_ids=[tokenizer.eos_token_id])

    def preset(*overrides):
        return load_preset("presets/tiny_ppo.yml", list(overrides)).generation

    default = build_sampler(preset(), policy, tokenizer, **settings)
    assert type(default) is (MergedCopySampler if torch.cuda.is_available() else HFSampler)
    assert (
        type(build_sampler(preset("generation.merged_copy=true"), policy, tokenizer, **settings)) is MergedCopySampler
    )
    assert type(build_sampler(preset("generation.merged_copy=false"), policy, tokenizer, **settings)) is HFSampler
    # `eulerforge evaluate` samples models as loaded (no adapter to merge): always the plain engine
    no_adapter = {**settings, "adapter": None}
    assert type(build_sampler(preset("generation.merged_copy=true"), policy, tokenizer, **no_adapter)) is HFSampler


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["generation.merged_copy=true", "generation.backend=vllm"], "is for backend hf"),
        (["generation.merged_copy=true", "quantization=4bit"], "quantization=4bit"),
    ],
)
def test_merged_copy_is_refused_where_it_cannot_be_honoured(overrides, message):
    with pytest.raises(PresetError, match=message):
        load_preset("presets/tiny_ppo.yml", overrides)


def test_grpo_refuses_merged_copy():
    from eulerforge_trl.trainers.grpo_generation import grpo_generation_args

    with pytest.raises(PresetError, match="generation.merged_copy"):
        grpo_generation_args(load_preset("presets/tiny_grpo.yml", ["generation.merged_copy=true"]))


def test_ppo_on_the_merged_copy_trains_as_on_the_hooked_policy(tmp_path, tiny_sft_final, tiny_rm_final):
    """Same seed, same steps: the copy samples the tokens the hooked policy samples (fp32, logits equal to
    ~1e-6), so the rewards and losses match step for step: the copy follows every update."""
    from eulerforge_trl.trainers.ppo.trainer import PPOTrainer

    history = {}
    for merged in ("false", "true"):
        out = tmp_path / merged
        preset = load_preset(
            "presets/tiny_ppo.yml",
            [
                f"model_name={tiny_sft_final}",
                f"training.reward_model.checkpoint_path={tiny_rm_final}",
                f"generation.merged_copy={merged}",
                "training.max_steps=3",
                "training.batch_size=4",
                "training.report_to=[]",
                "training.ppo.max_gen_len=8",
                "training.ppo.score_norm_samples=8",
            ],
            output_dir=str(out),
        )
        run = RunDir(out)
        run.root.mkdir(parents=True)
        trainer = PPOTrainer(preset, run)
        assert trainer.sampler.own_weights is (merged == "true")
        try:
            trainer.train()
        finally:
            trainer.sampler.close()
        history[merged] = [m for m in read_metrics(run.metrics) if m.get("step", 0) > 0 and "reward_mean" in m]
    plain, copy = history["false"], history["true"]
    assert [m["step"] for m in copy] == [m["step"] for m in plain] == [1, 2, 3]
    for a, b in zip(plain, copy):
        for key in ("reward_mean", "kl_divergence", "ppo_loss", "value_loss", "response_length"):
            assert b[key] == pytest.approx(a[key], rel=1e-3, abs=1e-4), key
        assert "time_weight_sync" in b  # the copy's refresh, timed as vllm's push is


def tied_lora_policy(target_modules, dtype=torch.float32):
    """The tiny Qwen3.5 (its LM head tied to the embedding) with a LoRA on `target_modules`, every
    LoRA weight non-zero (peft starts an embedding's A at zero, a linear layer's B)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(load_causal_lm("tiny-qwen3.5", dtype=dtype), LoraConfig(r=4, target_modules=target_modules))
    assert model.get_base_model().config.tie_word_embeddings
    step_lora(model, std=0.05, init=True)
    return model.eval()


@torch.no_grad()
def step_lora(model, std: float, init: bool = False) -> None:
    """An optimizer step's worth of change to every LoRA weight of the model."""
    for name, param in model.named_parameters():
        if "lora_" in name:
            param.copy_(torch.randn_like(param) * std) if init else param.add_(torch.randn_like(param) * std)


@pytest.mark.parametrize(
    "targets", [["lm_head"], ["embed_tokens"], ["lm_head", "embed_tokens", "q_proj"]], ids=["head", "embed", "both"]
)
def test_lora_on_a_tied_head_or_the_embedding_is_merged_and_never_moves_the_reference(targets):
    """The copy unties its head (base + the head's delta) from its embedding (base + the embedding's delta):
    its logits are the hooked policy's after every refresh, and the training model's embedding, which is
    also the reference's head, stays bit for bit what it was."""
    from eulerforge_trl.generation.merged import MergedCopy, merged_weights

    tokenizer = load_tokenizer("tiny-qwen3.5")
    policy = tied_lora_policy(targets)
    ids, mask = prompts(tokenizer)
    embedding = policy.get_base_model().get_input_embeddings()
    base_embedding = (embedding.get_base_layer() if hasattr(embedding, "get_base_layer") else embedding).weight
    snapshot = base_embedding.detach().clone()
    with torch.no_grad(), policy.disable_adapter():
        reference = policy(input_ids=ids, attention_mask=mask).logits

    def logits(model):
        with torch.no_grad():
            return model(input_ids=ids, attention_mask=mask).logits

    copy = MergedCopy(policy, "default")
    for refresh in range(3):
        if refresh:
            step_lora(policy, std=0.05)
            copy.refresh()
        assert not torch.allclose(logits(policy), reference, atol=1e-3)  # the LoRA matters
        assert torch.allclose(logits(copy.model), logits(policy), atol=1e-5), refresh
        assert torch.equal(base_embedding, snapshot), refresh
        with torch.no_grad(), policy.disable_adapter():
            assert torch.equal(policy(input_ids=ids, attention_mask=mask).logits, reference), refresh
    assert not copy.model.config.tie_word_embeddings
    assert "lm_head.weight" in merged_weights(policy, "default")  # whoever loads them (vllm) unties its head


def test_the_copy_returns_the_log_prob_of_each_token_it_sampled():
    """`Rollout.engine_logprobs`: log softmax(logits / temperature) at the sampled token, as the trainer
    computes it on its own weights (fp32: equal to rounding; bf16: the gap PPO logs and corrects)."""
    from eulerforge_trl.trainers.ppo.rollout import response_forward

    tokenizer = load_tokenizer("tiny-qwen3.5")
    ids, mask = prompts(tokenizer)
    settings = dict(max_new_tokens=6, temperature=0.7, stop_ids=[tokenizer.eos_token_id], pad_token_id=0)
    gaps = {}
    for dtype in (torch.float32, torch.bfloat16):
        policy = tied_lora_policy("all-linear", dtype=dtype)
        sampler = MergedCopySampler(policy, adapter="default", **settings)
        roll = sampler.sample(ids, mask)
        assert HFSampler(policy, **settings).sample(ids, mask).engine_logprobs is None  # the policy itself
        with torch.no_grad():
            trainer = response_forward(policy, roll.input_ids, roll.attention_mask, roll.n_prompt, 0.7).logprobs
        assert roll.engine_logprobs.shape == trainer.shape
        assert torch.equal(roll.engine_logprobs == 0, ~roll.response_mask)  # 0 on padding only
        gaps[dtype] = (roll.engine_logprobs - trainer).abs()[roll.response_mask].max().item()
    assert gaps[torch.float32] < 1e-5
    assert gaps[torch.bfloat16] < 0.1


def test_a_merge_for_saving_is_peft_merge_and_leaves_a_kept_model_alone():
    """`merged_model(keep=True)` (PPO/GRPO's final/merged) and `merged_into` (a quantized model's adapter
    into its full-precision base) give peft's own merge, weight for weight, without touching the policy."""
    import copy as copying

    from eulerforge_trl.generation.merged import merged_into, merged_model

    policy = lora_policy()
    before = {name: p.detach().clone() for name, p in policy.named_parameters()}
    kept = merged_model(policy, "default", keep=True).state_dict()
    into = merged_into(load_causal_lm("tiny-qwen3.5"), policy, "default").state_dict()
    for name, p in policy.named_parameters():
        assert torch.equal(p, before[name]), name
    expected = copying.deepcopy(policy).merge_and_unload().state_dict()
    assert kept.keys() == into.keys() == expected.keys()
    for name, weight in expected.items():
        assert torch.equal(kept[name], weight) and torch.equal(into[name], weight), name
