"""Rollouts: sample responses, and the forward passes that turn sequences into per-token numbers.

Layout used throughout: `[left-padded prompt | response (right-padded after the first EOS)]`,
P prompt columns and R response columns. Tensors over responses are [B, R].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from trl.trainer.utils import entropy_from_logits, selective_log_softmax

from ...models.backbone import final_hidden, last_logits


@dataclass(frozen=True)
class Rollout:
    """One batch of sampled episodes, as `generate` produced them (no gradients, nothing derived)."""

    input_ids: torch.Tensor  # [B, P+R] prompt (left-padded) + response (pad after EOS)
    attention_mask: torch.Tensor  # [B, P+R] 1 on real tokens, the response's EOS included
    n_prompt: int  # P
    response_mask: torch.Tensor  # [B, R] bool, True up to and including the first EOS
    contains_eos: torch.Tensor  # [B] bool

    @property
    def response_ids(self) -> torch.Tensor:  # [B, R]
        return self.input_ids[:, self.n_prompt :]

    def __len__(self) -> int:
        return self.input_ids.shape[0]


@torch.no_grad()
def sample_responses(
    model, prompt_ids, prompt_mask, *, max_new_tokens, temperature, stop_ids, pad_token_id, synced_gpus=False
) -> Rollout:
    """Pure sampling (no top-k/top-p) from the active adapter, truncated after the first stop token.

    `stop_ids` are EOS and, for chat data, the template's end-of-turn token (`stop_token_ids`).

    The caller puts the model in eval mode: with gradient checkpointing on, train-mode
    `generate` silently drops the KV cache and runs about twice as slowly.
    """
    sequences = model.generate(
        input_ids=prompt_ids,
        attention_mask=prompt_mask,
        max_new_tokens=max_new_tokens,
        do_sample=True,
        temperature=temperature,
        top_k=0,
        top_p=1.0,
        eos_token_id=list(stop_ids),
        pad_token_id=pad_token_id,
        use_cache=True,
        synced_gpus=synced_gpus,
    )
    n_prompt = prompt_ids.shape[1]
    response = sequences[:, n_prompt:]
    response_mask, contains_eos = mask_after_first_eos(response, stop_ids)
    response = response.masked_fill(~response_mask, pad_token_id)
    return Rollout(
        input_ids=torch.cat([prompt_ids, response], dim=1),
        attention_mask=torch.cat([prompt_mask, response_mask.long()], dim=1),
        n_prompt=n_prompt,
        response_mask=response_mask,
        contains_eos=contains_eos,
    )


def mask_after_first_eos(response: torch.Tensor, stop_ids) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, R] ids -> (mask True up to and including the first stop token, whether one occurred).

    `stop_ids`: one token id (EOS) or several (EOS and a chat template's end-of-turn token).
    """
    is_eos = torch.isin(response, torch.as_tensor(stop_ids, device=response.device).reshape(-1))
    eos_before = is_eos.long().cumsum(dim=1) - is_eos.long()  # EOS strictly before each position
    return eos_before == 0, is_eos.any(dim=1)


class Forward(NamedTuple):
    """What one pass over rollout sequences gives, each [B, R] over response tokens."""

    logprobs: torch.Tensor
    values: torch.Tensor | None
    entropy: torch.Tensor | None


def response_forward(
    model, rollout_ids, attention_mask, n_prompt, temperature, value_head=None, with_entropy=False, entropy_grad=False
) -> Forward:
    """Logprobs of the response tokens (and values / entropy) from one pass of the model's own forward.

    The LM head runs only on the R states that predict response tokens, not on the prompt, and the
    logits are the model's own (`last_logits`: Gemma's softcapping, Cohere/Granite logit scales).
    Entropy is computed outside the autograd graph unless `entropy_grad` (an entropy bonus) asks
    for it: a full-vocabulary softmax kept for backward costs memory and time for a logged number.

    Returns:
        `Forward`: logprobs [B, R], values [B, R] or None, entropy [B, R] or None.
    """
    n_response = rollout_ids.shape[1] - n_prompt
    logits, hidden = last_logits(model, rollout_ids, attention_mask, n_response + 1)  # the last predicts nothing
    logits, hidden = logits[:, :-1].float() / temperature, hidden[:, :-1]  # [B, R, V], [B, R, H]
    logprobs = selective_log_softmax(logits, rollout_ids[:, n_prompt:])
    values = value_head(hidden.float()) if value_head is not None else None
    entropy = None
    if with_entropy:
        entropy = entropy_from_logits(logits if entropy_grad else logits.detach())
    return Forward(logprobs, values, entropy)


def value_forward(model, rollout_ids, attention_mask, n_prompt, value_head) -> torch.Tensor:
    """[B, R] values from whichever adapter is active (the separate critic's)."""
    hidden = final_hidden(model, rollout_ids, attention_mask)[:, n_prompt - 1 : -1]
    return value_head(hidden.float())
