"""The critic V(state) that PPO learns beside the policy: one small strategy object per choice.

`value_head` (the default): a linear head on the policy's own final hidden states. Its values come
out of the policy's forward pass (no extra pass), and its gradient also reaches the policy adapter.
`adapter`: its own LoRA adapter (the RM's, when there is one) + head, on the shared base; every
use is a separate pass with that adapter active, and its backward too: activation checkpointing
recomputes each layer during backward with whichever adapter is active *then*, so the value loss's
forward and backward both run inside `critic.active()` (with the policy's adapter active in
backward, the critic's gradients came from the policy's LoRA weights, or with unequal ranks the
recomputation failed outright).

Both heads start as a copy of the reward head (times training.reward_model.weight), so the critic
starts knowing what the RM knows. The RM speaks raw score units while PPO's returns are in
normalised units (`normalize_scores`): `rescale` folds that normalisation into the copied head, so
the first value loss measures what the critic does not know rather than a units mismatch.

Without an RM head on the policy's base (reward functions alone, or a `separate` RM on a base of
its own), the head starts at zero weights and bias: V = 0 everywhere, the mean of the normalised
returns, which is the best guess that knows nothing. A random head would instead start the critic
with confident noise, and a copy of another base's head would read hidden states it was not
trained on. The `adapter` critic then gets a fresh LoRA adapter (B = 0: the policy's base itself).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from pathlib import Path

import torch

from ...models.reward_head import RewardHead
from ..policy_final import POLICY
from .rollout import value_forward
from .sharding import load_adapter_state

CRITIC = "critic"
VALUE_HEAD_FILE = "value_head.pt"
CRITIC_ADAPTER_DIR = "critic_adapter"


class ValueHeadCritic:
    """A head on the policy's hidden states; `in_policy_pass`: values come from the policy's forward."""

    in_policy_pass = True

    def __init__(self, model, reward_head: RewardHead | None, device):
        self.model = model
        hidden = model.get_input_embeddings().weight.shape[1]
        # with a bias always: `rescale` shifts it, and the optimizer holds these very tensors
        self.head = RewardHead(hidden, bias=True).to(device)
        with torch.no_grad():
            if reward_head is None:  # nothing to start from: V = 0 (see the module docstring)
                self.head.linear.weight.zero_()
                self.head.linear.bias.zero_()
            else:
                self.head.linear.weight.copy_(reward_head.linear.weight)
                self.head.linear.bias.copy_(reward_head.linear.bias if reward_head.linear.bias is not None else 0.0)

    def parameters(self) -> list[torch.nn.Parameter]:
        return list(self.head.parameters())

    def values(self, rollout_ids, attention_mask, n_prompt) -> torch.Tensor:
        raise NotImplementedError("value_head values come from the policy's forward (in_policy_pass)")

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Nothing to switch: the head reads the policy's own pass (see `AdapterCritic.active`)."""
        yield

    @torch.no_grad()
    def rescale(self, mean: float, std: float) -> None:
        """V <- (V - mean) / std: the copied reward head, in the units of normalised scores.

        `mean` is the mean of the part of the total the head estimates (the RM's weighted score; 0
        without an RM, which leaves a zero head at zero), `std` the total's spread.
        """
        self.head.linear.weight.div_(std)
        self.head.linear.bias.sub_(mean).div_(std)

    def state_dict(self) -> dict:
        return {"head": self.head.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.head.load_state_dict(state["head"])

    def save(self, directory: Path, model=None) -> None:
        """Into `final/`; `model`: the one holding the critic's adapter, if not `self.model` (an unsharded copy)."""
        torch.save(self.head.state_dict(), directory / VALUE_HEAD_FILE)


class AdapterCritic(ValueHeadCritic):
    """Its own LoRA adapter (initialised from the RM's, or fresh) + head; each use is a pass of its own."""

    in_policy_pass = False

    def __init__(self, model, reward_head: RewardHead | None, device, reward_checkpoint: str):
        super().__init__(model, reward_head, device)
        if reward_checkpoint:
            model.load_adapter(reward_checkpoint, adapter_name=CRITIC, is_trainable=True)
        else:
            model.add_adapter(CRITIC, copy.deepcopy(model.peft_config[POLICY]))
        model.set_adapter(POLICY)

    def parameters(self) -> list[torch.nn.Parameter]:
        adapter = [p for name, p in self.model.named_parameters() if "lora_" in name and f".{CRITIC}." in name]
        return adapter + super().parameters()

    def values(self, rollout_ids, attention_mask, n_prompt) -> torch.Tensor:
        """[B, R] values with the critic adapter active; the policy's adapter is active again after.

        Without gradients that is all. With gradients, call it *and* backward inside `active()`:
        a backward after the switch back recomputes checkpointed layers with the policy's adapter.
        """
        with self.active():
            return value_forward(self.model, rollout_ids, attention_mask, n_prompt, self.head)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """The critic adapter active for the block, the policy's after (re-entrant: an inner use
        keeps it active). Run the critic's forward and its backward inside one block.

        Example:
            >>> with critic.active():
            ...     values = critic.values(ids, mask, n_prompt)
            ...     (vf_coef * value_loss(values, ...)).backward()
        """
        if self.model.active_adapter == CRITIC:
            yield
            return
        self.model.set_adapter(CRITIC)
        try:
            yield
        finally:
            self.model.set_adapter(POLICY)
            # peft's set_adapter freezes every other adapter: the critic's own update must still reach it
            for param in self.parameters():
                param.requires_grad_(True)

    def state_dict(self) -> dict:
        from peft import get_peft_model_state_dict

        return {**super().state_dict(), "adapter": get_peft_model_state_dict(self.model, adapter_name=CRITIC)}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        load_adapter_state(self.model, state["adapter"], CRITIC)
        self.model.set_adapter(POLICY)

    def save(self, directory: Path, model=None) -> None:
        super().save(directory)
        (model or self.model).save_pretrained(directory / CRITIC_ADAPTER_DIR, selected_adapters=[CRITIC])


def build_critic(kind: str, model, reward_head: RewardHead | None, device, reward_checkpoint: str):
    """`training.ppo.critic` -> its strategy object.

    Args:
        reward_head: the head to start from (the RM's on the policy's base), None for a zero head.
        reward_checkpoint: the RM adapter on the policy's base the `adapter` critic starts from; "" = fresh.
    """
    if kind == "adapter":
        return AdapterCritic(model, reward_head, device, reward_checkpoint)
    return ValueHeadCritic(model, reward_head, device)
