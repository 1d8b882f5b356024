"""What a rollout engine gives back: sampled episodes as token tensors, and their response texts.

Layout used throughout: `[left-padded prompt | response (right-padded after the first stop token)]`,
P prompt columns and R response columns. Tensors over responses are [B, R].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Rollout:
    """One batch of sampled episodes, as the engine produced them (no gradients, nothing derived)."""

    input_ids: torch.Tensor  # [B, P+R] prompt (left-padded) + response (pad after the stop token)
    attention_mask: torch.Tensor  # [B, P+R] 1 on real tokens, the response's stop token included
    n_prompt: int  # P
    response_mask: torch.Tensor  # [B, R] bool, True up to and including the first stop token
    contains_eos: torch.Tensor  # [B] bool: a stop token ended the response (else it hit the length limit)
    # [B, R] log-prob of each sampled token as the engine computed it (vllm, the hf merged copy), 0 on
    # padding; None where the tokens come from the trainer's own weights. PPO logs the gap to its own and
    # weights its loss by the truncated ratio of the two; never differentiated.
    engine_logprobs: torch.Tensor | None = None

    @property
    def response_ids(self) -> torch.Tensor:  # [B, R]
        return self.input_ids[:, self.n_prompt :]

    def __len__(self) -> int:
        return self.input_ids.shape[0]


def mask_after_first_eos(response: torch.Tensor, stop_ids) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, R] ids -> (mask True up to and including the first stop token, whether one occurred).

    `stop_ids`: one token id (EOS) or several (EOS and a chat template's end-of-turn token).
    """
    is_eos = torch.isin(response, torch.as_tensor(stop_ids, device=response.device).reshape(-1))
    eos_before = is_eos.long().cumsum(dim=1) - is_eos.long()  # EOS strictly before each position
    return eos_before == 0, is_eos.any(dim=1)


def build_rollout(prompt_ids, prompt_mask, response: torch.Tensor, stop_ids, pad_token_id, engine_logprobs=None):
    """A `Rollout` from left-padded prompts and [B, R] sampled ids: everything after the first stop
    token becomes padding (one rule for every engine)."""
    response_mask, contains_eos = mask_after_first_eos(response, stop_ids)
    response = response.masked_fill(~response_mask, pad_token_id)
    if engine_logprobs is not None:
        engine_logprobs = engine_logprobs.masked_fill(~response_mask, 0.0)
    return Rollout(
        input_ids=torch.cat([prompt_ids, response], dim=1),
        attention_mask=torch.cat([prompt_mask, response_mask.long()], dim=1),
        n_prompt=prompt_ids.shape[1],
        response_mask=response_mask,
        contains_eos=contains_eos,
        engine_logprobs=engine_logprobs,
    )


def response_texts(tokenizer, roll: Rollout, stop_ids) -> list[str]:
    """Each sampled response as text, up to (not including) its first stop token: what the RM, the
    reward functions, samples.jsonl and `eulerforge evaluate` read."""
    stops = torch.as_tensor(list(stop_ids), device=roll.response_ids.device)
    answer = roll.response_mask & ~torch.isin(roll.response_ids, stops)
    return [tokenizer.decode(ids[keep], skip_special_tokens=True) for ids, keep in zip(roll.response_ids, answer)]


def completion_ids(roll: Rollout) -> list[list[int]]:
    """Each response's token ids up to and including its stop token (TRL's `completion_ids`)."""
    return [ids[keep].tolist() for ids, keep in zip(roll.response_ids, roll.response_mask)]
