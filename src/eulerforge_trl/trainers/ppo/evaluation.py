"""PPO's held-out evaluation: sample and score the held-out prompts before the first step and after
the last, so the numbers to compare (`eval_reward_mean`, ...) come from prompts it never trained on."""

from __future__ import annotations

import torch

from ...rundir import append_jsonl


class HeldOutEvaluation:
    """The held-out prompts (`data.eval_path` or `data.eval_split`), at most `eval_prompts`, a multiple
    of the process count: every process must call `generate` equally often (synced_gpus)."""

    def __init__(self, rows: list[dict], eval_prompts: int, accelerator, samples_path, batch_size: int):
        world = accelerator.num_processes
        if rows and eval_prompts > 0:
            rows = rows[:eval_prompts]
        self.rows = (rows[: len(rows) // world * world] or rows[:1] * world) if rows else []
        self.accelerator, self.samples_path, self.batch_size = accelerator, samples_path, batch_size

    def __bool__(self) -> bool:
        return bool(self.rows)

    @torch.no_grad()
    def __call__(self, step: int, scorer) -> dict[str, float]:
        """Sample and score this process's share with `scorer` (a `scoring.RolloutScorer`); append the
        generations to eval_samples.jsonl.

        Returns `eval_reward_mean` (the raw total reward), `eval_reward/<name>` per source,
        `eval_response_length` and `eval_no_eos_fraction` over every process's share.
        """
        from accelerate.utils import gather_object

        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        mine = self.rows[rank::world]
        records, scores, lengths, no_eos = [], [], [], []
        parts: dict[str, list[torch.Tensor]] = {}
        for start in range(0, len(mine), self.batch_size):
            rows = mine[start : start + self.batch_size]
            roll = scorer.sample_rows(rows)
            batch_scores, batch_parts = scorer.score(roll, rows, step)
            scores.append(batch_scores)
            for name, values in batch_parts.items():
                parts.setdefault(name, []).append(values)
            lengths.append(roll.response_mask.sum(dim=1).float())
            no_eos.append((~roll.contains_eos).float())
            for row, text, value in zip(rows, scorer.texts(roll), batch_scores.tolist()):
                records.append({"step": step, "prompt": row["prompt"], "response": text, "reward": value})
        names = ["eval_reward_mean", "eval_response_length", "eval_no_eos_fraction", *(f"eval_{n}" for n in parts)]
        local = torch.stack(
            [
                torch.cat(scores).mean(),
                torch.cat(lengths).mean(),
                torch.cat(no_eos).mean(),
                *(torch.cat(values).nanmean() for values in parts.values()),
            ]
        )
        reduced = self.accelerator.reduce(local.to(self.accelerator.device), "mean").tolist()
        everyone = gather_object(records) if world > 1 else records
        if self.accelerator.is_main_process:
            append_jsonl(self.samples_path, everyone, ensure_ascii=False)
        return dict(zip(names, reduced))
