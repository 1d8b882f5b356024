"""RewardHead: a scalar head read at the last real token, on the policy's own base model.

The RM stage trains a LoRA adapter + head; PPO (or a notebook) loads that adapter beside the
policy's adapter on the *same* base and scores with it (`scorer.RewardScorer`) — no second model
in memory. Where the score is read is decided by one function, `backbone.last_token_index`, for
RM evaluation and PPO alike.
"""

from __future__ import annotations

import torch
from torch import nn


class RewardHead(nn.Module):
    """hidden_size -> 1 linear map; its input is the final hidden state of the last real token."""

    def __init__(self, hidden_size: int, bias: bool = False):
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1, bias=bias)
        # std 1/sqrt(d+1) keeps initial scores O(1) ("N implementation details of RLHF", detail 2.3)
        nn.init.normal_(self.linear.weight, std=1.0 / (hidden_size + 1) ** 0.5)
        if bias:
            nn.init.zeros_(self.linear.bias)

    def forward(self, last_hidden: torch.Tensor) -> torch.Tensor:
        """[B, H] -> [B] scores."""
        return self.linear(last_hidden).squeeze(-1)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> RewardHead:
        head = cls(linear.in_features, bias=linear.bias is not None)
        head.linear.load_state_dict(linear.state_dict())
        return head
