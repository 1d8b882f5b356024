"""6. The PPO epochs of a step: minibatch passes over one rollout batch, the clipped objectives,
backward, gradient averaging across processes (FSDP2's own for a sharded model), separate clipping
of policy and critic, one optimizer step per minibatch."""

from __future__ import annotations

import torch

from ...generation import Rollout
from . import losses
from .gradients import average_gradients
from .rollout import Forward, PolicyPasses
from .sharding import clip_grad_norm, is_dtensor
from .targets import Targets


class PPOUpdate:
    """The update phase, given what it updates: the passes over the rollout (`PolicyPasses`), the
    optimizer over `policy_params` + `critic_params`, `training.ppo`, the KL controller (its current
    coefficient weighs a KL loss), and how many processes average their gradients."""

    def __init__(
        self,
        passes: PolicyPasses,
        optimizer,
        cfg,
        kl,
        *,
        policy_params: list[torch.nn.Parameter],
        critic_params: list[torch.nn.Parameter],
        max_grad_norm: float,
        seed: int,
        processes: int,
        device,
    ):
        self.passes, self.critic, self.optimizer, self.cfg, self.kl = passes, passes.critic, optimizer, cfg, kl
        self.policy_params, self.critic_params = policy_params, critic_params
        self.max_grad_norm, self.seed, self.processes, self.device = max_grad_norm, seed, processes, device

    def __call__(self, roll: Rollout, targets: Targets, step: int, fused: Forward | None = None) -> dict:
        """6. `epochs` passes of minibatch updates with the clipped objectives; the minibatch order is
        seeded by `step`, so a resumed run updates as the uninterrupted one did.

        `fused`: the first pass over the whole batch, already run as the old pass (one minibatch only).
        Returns {name: mean over minibatches} of the losses and statistics.
        """
        cfg = self.cfg
        self.passes.model.train()
        n = len(roll)
        mb_size = n // cfg.num_mini_batches
        stats: dict[str, list[torch.Tensor]] = {}
        generator = torch.Generator().manual_seed(self.seed * 100003 + step)
        for epoch in range(cfg.epochs):
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, mb_size):
                if fused is not None and epoch == 0:  # one minibatch = the whole batch, in rollout order
                    idx, forward = torch.arange(n, device=self.device), fused
                else:
                    idx = order[start : start + mb_size].to(self.device)
                    forward = self.passes.forward(roll, idx, with_entropy=True)
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
            values = self.passes.values(roll, forward, idx)
            vf_loss, vf_stats = losses.value_loss(
                values, targets.values[idx], targets.returns[idx], mask, cfg.clip_range_value
            )
            (loss + cfg.vf_coef * vf_loss).backward()
        if self.processes > 1:  # a sharded model's own gradients FSDP2 has averaged already
            unsharded = [p for p in self.policy_params + self.critic_params if not is_dtensor(p)]
            average_gradients(unsharded, self.processes)
        # clipped apart: a large gradient on the critic's own weights must not shrink the policy's step (the
        # value_head critic's loss also reaches the policy adapter through the undetached hidden states: docs/ppo.md)
        policy_norm = clip_grad_norm(self.policy_params, self.max_grad_norm)
        critic_norm = clip_grad_norm(self.critic_params, self.max_grad_norm)
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
