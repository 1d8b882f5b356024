"""Forward helpers on a causal LM's decoder stack: final hidden states, read at the last real token.

RM training, RM scoring and PPO's value pass all go through `final_hidden` and `gather_last_hidden`,
so the reward is read at the same token (and with the same position ids) everywhere. PPO's logprobs
come from `last_logits`: the model's own forward, so its head transforms (Gemma's
`final_logit_softcapping`, Cohere's `logit_scale`, Granite's `logits_scaling`, ...) apply.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ModelError


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position of the last real token of each row ([B, T] mask -> [B]); left or right padding.

    Rewards are read there: with EOS appended (RM data) or generated (PPO), it is the EOS token.
    """
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (positions * attention_mask.long()).argmax(dim=1)


def gather_last_hidden(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, T, H] hidden states -> [B, H] at `last_token_index`."""
    index = last_token_index(attention_mask)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """0, 1, 2, ... over real tokens only, so a left-padded row sees the positions a right-padded one does."""
    return (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)


def backbone_of(model) -> nn.Module:
    """The decoder stack (no LM head) of a causal LM, through a peft wrapper if there is one.

    Calling it instead of the full model skips the vocabulary projection, the largest matmul.
    """
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = getattr(inner, inner.base_model_prefix, None)
    if backbone is None:
        raise ModelError(f"cannot find the decoder stack of {type(inner).__name__}")
    return backbone


def forward_from_root(model, module: nn.Module, **inputs):
    """`module(**inputs)`, `module` being a part of `model`, entered through `model`'s FSDP2 root when
    `model` is sharded: only the root's forward gathers the weights that sit in no layer of their own
    (embeddings, the final norm), so a sharded model's forward must start at its root, whoever sharded
    it (PPO's `sharding.shard`, or accelerate inside TRL's trainers); the first call registers that
    entry on the model. Unsharded, simply `module(**inputs)`."""
    through_root = getattr(model, "forward_from_root", None)
    if through_root is None and _is_sharded(model):
        through_root = _enter_through_root(model)
    return through_root(module, **inputs) if through_root is not None else module(**inputs)


def _enter_through_root(model):
    """Give sharded `model` a `forward_from_root(fn, *args, **kwargs)` method that runs `fn` as a
    forward of its FSDP2 root (its hooks gather and reshard as for `model(...)`); returns it."""
    from torch.distributed.fsdp import register_fsdp_forward_method

    model.forward_from_root = _call  # an instance attribute: registered below as a forward of the root
    register_fsdp_forward_method(model, "forward_from_root")
    return model.forward_from_root


def _call(fn, *args, **kwargs):
    return fn(*args, **kwargs)


def _is_sharded(model) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def final_hidden(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, T, H] final (normed) hidden states of the backbone with whatever adapter is active."""
    out = forward_from_root(
        model,
        backbone_of(model),
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
    )
    return out.last_hidden_state


def last_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, keep: int):
    """The model's own logits for the last `keep` positions, and the final hidden states they came from.

    The causal LM's forward with `logits_to_keep` computes the vocabulary projection on those
    positions only, and applies whatever the architecture does after its LM head: Gemma 2/3 cap
    the logits (`final_logit_softcapping`), Cohere multiplies by `logit_scale`, Granite divides by
    `logits_scaling` (HyperCLOVA X multiplies by a key of the same name). `lm_head(hidden)` alone
    drops all of that, and logprobs, KL and entropy would then belong to another distribution than
    the one `generate` samples from. The hidden states are what the LM head received (read by a
    hook on it), the same as `final_hidden`'s on those positions: a value head reads them.

    Args:
        model: a causal LM (or a peft model around one), with whatever adapter is active.
        input_ids, attention_mask: [B, T], left or right padded (position ids follow the mask).
        keep: how many of the last positions to return (1 <= keep <= T).

    Returns:
        logits: [B, keep, V] as the model computes them (its dtype).
        hidden: [B, keep, H] the final (normed) hidden states the LM head read.
    """
    head = model.get_output_embeddings()
    if head is None:
        raise ModelError(f"{type(model).__name__} has no output embeddings (LM head)")
    seen: list[torch.Tensor] = []

    def record(_module, args, kwargs, _output):
        seen.append(args[0] if args else next(iter(kwargs.values())))

    handle = head.register_forward_hook(record, with_kwargs=True)
    try:
        out = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
            use_cache=False,
            logits_to_keep=keep,
        )
    finally:
        handle.remove()
    if len(seen) != 1 or seen[0].shape[1] != keep or out.logits.shape[1] != keep:
        raise ModelError(
            f"{type(model).__name__}: its forward did not apply its LM head once to the last {keep} positions "
            "(logits_to_keep unsupported?)"
        )
    return out.logits, seen[0]
