"""`critic: adapter` under activation checkpointing: the critic's gradients are the critic's.

Non-reentrant checkpointing recomputes each decoder layer during backward with whichever adapter
is active then. The value loss's backward used to run after `AdapterCritic.values` had switched
back to the policy: with equal ranks the critic's gradients silently came from the policy's LoRA
weights; with unequal ranks (an RM adapter of another rank) the recomputation failed. Forward and
backward inside `critic.active()` give the gradients of a run without checkpointing.
"""

from __future__ import annotations

import copy

import pytest
import torch

from eulerforge_trl.trainers.ppo.critic import CRITIC, POLICY, AdapterCritic


def _model_and_critic(checkpointing: bool, critic_rank: int, adapter_dir):
    from peft import LoraConfig, get_peft_model

    from eulerforge_trl.models.tiny import build_tiny_model
    from eulerforge_trl.trainers.common import enable_activation_checkpointing

    torch.manual_seed(0)
    base = build_tiny_model()
    # the critic starts from a saved adapter (as from the RM's), B != 0 so both adapters matter
    saved = get_peft_model(
        copy.deepcopy(base), LoraConfig(r=critic_rank, target_modules="all-linear", init_lora_weights=False)
    )
    saved.save_pretrained(adapter_dir)
    if checkpointing:
        enable_activation_checkpointing(base)
        base.enable_input_require_grads()
    torch.manual_seed(1)
    policy = LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False, lora_dropout=0.0)
    model = get_peft_model(base, policy, adapter_name=POLICY)
    critic = AdapterCritic(model, None, torch.device("cpu"), str(adapter_dir))
    torch.nn.init.normal_(critic.head.linear.weight, std=0.1)  # a zero head would stop every gradient
    model.train()  # checkpointing only recomputes in train mode
    return model, critic


def _critic_grads(checkpointing: bool, critic_rank: int, adapter_dir) -> list[torch.Tensor]:
    model, critic = _model_and_critic(checkpointing, critic_rank, adapter_dir)
    ids = torch.randint(3, 200, (2, 12), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # a left-padded prompt
    with critic.active():
        values = critic.values(ids, mask, 5)
        (values**2).mean().backward()
    assert model.active_adapter == POLICY
    assert all(p.requires_grad for p in critic.parameters())
    grads = [p.grad for p in critic.parameters()]
    assert all(g is not None for g in grads)
    return grads


@pytest.mark.parametrize("critic_rank", [4, 8], ids=["equal_ranks", "unequal_ranks"])
def test_critic_gradients_equal_with_checkpointing_on_and_off(tmp_path, critic_rank):
    plain = _critic_grads(False, critic_rank, tmp_path / "off")
    recomputed = _critic_grads(True, critic_rank, tmp_path / "on")
    for a, b in zip(plain, recomputed):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_active_is_reentrant_and_restores_the_policy(tmp_path):
    model, critic = _model_and_critic(False, 4, tmp_path / "a")
    with critic.active():
        with critic.active():
            assert model.active_adapter == CRITIC
        assert model.active_adapter == CRITIC  # the inner block does not switch back early
    assert model.active_adapter == POLICY
    with torch.no_grad():
        critic.values(torch.ones(1, 4, dtype=torch.long), torch.ones(1, 4, dtype=torch.long), 2)
    assert model.active_adapter == POLICY


def test_the_value_head_loss_reaches_the_policy_adapter_as_documented():
    """docs/ppo.md: the default critic reads the policy's hidden states undetached, so its value loss
    trains the policy adapter too (and counts in grad_norm_policy); its head is the critic's alone."""
    from peft import LoraConfig, get_peft_model

    from eulerforge_trl.models.tiny import build_tiny_model
    from eulerforge_trl.trainers.ppo.critic import ValueHeadCritic
    from eulerforge_trl.trainers.ppo.rollout import response_forward

    torch.manual_seed(0)
    model = get_peft_model(
        build_tiny_model(), LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False), adapter_name=POLICY
    )
    critic = ValueHeadCritic(model, None, torch.device("cpu"))
    torch.nn.init.normal_(critic.head.linear.weight, std=0.1)
    ids = torch.randint(3, 200, (2, 12), generator=torch.Generator().manual_seed(2))
    forward = response_forward(model, ids, torch.ones_like(ids), 5, 1.0, value_head=critic.head)
    (forward.values**2).mean().backward()  # the value loss alone, no policy loss
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in lora)
    assert all(p.grad is not None for p in critic.parameters())
