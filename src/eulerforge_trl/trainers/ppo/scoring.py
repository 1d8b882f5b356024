"""The policy's responses and their rewards: prompts sampled through the rollout engine, responses
scored by the reward sources. The training steps, the score scale's estimate and the held-out
evaluation all sample and score through one `RolloutScorer`."""

from __future__ import annotations

import contextlib

import torch
from transformers import TrainerState

from ...generation import Rollout, completion_ids, response_texts
from ...rewards.sources import RewardSources, columns_of
from .prompts import PromptSet
from .sharding import gathered


class RolloutScorer:
    """Samples the policy (`sampler`, on `model`) and scores with `rewards`; `prompts` tokenises the
    rows, `stop_ids` end a response's text, `total_steps` is what reward functions see as max_steps."""

    def __init__(
        self, sampler, model, rewards: RewardSources, tokenizer, stop_ids, prompts: PromptSet, device, total_steps: int
    ):
        self.sampler, self.model, self.rewards, self.tokenizer = sampler, model, rewards, tokenizer
        self.stop_ids, self.prompts, self.device, self.total_steps = stop_ids, prompts, device, total_steps

    def sample(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> Rollout:
        """Responses of the policy (pure sampling at `temperature`) to [B, P] left-padded prompts; a
        sharded policy is gathered whole for it (`sharding.gathered`), not layer by layer per token,
        unless the engine samples a copy of its own."""
        with contextlib.nullcontext() if self.sampler.own_weights else gathered(self.model):
            return self.sampler.sample(prompt_ids, prompt_mask)

    def sample_indices(self, indices: list[int]) -> Rollout:
        """Responses to the training rows at `indices`."""
        return self.sample(*self.prompts.padded_rows(indices, self.device))

    def sample_rows(self, rows: list[dict]) -> Rollout:
        """Responses to other rows (the held-out ones), tokenised as the training rows are."""
        return self.sample(*self.prompts.padded(self.prompts.tokenize(rows), self.device))

    def texts(self, roll: Rollout) -> list[str]:
        """Each sampled response as text, up to (not including) its first stop token."""
        return response_texts(self.tokenizer, roll, self.stop_ids)

    def score(self, roll: Rollout, rows: list[dict], step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """[B] raw total reward and {"reward/<name>": [B]} per source, for the prompts of `rows`.

        The RM reads each response rendered with its prompt as it was trained (`reward_ids`):
        re-tokenising from text costs little and makes "scored as trained" hold for chat templates,
        whose rendered conversation differs from the sampled ids (the template's closing tokens).
        Reward functions get the texts and the rows' other columns (`RewardSources.score`).
        """
        return self.rewards.score(
            [r["prompt"] for r in rows],
            self.texts(roll),
            columns_of(rows),
            completion_ids=completion_ids(roll),
            trainer_state=TrainerState(global_step=step, max_steps=self.total_steps),  # as TRL hands it
            finished=roll.contains_eos.tolist(),  # a cut response is scored as cut, not as a finished answer
        )
