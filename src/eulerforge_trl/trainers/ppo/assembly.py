"""PPO's models on one shared base: the policy (SFT model + a trainable LoRA), the reward sources
(the RM adapter beside it, or a separate RM, or functions), the critic, and what trains."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from trl.trainer.utils import disable_dropout_in_model

from ...config.schema import Preset
from ...distributed import is_sharded
from ...models.scorer import REWARD_ADAPTER
from ...rewards.sources import RewardSources
from ..common import sampling_policy, weights_dtype
from .critic import POLICY, build_critic
from .sharding import shard


@dataclass
class PolicyStack:
    model: object  # the PeftModel: policy adapter (active), the RM's and the critic's beside it
    rewards: RewardSources
    critic: object  # a `critic.py` strategy
    policy_params: list[torch.nn.Parameter]  # the policy adapter's LoRA weights
    critic_params: list[torch.nn.Parameter]


def assemble(preset: Preset, tokenizer, device, accelerator=None) -> PolicyStack:
    """Load the SFT model with a fresh policy adapter, place the reward sources and the critic on it,
    turn every dropout off, and leave the policy adapter active; sharded when `accelerator` shards
    (FSDP2: `sharding.shard`, once every adapter is on the model)."""
    model = sampling_policy(preset, tokenizer, POLICY, preset.training.gradient_checkpointing).to(device)
    rewards = RewardSources.from_preset(preset, model, tokenizer, device, REWARD_ADAPTER, dtype=weights_dtype(preset))
    rm_adapter = rewards.rm.shared_checkpoint if rewards.rm is not None else ""
    critic = build_critic(preset.training.ppo.critic, model, rewards.critic_init_head(), device, rm_adapter)
    # dropout makes pi_old != pi on identical weights: off everywhere, once every adapter is in
    # place (an adapter loaded later, the RM's or the critic's, brings its own LoRA dropout)
    disable_dropout_in_model(model)
    model.set_adapter(POLICY)
    if accelerator is not None and is_sharded(accelerator):
        model = shard(accelerator, model)  # in place: the reward sources and the critic keep their model
    policy_params = [p for n, p in model.named_parameters() if "lora_" in n and f".{POLICY}." in n]
    return PolicyStack(model, rewards, critic, policy_params, critic.parameters())


def optimizer_and_schedule(preset: Preset, stack: PolicyStack, total_steps: int):
    """AdamW over the policy adapter and the critic (eps 1e-5, as the PPO implementations use), and
    `training.lr_scheduler` with `warmup_ratio` of `total_steps` of warmup."""
    from transformers import get_scheduler

    t = preset.training
    optimizer = torch.optim.AdamW(
        stack.policy_params + stack.critic_params,
        lr=t.lr,
        eps=1e-5,
        weight_decay=t.weight_decay,  # torch's own default (0.01) is not ours (0)
    )
    return optimizer, get_scheduler(t.lr_scheduler, optimizer, int(t.warmup_ratio * total_steps), total_steps)
