"""Forward helpers on a causal LM's decoder stack: final hidden states, read at the last real token.

RM training, RM scoring and PPO's value pass all go through `final_hidden` and `gather_last_hidden`,
so the reward is read at the same token (and with the same position ids) everywhere.
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


def final_hidden(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, T, H] final (normed) hidden states of the backbone with whatever adapter is active."""
    out = backbone_of(model)(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
    )
    return out.last_hidden_state
