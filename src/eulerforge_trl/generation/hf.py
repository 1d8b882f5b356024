"""The `hf` rollout engine: transformers' `generate` on the training model itself (the policy LoRA active).

With `compile` (the default on CUDA) it decodes with a static KV cache, which transformers compiles
with CUDA graphs: eager decoding is launch-bound on a GPU (each token ~70 ms on an H200 for
SmolLM2 + LoRA), the compiled step several times faster. transformers compiles `generate` only on
accelerators unless the `CompileConfig` allows every device: `compile: true` set explicitly does
(inductor on a CPU, so the GPU configuration runs in the tests too). It never compiles a
bitsandbytes-quantized model, so there compile is off. A static cache recompiles when its shape
changes, so prompts are left-padded to a bucket of `PROMPT_BUCKET` columns (the extra columns are
masked, and removed again from the rollout) and the batch size stays the same.

With `merged_copy` (`MergedCopySampler`) it samples from a plain copy of the model holding the
policy's merged weights (`merged.MergedCopy`): no LoRA hooks while decoding, which made eager
decoding 2.5x slower on an H200, at the memory of the weights LoRA touches. The copy is not the
trained policy to the last bit (in bf16, base + delta rounds small deltas away), so it returns the
log-prob of each token it sampled: PPO logs the gap to its own and corrects for it.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from .merged import MergedCopy, base_model
from .rollout import Rollout, build_rollout

PROMPT_BUCKET = 64


def compiles(model, compile: bool | None) -> bool:
    """Whether `generate` on `model` runs a compiled decode step: null = on with CUDA; never on a
    quantized model transformers will not compile (bitsandbytes)."""
    base = base_model(model)
    quantizer = getattr(base, "hf_quantizer", None)
    if quantizer is not None and not getattr(quantizer, "is_compileable", False):
        return False
    return next(base.parameters()).device.type == "cuda" if compile is None else compile


def compile_config(model):
    """The `CompileConfig` for `generate`: transformers' own on CUDA; elsewhere one that lets it compile
    on any device (its private `_compile_all_devices`), in inductor's default mode (CUDA graphs,
    `reduce-overhead`, are CUDA's)."""
    if next(base_model(model).parameters()).device.type == "cuda":
        return None
    from transformers import CompileConfig

    config = CompileConfig(mode="default")
    config._compile_all_devices = True
    return config


class SampledLogprobs(LogitsProcessor):
    """Records log softmax(scores / temperature) of each token `generate` samples, one step behind (a
    step's scores are seen before its token is drawn), holding one step's [B, V] at a time."""

    def __init__(self, temperature: float):
        self.temperature, self.steps, self.last = temperature, [], None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self._take(input_ids[:, -1])
        self.last = torch.log_softmax(scores.float() / self.temperature, dim=-1)
        return scores

    def _take(self, tokens: torch.Tensor) -> None:
        if self.last is not None:
            self.steps.append(self.last.gather(1, tokens[:, None]).squeeze(1))
            self.last = None

    def result(self, response: torch.Tensor) -> torch.Tensor:
        """[B, R] log-probs of the R response tokens `generate` gave back."""
        self._take(response[:, -1])
        return torch.stack(self.steps, dim=1)[:, : response.shape[1]]


class HFSampler:
    """Pure sampling (no top-k/top-p) from the model's active adapter, truncated after the first stop token."""

    name = "hf"
    own_weights = False  # samples the training model itself (a sharded one must be gathered for it)
    records_logprobs = False  # its tokens come from the trainer's own weights: nothing to compare

    def __init__(self, model, *, max_new_tokens, temperature, stop_ids, pad_token_id, synced_gpus=False, compile=None):
        self.model, self.max_new_tokens, self.temperature = model, max_new_tokens, temperature
        self.stop_ids, self.pad_token_id, self.synced_gpus = list(stop_ids), pad_token_id, synced_gpus
        self.compile = compiles(model, compile)
        self.compile_config = compile_config(model) if self.compile else None

    @torch.no_grad()
    def sample(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> Rollout:
        """[B, P] left-padded prompts -> a `Rollout`.

        Runs in eval mode: with gradient checkpointing on, train-mode `generate` silently drops the
        KV cache and runs about twice as slowly. The caller's train/eval mode is restored.
        """
        was_training = self.model.training
        self.model.eval()
        extra = (-prompt_ids.shape[1]) % PROMPT_BUCKET if self.compile else 0
        ids, mask = _left_pad(prompt_ids, prompt_mask, extra, self.pad_token_id)
        recorder = SampledLogprobs(self.temperature) if self.records_logprobs and self.temperature > 0 else None
        compiled = {"cache_implementation": "static", "compile_config": self.compile_config} if self.compile else {}
        try:
            sequences = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=self.max_new_tokens,
                do_sample=self.temperature > 0,  # 0: greedy (eulerforge evaluate --temperature 0)
                temperature=self.temperature or None,  # greedy takes no sampling flags (transformers warns)
                top_k=0 if self.temperature else None,
                top_p=1.0,
                eos_token_id=self.stop_ids,
                pad_token_id=self.pad_token_id,
                use_cache=True,
                synced_gpus=self.synced_gpus,
                logits_processor=LogitsProcessorList([recorder] if recorder else []),
                **compiled,
            )
        finally:
            self.model.train(was_training)
        response = sequences[:, ids.shape[1] :]
        logprobs = recorder.result(response) if recorder else None
        return build_rollout(prompt_ids, prompt_mask, response, self.stop_ids, self.pad_token_id, logprobs)

    def sync_weights(self) -> None:
        """Nothing to do: this engine samples from the training weights themselves."""

    def close(self) -> None:
        """Nothing to free."""


class MergedCopySampler(HFSampler):
    """`HFSampler` on a `MergedCopy` of the policy (`adapter` merged in), refreshed after every optimizer
    step; its rollouts carry the copy's log-prob of each sampled token (`Rollout.engine_logprobs`)."""

    own_weights = True
    records_logprobs = True

    def __init__(self, model, *, adapter: str, **settings):
        self.copy = MergedCopy(model, adapter)
        # the copy holds whole weights and no collective: processes need not decode in step
        super().__init__(self.copy.model, **{**settings, "synced_gpus": False})

    def sync_weights(self) -> None:
        """The policy's current LoRA weights merged into the copy, in place."""
        self.copy.refresh()

    def close(self) -> None:
        """Drop the copy (its merged weights are the only memory it holds of its own)."""
        self.copy = self.model = None


def _left_pad(ids: torch.Tensor, mask: torch.Tensor, extra: int, pad_token_id: int):
    if not extra:
        return ids, mask
    return (
        torch.nn.functional.pad(ids, (extra, 0), value=pad_token_id),
        torch.nn.functional.pad(mask, (extra, 0), value=0),
    )
