"""The training prompts as the policy continues them, and the order in which steps draw them.

Every process draws its own share of one seeded permutation per epoch, so a resumed run needs
only the step number to draw the same prompts again (no sampler state in checkpoints).
"""

from __future__ import annotations

import math

import torch

from ...data import render


class PromptSet:
    """Rows of a prompt-only data file, tokenised once, and the batches drawn from them."""

    def __init__(self, rows: list[dict], tokenizer, max_prompt_length: int, seed: int, rank: int, world: int):
        self.rows, self.tokenizer, self.max_prompt_length = rows, tokenizer, max_prompt_length
        self.seed, self.rank, self.world = seed, rank, world
        self.ids = self.tokenize(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def tokenize(self, rows: list[dict]) -> list[list[int]]:
        """Each row's prompt as the policy continues it (`prompt_ids`), cut to its last `max_prompt_length` tokens."""
        return [render.prompt_ids(self.tokenizer, r["prompt"])[-self.max_prompt_length :] for r in rows]

    def batches_per_epoch(self, batch_size: int) -> int:
        return max(1, len(self) // (batch_size * self.world))

    def step_batch(self, step: int, batch_size: int) -> list[int]:
        """This rank's row indices for `step`: a seeded permutation per epoch."""
        epoch, index = divmod(step, self.batches_per_epoch(batch_size))
        return self._share(self._order(self.seed + epoch), index, batch_size)

    def score_norm_batches(self, count: int, batch_size: int) -> list[list[int]]:
        """This rank's row indices for `count` samples over every process (at least one batch each),
        from a permutation of their own (seed + 1): the score scale is estimated before step 1."""
        batches = max(1, math.ceil(count / (batch_size * self.world)))
        order = self._order(self.seed + 1)
        return [self._share(order, b, batch_size) for b in range(batches)]

    def padded(self, token_lists: list[list[int]], device) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, P] left-padded prompt ids and their attention mask."""
        batch = self.tokenizer.pad({"input_ids": token_lists}, return_tensors="pt")
        return batch["input_ids"].to(device), batch["attention_mask"].to(device)

    def padded_rows(self, indices: list[int], device) -> tuple[torch.Tensor, torch.Tensor]:
        return self.padded([self.ids[i] for i in indices], device)

    def _order(self, seed: int) -> list[int]:
        return torch.randperm(len(self), generator=torch.Generator().manual_seed(seed)).tolist()

    def _share(self, order: list[int], index: int, batch_size: int) -> list[int]:
        """Batch `index` of this rank in `order`, wrapping around when the rows run out."""
        start = (index * self.world + self.rank) * batch_size
        needed = start + batch_size
        if needed > len(order):  # fewer prompts than the batches ask for: wrap around
            order = order * math.ceil(needed / len(order))
        return order[start:needed]
