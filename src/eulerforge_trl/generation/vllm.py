"""The `vllm` rollout engine: vLLM in the training process (colocated, no server), with its own copy
of the weights, as TRL's GRPO runs it with `vllm_mode="colocate"`.

The engine (`vllm_engine.ColocatedEngine`) starts from the policy as it is (base + policy LoRA
merged) and, after every optimizer step, gets the policy's merged weights again: base weight + LoRA
delta computed out of place, so the base in the trainer, which is also the reference (adapters
off), is never touched (merging and unmerging in bf16 would leave rounding in it). vLLM's own LoRA
path is not used: its CPU kernels are slow and it is reported not to change Qwen3.5's generations
(vllm-project/vllm#49354).

vLLM returns token ids (and the log-prob of each sampled token, kept only to log the gap to the
trainer's); every log-prob PPO trains on is the trainer's own.
"""

from __future__ import annotations

import torch

from .rollout import Rollout, build_rollout
from .vllm_engine import ColocatedEngine

__all__ = ["VLLMSampler"]


class VLLMSampler:
    """Samples with a colocated vLLM engine that follows the training model's `adapter` weights."""

    name = "vllm"
    own_weights = True  # the engine's copy: the training model is not sampled

    def __init__(
        self,
        model,
        tokenizer,
        *,
        adapter: str | None,
        max_new_tokens: int,
        temperature: float,
        stop_ids,
        pad_token_id: int,
        seed: int,
        max_model_len: int,
        gpu_memory_utilization: float,
        dtype: str,
        enforce_eager: bool,
        max_batch: int = 64,
        distributed: bool = False,
    ):
        self.stop_ids, self.pad_token_id = list(stop_ids), pad_token_id
        self.engine = ColocatedEngine(
            model,
            tokenizer,
            adapter=adapter,
            seed=seed,
            max_model_len=max_model_len,
            max_num_seqs=max_batch,
            gpu_memory_utilization=gpu_memory_utilization,
            dtype=dtype,
            enforce_eager=enforce_eager,
            distributed=distributed,
        )
        self.llm = self.engine.llm
        from vllm import SamplingParams  # importable: the engine has just started

        self.params = SamplingParams(
            n=1,
            temperature=temperature,
            top_p=1.0,
            top_k=0,
            max_tokens=max_new_tokens,
            stop_token_ids=self.stop_ids,
            ignore_eos=True,  # stop exactly where hf stops: at `stop_ids`, not at the config's own EOS
            logprobs=0,  # the sampled token's log-prob only
            detokenize=False,
        )

    @torch.no_grad()
    def sample(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> Rollout:
        """[B, P] left-padded prompts -> a `Rollout` on the prompts' device."""
        prompts = [{"prompt_token_ids": ids[mask.bool()].tolist()} for ids, mask in zip(prompt_ids, prompt_mask)]
        outputs = self.llm.generate(prompts, self.params, use_tqdm=False)
        width = max(1, max(len(o.outputs[0].token_ids) for o in outputs))
        response = torch.full((len(outputs), width), self.pad_token_id, dtype=torch.long)
        logprobs = torch.zeros(len(outputs), width)
        for row, output in enumerate(outputs):
            completion = output.outputs[0]
            ids = list(completion.token_ids)
            response[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            for col, (token, entry) in enumerate(zip(ids, completion.logprobs or [])):
                logprobs[row, col] = entry[token].logprob
        device = prompt_ids.device
        return build_rollout(
            prompt_ids, prompt_mask, response.to(device), self.stop_ids, self.pad_token_id, logprobs.to(device)
        )

    def sync_weights(self) -> None:
        """Push the policy's current merged weights into the engine (after each optimizer step)."""
        self.engine.push()

    def close(self) -> None:
        """Free the engine."""
        self.llm = None
        self.engine.close()
