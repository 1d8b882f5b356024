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


class PolicyPasses:
    """The training model's passes over a rollout: pi (values too when the critic reads the policy's
    pass), pi_ref (adapters off) and pi_old, and the critic's values. Given the shared model, the
    critic and `training.ppo`; the update and the step's phases both read their numbers here."""

    def __init__(self, model, critic, cfg):
        self.model, self.critic, self.cfg = model, critic, cfg

    @staticmethod
    def sequences(roll, idx=None) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(ids [B, P+R], attention mask, P) of the rollout, or of its rows `idx`."""
        if idx is None:
            return roll.input_ids, roll.attention_mask, roll.n_prompt
        return roll.input_ids[idx], roll.attention_mask[idx], roll.n_prompt

    def forward(self, roll, idx=None, with_entropy: bool = False) -> Forward:
        """The active adapter's pass over (part of) the rollout; values too when the critic lives in it."""
        return response_forward(
            self.model,
            *self.sequences(roll, idx),
            self.cfg.temperature,
            value_head=self.critic.head if self.critic.in_policy_pass else None,
            with_entropy=with_entropy,
            entropy_grad=self.cfg.entropy_coef > 0,
        )

    def values(self, roll, forward: Forward, idx=None) -> torch.Tensor:
        """[B, R] V: from `forward` when the critic reads the policy's pass, else the critic's own pass."""
        return forward.values if self.critic.in_policy_pass else self.critic.values(*self.sequences(roll, idx))

    @torch.no_grad()
    def reference_logprobs(self, roll) -> torch.Tensor:
        """[B, R] log pi_ref of the sampled tokens: the same model with every adapter off."""
        with self.model.disable_adapter():
            return self.forward(roll).logprobs

    @property
    def fuses_old_pass(self) -> bool:
        """With one minibatch and a critic inside the policy's pass, the first update pass sees the
        weights that sampled the batch: its logprobs and values *are* the old ones (a measured win)."""
        return self.cfg.num_mini_batches == 1 and self.critic.in_policy_pass

    def old(self, roll) -> Forward:
        """pi_old and V_old. When `fuses_old_pass` this is the first update pass itself, with
        gradients (train mode), for the update to reuse; otherwise a pass of its own without gradients."""
        if self.fuses_old_pass:
            self.model.train()
            return self.forward(roll, with_entropy=True)
        with torch.no_grad():
            forward = self.forward(roll)
            return Forward(forward.logprobs, self.values(roll, forward), None)
