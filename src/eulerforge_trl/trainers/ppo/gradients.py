"""Averaging gradients across processes by hand, for the PPO trainer.

DDP's wrapper does not fit PPO here: which adapter trains changes within a step (the policy, then
the critic), and DDP fixes the set of trainable parameters when it wraps the model.
"""

from __future__ import annotations

import torch


def average_gradients(params: list[torch.nn.Parameter], world_size: int) -> None:
    """Average the gradients of `params` over the process group, in two collective calls.

    Parameters that no process has a gradient for keep `grad = None`, so AdamW leaves them alone
    (a zero gradient would still move them through momentum and weight decay). One that some
    processes have a gradient for counts as zero on the others. Every process must pass the same
    parameters in the same order.
    """
    import torch.distributed as dist

    if not params:
        return
    has_grad = torch.tensor([float(p.grad is not None) for p in params], device=params[0].device)
    dist.all_reduce(has_grad, op=dist.ReduceOp.MAX)
    synced = [p for p, flag in zip(params, has_grad.tolist()) if flag]
    if not synced:
        return
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in synced])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world_size
    offset = 0
    for param in synced:
        param.grad = flat[offset : offset + param.numel()].view_as(param).to(param.dtype)
        offset += param.numel()
