"""6. The PPO epochs of a step: minibatch passes over one rollout batch, the clipped objectives,
backward, gradient averaging across processes (FSDP2's own for a sharded model), separate clipping of policy and critic, one
optimizer step per minibatch. A part of `PPOTrainer` (a base class of it), kept apart so the
trainer file reads as the loop and its phases."""

from __future__ import annotations

import torch

from ...generation import Rollout
from . import losses
from .gradients import average_gradients
from .rollout import Forward, response_forward
from .sharding import clip_grad_norm, is_dtensor
from .targets import Targets


class PPOUpdate:
    """The update phase; `PPOTrainer` provides model, critic, optimizer, cfg, preset, step, device,
    accelerator, the KL controller `kl` and the parameter lists it reads."""

    def update(self, roll: Rollout, targets: Targets, fused: Forward | None = None) -> dict[str, torch.Tensor]:
        """6. `epochs` passes of minibatch updates with the clipped objectives.

        `fused`: the first pass over the whole batch, already run by `old_pass` (one minibatch only).
        """
        cfg = self.cfg
        self.model.train()
        n = len(roll)
        mb_size = n // cfg.num_mini_batches
        stats: dict[str, list[torch.Tensor]] = {}
        generator = torch.Generator().manual_seed(self.preset.training.seed * 100003 + self.step)
        for epoch in range(cfg.epochs):
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, mb_size):
                if fused is not None and epoch == 0:  # one minibatch = the whole batch, in rollout order
                    idx, forward = torch.arange(n, device=self.device), fused
                else:
                    idx = order[start : start + mb_size].to(self.device)
                    forward = self._forward(roll, idx, with_entropy=True)
                for key, value in self._minibatch_step(roll, targets, idx, forward).items():
                    stats.setdefault(key, []).append(value)
        return {k: torch.stack(v).mean() for k, v in stats.items()}

    def _minibatch_step(self, roll: Rollout, targets: Targets, idx, forward: Forward) -> dict[str, torch.Tensor]:
        """Losses, backward, gradient sync, separate clipping of policy and critic, one optimizer step."""
        cfg, mask = self.cfg, roll.response_mask[idx]
        # an engine sampling off the trainer's weights: its tokens weighted by the truncated pi_old / pi_engine
        is_weights = None if targets.is_weights is None else targets.is_weights[idx]
        pg_loss, pg_stats = losses.policy_loss(
            forward.logprobs, targets.logprobs[idx], targets.advantages[idx], mask, cfg.clip_range, is_weights
        )
        entropy_mean = losses.masked_mean(forward.entropy, mask)
        loss = pg_loss - cfg.entropy_coef * entropy_mean
        kl_stats = {}
        if cfg.use_kl_loss:  # the KL to the reference in the loss, differentiated through the current policy
            kl_token = losses.kl_per_token(forward.logprobs, targets.ref_logprobs[idx], cfg.kl_estimator)
            kl_loss = losses.masked_mean(kl_token if is_weights is None else kl_token * is_weights, mask)
            loss = loss + self.kl.value * kl_loss
            kl_stats = {"kl_loss": kl_loss.detach()}
        if not self.critic.in_policy_pass:
            loss.backward()  # free the policy's graph before the critic's own pass
            loss = 0.0
        # the critic's adapter stays active through its backward: checkpointed layers are recomputed there
        with self.critic.active():
            values = forward.values if self.critic.in_policy_pass else self.critic.values(*self._sequences(roll, idx))
            vf_loss, vf_stats = losses.value_loss(
                values, targets.values[idx], targets.returns[idx], mask, cfg.clip_range_value
            )
            (loss + cfg.vf_coef * vf_loss).backward()
        if self.accelerator.num_processes > 1:  # a sharded model's own gradients FSDP2 has averaged already
            unsharded = [p for p in self.policy_params + self.critic_params if not is_dtensor(p)]
            average_gradients(unsharded, self.accelerator.num_processes)
        # clipped apart: a large gradient on the critic's own weights must not shrink the policy's step (the
        # value_head critic's loss also reaches the policy adapter through the undetached hidden states: docs/ppo.md)
        max_norm = self.preset.training.max_grad_norm
        policy_norm = clip_grad_norm(self.policy_params, max_norm)
        critic_norm = clip_grad_norm(self.critic_params, max_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {
            "ppo_loss": pg_loss.detach(),
            "value_loss": vf_loss.detach(),
            "entropy": entropy_mean.detach(),
            "grad_norm_policy": policy_norm.detach(),
            "grad_norm_critic": critic_norm.detach(),
            **pg_stats,
            **vf_stats,
            **kl_stats,
        }

    def _sequences(self, roll: Rollout, idx=None) -> tuple[torch.Tensor, torch.Tensor, int]:
        if idx is None:
            return roll.input_ids, roll.attention_mask, roll.n_prompt
        return roll.input_ids[idx], roll.attention_mask[idx], roll.n_prompt

    def _forward(self, roll: Rollout, idx=None, with_entropy: bool = False) -> Forward:
        """The active adapter's pass over (part of) the rollout; values too when the critic lives in it."""
        return response_forward(
            self.model,
            *self._sequences(roll, idx),
            self.cfg.temperature,
            value_head=self.critic.head if self.critic.in_policy_pass else None,
            with_entropy=with_entropy,
            entropy_grad=self.cfg.entropy_coef > 0,
        )
