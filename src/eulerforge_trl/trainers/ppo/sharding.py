"""PPO on a sharded base (FSDP2 through accelerate): every rank holds a shard of the one shared model.

Our PPO trainer is not a transformers `Trainer`, so it does itself what accelerate's `prepare` does
for TRL's: `shard` runs accelerate's `fsdp2_prepare_model` on the PeftModel once every adapter is
on it (the policy's LoRA, the RM's, the critic's), and the optimizer is built after, over the
sharded parameters. The roles stay what they are unsharded: the reference is the same sharded model
with its adapters disabled, the RM pass the same model with the RM adapter active. What differs:

- **Every forward enters through the root.** FSDP2 makes the first module that runs forward the
  root, and only a forward through the root finishes its backward (reduce-scatters, reshards). The
  RM and critic passes call the decoder stack (`models.backbone.forward_from_root` enters it
  through the root of any sharded model), `generate` a method registered as a forward of the root.
- **Rollouts gather the policy once** (`gathered`): `generate` on sharded layers all-gathers each
  layer for every decoded token. For the rollout phase each rank holds the whole model; it is
  resharded before the next pass that trains.
- **Gradients**: FSDP2 reduce-scatters (averages) the sharded parameters' gradients itself; the
  value head, which is not part of the model, is averaged by hand as under DDP.
- **Checkpoints and `final/`** hold full tensors (`full_tensors`, a collective): the same files as
  an unsharded run writes, loaded back into each rank's shard (`shard_like`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from ...runtime import whole_tensor


def is_dtensor(tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def shard(accelerator, model):
    """`model` sharded in place with accelerate's FSDP2 code (wrap policy, mixed precision, tied
    weights as for TRL's trainers), with `generate` entering through its root."""
    from accelerate.utils import fsdp2_prepare_model
    from torch.distributed.fsdp import register_fsdp_forward_method

    from ...distributed import fit_wrap_policy

    fit_wrap_policy(accelerator, model)
    model = fsdp2_prepare_model(accelerator, model)
    register_fsdp_forward_method(model, "generate")
    return model


@contextlib.contextmanager
def gathered(model) -> Iterator[None]:
    """The whole model unsharded on every rank for the block (the rollout phase), resharded after.

    FSDP2 re-gathers a unit at each forward that resharded it after the last one; for the block
    no unit reshards, so each is gathered once. Outside a sharded model this does nothing.
    """
    from torch.distributed.fsdp import FSDPModule

    units = [m for m in model.modules() if isinstance(m, FSDPModule)]
    before = [_reshards_after_forward(unit) for unit in units]
    for unit in units:
        unit.set_reshard_after_forward(False, recurse=False)
    try:
        yield
    finally:
        for unit, reshards in zip(units, before):
            unit.set_reshard_after_forward(reshards, recurse=False)
            unit.reshard()


def _reshards_after_forward(unit) -> bool:
    # FSDP2 has a setter and no getter; accelerate sets the decoder layers' units to reshard and the
    # root's and the LM head's not to, which `gathered` restores
    return any(group.post_forward_mesh_info is not None for group in unit._get_fsdp_state()._fsdp_param_groups)


def full_tensors(tree):
    """`tree` (nested dicts/lists, e.g. a state dict) with every DTensor gathered whole onto the CPU.

    A collective: every rank calls it on the same structure, in the same order.
    """
    if is_dtensor(tree):
        return whole_tensor(tree).cpu()
    if isinstance(tree, dict):
        return {key: full_tensors(value) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(full_tensors(value) for value in tree)
    return tree


def shard_like(full: torch.Tensor, param) -> torch.Tensor:
    """This rank's shard of `full`, laid out as `param` (a DTensor) is; `full` itself otherwise.

    Every rank holds `full` (a checkpoint read by each), so each cuts its own shard without
    communicating.
    """
    if not is_dtensor(param):
        return full
    from torch.distributed.tensor import distribute_tensor

    full = full.to(device=param.device, dtype=param.dtype)
    return distribute_tensor(full, param.device_mesh, param.placements, src_data_rank=None)


def shard_state_dict(full: dict, reference: dict) -> dict:
    """A full state dict cut into this rank's shards, key by key as `reference` (the live one) holds them."""
    return {key: shard_like(value, reference[key]) if key in reference else value for key, value in full.items()}


def shard_optimizer_state(full: dict, optimizer) -> dict:
    """A full optimizer state dict (`full_tensors` of one) cut into this rank's shards of its parameters."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state = {}
    for index, entry in full["state"].items():
        param = params[index]
        state[index] = {
            key: shard_like(value, param) if torch.is_tensor(value) and value.shape == param.shape else value
            for key, value in entry.items()
        }
    return {**full, "state": state}


def clip_grad_norm(params: list[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """torch's `clip_grad_norm_` (the total norm, as a plain tensor), also over a mix of sharded and
    plain parameters, which torch refuses: the `adapter` critic's LoRA is sharded, its head is not.
    The mix is clipped by the norm of both together, as the unsharded run clips them."""
    sharded = [p for p in params if is_dtensor(p)]
    if not sharded or len(sharded) == len(params):
        return whole_tensor(torch.nn.utils.clip_grad_norm_(params, max_norm))
    grads = [
        [p.grad for p in group if p.grad is not None] for group in (sharded, [p for p in params if not is_dtensor(p)])
    ]
    total = torch.linalg.vector_norm(
        torch.stack([whole_tensor(torch.nn.utils.get_total_norm(g)).float() for g in grads])
    )
    scale = min(1.0, max_norm / (total.item() + 1e-6))  # torch's clip coefficient, clamped at 1
    for grad in grads[0] + grads[1]:
        grad.mul_(scale)
    return total


def load_adapter_state(model, state: dict, adapter: str) -> None:
    """peft's `set_peft_model_state_dict` of a full adapter state (a checkpoint's), cut into this
    rank's shards first when the model is sharded."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    live = get_peft_model_state_dict(model, adapter_name=adapter)
    set_peft_model_state_dict(model, shard_state_dict(state, live), adapter_name=adapter)


def unsharded_copy(model, build, adapters: list[str]):
    """On rank 0, `build()` (the same model unsharded: the SFT model + a fresh policy adapter) with
    the trained `adapters` of the sharded `model` gathered into it, the first active; None on the
    other ranks.

    A collective: every rank calls it. Only the adapters are gathered (the base is the SFT model's,
    loaded again), so rank 0 briefly holds the base twice: its shard and the copy.
    """
    import torch.distributed as dist
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    states = {name: full_tensors(get_peft_model_state_dict(model, adapter_name=name)) for name in adapters}
    if dist.get_rank() != 0:
        return None
    copy = build()
    for name, state in states.items():
        if name not in copy.peft_config:
            copy.add_adapter(name, model.peft_config[name])
        set_peft_model_state_dict(copy, state, adapter_name=name)
    copy.set_adapter(adapters[0])
    return copy
