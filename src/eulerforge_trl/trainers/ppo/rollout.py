"""The forward passes that turn sampled sequences into per-token numbers (log-probs, values, entropy).

Sampling itself is the rollout engine's (`eulerforge_trl.generation`); the layout is its `Rollout`'s:
`[left-padded prompt | response (right-padded after the first EOS)]`, P prompt columns and R
response columns. Tensors over responses are [B, R].
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from trl.trainer.utils import entropy_from_logits, selective_log_softmax

from ...models.backbone import final_hidden, last_logits


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
