"""PPO for language models on one shared base model (TRL removed its PPOTrainer in 1.13).

Roles, all on the same base weights in memory:
  policy    - the SFT model + a trainable LoRA adapter (peft adapter "default");
  reference - the same model with adapters disabled (the KL anchor);
  reward    - the RM adapter + RewardHead from the rm stage (frozen), and/or reward functions
              (`rewards/sources.py`; a `separate` RM is the one model outside the shared base);
  critic    - a strategy from `critic.py`: a head on the policy's own hidden states, or its own
              LoRA adapter + head; both start from the RM's head on the returns' scale (or at 0).

One step, CleanRL-style, as `train_step` lists it: 1. rollout  2. score  3. reference and old
logprobs/values  4-5. targets (KL-shaped rewards, GAE)  6. PPO epochs  7. metrics. The maths is in
`losses.py` and `targets.py`.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from accelerate import Accelerator
from trl.trainer.utils import disable_dropout_in_model

from ...config.schema import Preset
from ...data import render
from ...data.jsonl import is_conversational, split_rows
from ...errors import PresetError
from ...models.loading import load_tokenizer, resolved_model_name
from ...rewards.sources import RewardSources, columns_of
from ...rundir import (
    RunDir,
    append_jsonl,
    append_metrics,
    atomic_directory,
    read_metrics,
    trim_metrics,
    write_final_marker,
)
from ...runtime import use_cpu, write_rank_digest
from ..common import as_list, sampling_policy, use_bf16, weights_dtype
from . import losses
from .critic import POLICY, build_critic
from .gradients import average_gradients
from .rollout import Forward, Rollout, response_forward, sample_responses
from .targets import Targets, ppo_targets

logger = logging.getLogger(__name__)

REWARD = "reward"
PHASES = ("generate", "reward", "reference", "old_logprobs", "update")


class PhaseTimer:
    """Wall time per phase of a step, after the device's queued work (GPU kernels run asynchronously)."""

    def __init__(self, device: torch.device):
        self.device, self.seconds = device, dict.fromkeys(PHASES, 0.0)

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    @contextmanager
    def __call__(self, phase: str):
        start = self.now()
        yield
        self.seconds[phase] += self.now() - start


class PPOTrainer:
    """Owns the shared model, the optimizer and the loop; `train()` runs to `total_steps`."""

    def __init__(self, preset: Preset, run: RunDir, accelerator: Accelerator | None = None):
        self.preset, self.run, self.cfg = preset, run, preset.training.ppo
        self.accelerator = accelerator or _accelerator(preset, run)
        self.device = self.accelerator.device
        self.tokenizer = load_tokenizer(preset.model_name)
        self.tokenizer.padding_side, self.tokenizer.truncation_side = "left", "left"
        # rows carry the file's other columns with them (for reward functions), through eval_split too
        self.prompt_rows, held_out = split_rows(
            preset.data, preset.training.seed, columns=bool(preset.training.reward_funcs)
        )
        self.prompts = self._tokenize_prompts(self.prompt_rows)
        self.stop_ids = render.stop_token_ids(self.tokenizer, is_conversational(self.prompt_rows[0]["prompt"]))
        self.eval_rows = self._eval_share(held_out or [])
        checkpointing = preset.training.gradient_checkpointing
        self.model = sampling_policy(preset, self.tokenizer, POLICY, checkpointing).to(self.device)
        self.rewards = RewardSources.from_preset(
            preset, self.model, self.tokenizer, self.device, REWARD, dtype=weights_dtype(preset)
        )
        rm_adapter = self.rewards.rm.shared_checkpoint if self.rewards.rm is not None else ""
        self.critic = build_critic(
            self.cfg.critic, self.model, self.rewards.critic_init_head(), self.device, rm_adapter
        )
        # dropout makes pi_old != pi on identical weights: off everywhere, once every adapter is in
        # place (an adapter loaded later, the RM's or the critic's, brings its own LoRA dropout)
        disable_dropout_in_model(self.model)
        self.model.set_adapter(POLICY)
        self.policy_params = [p for n, p in self.model.named_parameters() if "lora_" in n and f".{POLICY}." in n]
        self.critic_params = self.critic.parameters()
        self.optimizer = torch.optim.AdamW(self.policy_params + self.critic_params, lr=preset.training.lr, eps=1e-5)
        self.total_steps = self._total_steps()
        self.scheduler = self._scheduler()
        self.step = 0
        self.score_stats: tuple[float, float] | None = None  # total reward (mean, std) under the SFT policy

    # ------------------------------------------------------------------------------------ setup

    def _tokenize_prompts(self, rows: list[dict]) -> list[list[int]]:
        """Each prompt as the policy continues it (`prompt_ids`), cut to its last `max_prompt_length` tokens."""
        keep = self.preset.data.max_prompt_length
        return [render.prompt_ids(self.tokenizer, r["prompt"])[-keep:] for r in rows]

    def _eval_share(self, rows: list[dict]) -> list[dict]:
        """The held-out prompts (`data.eval_path` or `data.eval_split`), at most `eval_prompts`, a
        multiple of the process count: every process must call `generate` equally often (synced_gpus).
        """
        if not rows:
            return []
        if self.cfg.eval_prompts > 0:
            rows = rows[: self.cfg.eval_prompts]
        world = self.accelerator.num_processes
        return rows[: len(rows) // world * world] or rows[:1] * world

    def _total_steps(self) -> int:
        t = self.preset.training
        if t.max_steps > 0:
            return t.max_steps
        per_epoch = max(1, len(self.prompts) // (t.batch_size * self.accelerator.num_processes))
        return max(1, math.ceil(t.epochs * per_epoch))

    def _scheduler(self):
        from transformers import get_scheduler

        warmup = int(self.preset.training.warmup_ratio * self.total_steps)
        return get_scheduler(self.preset.training.lr_scheduler, self.optimizer, warmup, self.total_steps)

    # ------------------------------------------------------------------------------------ data

    def prompt_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """This rank's prompts for `step`: a seeded permutation per epoch, so a resume needs only the step."""
        bs, world = self.preset.training.batch_size, self.accelerator.num_processes
        per_epoch = max(1, len(self.prompts) // (bs * world))
        epoch, index = divmod(step, per_epoch)
        order = torch.randperm(
            len(self.prompts), generator=torch.Generator().manual_seed(self.preset.training.seed + epoch)
        )
        start = (index * world + self.accelerator.process_index) * bs
        chosen = order[start : start + bs].tolist()
        if len(chosen) < bs:  # fewer prompts than one batch: wrap around
            chosen = (chosen + order.tolist() * bs)[:bs]
        return (*self._padded(chosen), chosen)

    def _padded(self, rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.tokenizer.pad({"input_ids": [self.prompts[i] for i in rows]}, return_tensors="pt")
        return batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)

    # ------------------------------------------------------------------------------------ phases

    def response_texts(self, roll: Rollout) -> list[str]:
        """Each sampled response as text, up to (not including) its first stop token."""
        stops = torch.as_tensor(self.stop_ids, device=roll.response_ids.device)
        answer = roll.response_mask & ~torch.isin(roll.response_ids, stops)
        return [
            self.tokenizer.decode(ids[keep], skip_special_tokens=True) for ids, keep in zip(roll.response_ids, answer)
        ]

    def sample(self, prompt_ids, prompt_mask) -> Rollout:
        """1. Responses of the policy (pure sampling at `temperature`), in eval mode for the KV cache."""
        self.model.eval()
        return sample_responses(
            self.model,
            prompt_ids,
            prompt_mask,
            max_new_tokens=self.cfg.max_gen_len,
            temperature=self.cfg.temperature,
            stop_ids=self.stop_ids,
            pad_token_id=self.tokenizer.pad_token_id,
            synced_gpus=self.accelerator.num_processes > 1,
        )

    def score(self, roll: Rollout, rows: list[dict]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """2. [B] raw total reward and {"reward/<name>": [B]} per source, for the prompts of `rows`.

        The RM reads each response rendered with its prompt as it was trained (`reward_ids`):
        re-tokenising from text costs little and makes "scored as trained" hold for chat templates,
        whose rendered conversation differs from the sampled ids (the template's closing tokens).
        Reward functions get the texts and the rows' other columns (`RewardSources.score`).
        """
        prompts = [r["prompt"] for r in rows]
        return self.rewards.score(prompts, self.response_texts(roll), columns_of(rows))

    @torch.no_grad()
    def reference_logprobs(self, roll: Rollout) -> torch.Tensor:
        """3a. [B, R] log pi_ref of the sampled tokens: the same model with every adapter off."""
        with self.model.disable_adapter():
            return self._forward(roll).logprobs

    def fuses_old_pass(self) -> bool:
        """With one minibatch and a critic inside the policy's pass, the first update pass sees the
        weights that sampled the batch: its logprobs and values *are* the old ones (a measured win)."""
        return self.cfg.num_mini_batches == 1 and self.critic.in_policy_pass

    def old_pass(self, roll: Rollout) -> Forward:
        """3b. pi_old and V_old. When `fuses_old_pass()` this is the first update pass itself, with
        gradients (train mode), handed to `update`; otherwise a pass of its own without gradients."""
        if self.fuses_old_pass():
            self.model.train()
            return self._forward(roll, with_entropy=True)
        with torch.no_grad():
            forward = self._forward(roll)
            values = forward.values if self.critic.in_policy_pass else self.critic.values(*self._sequences(roll))
        return Forward(forward.logprobs, values, None)

    def targets(self, roll: Rollout, scores: torch.Tensor, ref_logprobs: torch.Tensor, old: Forward) -> Targets:
        """4-5. KL-shaped per-token rewards and GAE from the old pass (see `targets.ppo_targets`)."""
        return ppo_targets(
            self._normalized(scores),
            roll.contains_eos,
            roll.response_mask,
            old.logprobs,
            ref_logprobs,
            old.values,
            self.cfg,
        )

    def update(self, roll: Rollout, targets: Targets, fused: Forward | None = None) -> dict[str, torch.Tensor]:
        """6. `epochs` passes of minibatch updates with the clipped objectives.

        `fused`: the first pass over the whole batch, already run by `old_pass` (one minibatch only).
        """
        cfg = self.cfg
        self.model.train()
        n = len(roll)
        mb_size = n // cfg.num_mini_batches
        stats: dict[str, list[torch.Tensor]] = {}
        generator = torch.Generator().manual_seed(self.preset.training.seed * 100003 + self.step)
        for epoch in range(cfg.epochs):
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, mb_size):
                if fused is not None and epoch == 0:  # one minibatch = the whole batch, in rollout order
                    idx, forward = torch.arange(n, device=self.device), fused
                else:
                    idx = order[start : start + mb_size].to(self.device)
                    forward = self._forward(roll, idx, with_entropy=True)
                for key, value in self._minibatch_step(roll, targets, idx, forward).items():
                    stats.setdefault(key, []).append(value)
        return {k: torch.stack(v).mean() for k, v in stats.items()}

    def _minibatch_step(self, roll: Rollout, targets: Targets, idx, forward: Forward) -> dict[str, torch.Tensor]:
        """Losses, backward, gradient sync, separate clipping of policy and critic, one optimizer step."""
        cfg, mask = self.cfg, roll.response_mask[idx]
        pg_loss, pg_stats = losses.policy_loss(
            forward.logprobs, targets.logprobs[idx], targets.advantages[idx], mask, cfg.clip_range
        )
        entropy_mean = losses.masked_mean(forward.entropy, mask)
        loss = pg_loss - cfg.entropy_coef * entropy_mean
        if self.critic.in_policy_pass:
            values = forward.values
        else:  # free the policy's graph before the critic's own pass
            loss.backward()
            loss = 0.0
            values = self.critic.values(*self._sequences(roll, idx))
        vf_loss, vf_stats = losses.value_loss(
            values, targets.values[idx], targets.returns[idx], mask, cfg.clip_range_value
        )
        (loss + cfg.vf_coef * vf_loss).backward()
        if self.accelerator.num_processes > 1:
            average_gradients(self.policy_params + self.critic_params, self.accelerator.num_processes)
        # clipped apart: a critic far from its targets must not shrink the policy's step
        max_norm = self.preset.training.max_grad_norm
        policy_norm = torch.nn.utils.clip_grad_norm_(self.policy_params, max_norm)
        critic_norm = torch.nn.utils.clip_grad_norm_(self.critic_params, max_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {
            "ppo_loss": pg_loss.detach(),
            "value_loss": vf_loss.detach(),
            "entropy": entropy_mean.detach(),
            "grad_norm_policy": policy_norm.detach(),
            "grad_norm_critic": critic_norm.detach(),
            **pg_stats,
            **vf_stats,
        }

    def _sequences(self, roll: Rollout, idx=None) -> tuple[torch.Tensor, torch.Tensor, int]:
        if idx is None:
            return roll.input_ids, roll.attention_mask, roll.n_prompt
        return roll.input_ids[idx], roll.attention_mask[idx], roll.n_prompt

    def _forward(self, roll: Rollout, idx=None, with_entropy: bool = False) -> Forward:
        """The active adapter's pass over (part of) the rollout; values too when the critic lives in it."""
        return response_forward(
            self.model,
            *self._sequences(roll, idx),
            self.cfg.temperature,
            value_head=self.critic.head if self.critic.in_policy_pass else None,
            with_entropy=with_entropy,
            entropy_grad=self.cfg.entropy_coef > 0,
        )

    # ------------------------------------------------------------------------------------ one step

    def train_step(self) -> dict[str, float]:
        """One PPO step on one rollout batch, phase by phase; returns the logged metrics."""
        self.ensure_score_scale()
        timer = PhaseTimer(self.device)
        start = timer.now()
        prompt_ids, prompt_mask, rows = self.prompt_batch(self.step)
        with timer("generate"):
            roll = self.sample(prompt_ids, prompt_mask)  # 1. rollout
        with timer("reward"):
            scores, parts = self.score(roll, [self.prompt_rows[i] for i in rows])  # 2. raw rewards
        with timer("reference"):
            ref_logprobs = self.reference_logprobs(roll)  # 3a. pi_ref
        with timer("old_logprobs"):
            old = self.old_pass(roll)  # 3b. pi_old, V_old (fused: the first update pass)
            targets = self.targets(roll, scores, ref_logprobs, old)  # 4-5. rewards, GAE
        with timer("update"):
            update_stats = self.update(roll, targets, fused=old if self.fuses_old_pass() else None)  # 6
        self.scheduler.step()
        self.step += 1
        self._last = (roll, targets, scores, rows)
        return self._step_metrics(roll, targets, scores, parts, update_stats, timer, timer.now() - start)  # 7

    def _step_metrics(self, roll, targets, scores, parts, update_stats, timer: PhaseTimer, elapsed: float) -> dict:
        """7. The step's numbers, averaged over processes. `reward_mean` is the raw total, `reward/<name>`
        each source's raw (unweighted) mean."""
        mask = roll.response_mask
        local = {
            "reward_mean": scores.mean(),
            "reward_std": scores.std(unbiased=False),
            **{name: values.nanmean() for name, values in parts.items()},
            "kl_divergence": targets.kl.sum(dim=1).mean(),
            "response_length": mask.sum(dim=1).float().mean(),
            "no_eos_fraction": (~roll.contains_eos).float().mean(),
            "advantage_mean": losses.masked_mean(targets.advantages, mask),
            "value_mean": losses.masked_mean(targets.values, mask),
            **update_stats,
        }
        keys = list(local)
        reduced = self.accelerator.reduce(torch.stack([local[k].float() for k in keys]).to(self.device), "mean")
        metrics = {"step": self.step, **{k: v.item() for k, v in zip(keys, reduced)}}
        t = timer.seconds
        generated = mask.sum().item() * self.accelerator.num_processes
        metrics.update(
            learning_rate=self.scheduler.get_last_lr()[0],
            time_generate=t["generate"],
            time_reward=t["reward"],
            time_reference=t["reference"],
            time_old_logprobs=t["old_logprobs"],
            time_score=t["reward"] + t["reference"] + t["old_logprobs"],
            time_train=t["update"],
            time_step=elapsed,
            tokens_per_second=generated / elapsed,
            generated_tokens_per_second=generated / max(t["generate"], 1e-9),
        )
        return metrics

    # ------------------------------------------------------------------------------------ score scale

    def _normalized(self, scores: torch.Tensor) -> torch.Tensor:
        """Total rewards in units of the SFT policy's reward spread ("N implementation details", 2.4)."""
        if not self.cfg.normalize_scores:
            return scores
        mean, std = self.score_stats
        return (scores - mean) / std

    def ensure_score_scale(self) -> dict[str, float]:
        """Before step 1: the total reward's mean/std under the SFT policy, and the critic on that scale.

        Estimated once from `score_norm_samples` responses to training prompts over every process
        (the policy adapter starts at zero, so the policy *is* the SFT model), then kept and
        checkpointed for the whole run. Returns what to log, or {} when there was nothing to do.
        """
        if not self.cfg.normalize_scores or self.score_stats is not None:
            return {}
        scores, rm_share = self._sft_scores(self.cfg.score_norm_samples)
        everyone = self.accelerator.gather(scores)
        mean, std = everyone.mean().item(), everyone.std(unbiased=False).clamp(min=1e-6).item()
        self.score_stats = (mean, std)
        if self.step == 0:  # a resumed run keeps its trained critic
            # the critic's head estimates the RM's weighted part of the total (or nothing: a zero head),
            # so it is shifted by that part's mean; the other sources' mean is what it has to learn
            self.critic.rescale(self.accelerator.gather(rm_share).mean().item(), std)
        logger.info(
            "reward normalisation from %d samples of the SFT policy: mean %.4f, std %.4f", len(everyone), mean, std
        )
        return {"score_norm_mean": mean, "score_norm_std": std, "score_norm_samples": len(everyone)}

    @torch.no_grad()
    def _sft_scores(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """[>= count / processes] raw total rewards of this rank's share of `count` samples, and the
        RM's weighted part of them (zeros without an RM)."""
        bs, world = self.preset.training.batch_size, self.accelerator.num_processes
        batches = max(1, math.ceil(count / (bs * world)))
        order = torch.randperm(
            len(self.prompts), generator=torch.Generator().manual_seed(self.preset.training.seed + 1)
        )
        order = (order.tolist() * math.ceil(batches * bs * world / len(order)))[: batches * bs * world]
        scores, rm_share = [], []
        for b in range(batches):
            start = (b * world + self.accelerator.process_index) * bs
            rows = order[start : start + bs]
            roll = self.sample(*self._padded(rows))
            total, parts = self.score(roll, [self.prompt_rows[i] for i in rows])
            scores.append(total)
            share = self.rewards.rm_share(parts)
            rm_share.append(share if share is not None else torch.zeros_like(total))
        return torch.cat(scores), torch.cat(rm_share)

    # ------------------------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Sample and score the held-out prompts; append the generations to eval_samples.jsonl.

        Returns `eval_reward_mean` (the raw total reward), `eval_reward/<name>` per source,
        `eval_response_length` and `eval_no_eos_fraction` over every process's share, the numbers to
        compare before and after training.
        """
        from accelerate.utils import gather_object

        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        mine = self.eval_rows[rank::world]
        bs = self.preset.training.batch_size
        records, scores, lengths, no_eos = [], [], [], []
        parts: dict[str, list[torch.Tensor]] = {}
        for start in range(0, len(mine), bs):
            rows = mine[start : start + bs]
            batch = self.tokenizer.pad({"input_ids": self._tokenize_prompts(rows)}, return_tensors="pt")
            roll = self.sample(batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device))
            prompts = [r["prompt"] for r in rows]
            batch_scores, batch_parts = self.score(roll, rows)
            scores.append(batch_scores)
            for name, values in batch_parts.items():
                parts.setdefault(name, []).append(values)
            lengths.append(roll.response_mask.sum(dim=1).float())
            no_eos.append((~roll.contains_eos).float())
            for prompt, text, value in zip(prompts, self.response_texts(roll), batch_scores.tolist()):
                records.append({"step": self.step, "prompt": prompt, "response": text, "reward": value})
        names = ["eval_reward_mean", "eval_response_length", "eval_no_eos_fraction", *(f"eval_{n}" for n in parts)]
        local = torch.stack(
            [
                torch.cat(scores).mean(),
                torch.cat(lengths).mean(),
                torch.cat(no_eos).mean(),
                *(torch.cat(values).nanmean() for values in parts.values()),
            ]
        )
        reduced = self.accelerator.reduce(local.to(self.device), "mean").tolist()
        everyone = gather_object(records) if world > 1 else records
        if self.accelerator.is_main_process:
            append_jsonl(self.run.eval_samples, everyone, ensure_ascii=False)
        return dict(zip(names, reduced))

    # ------------------------------------------------------------------------------------ loop

    def train(self, resume_from: str | None = None) -> dict[str, float]:
        from accelerate.utils import set_seed
        from tqdm.auto import tqdm

        # every process samples its own stream (the weights were built before, identical everywhere)
        set_seed(self.preset.training.seed, device_specific=True)
        if resume_from:
            self.load_checkpoint(Path(resume_from))
        main = self.accelerator.is_main_process
        self._start_trackers()
        metrics: dict[str, float] = {}
        save_every = self.preset.training.save_steps
        # closed however the loop ends: an error (a reward function's, say) then starts a line of its own
        with tqdm(total=self.total_steps, initial=self.step, desc="ppo", disable=not main, dynamic_ncols=True) as bar:
            before = self.ensure_score_scale()
            if self.step == 0 and (before or self.eval_rows):
                self._log({"step": 0, **before, **(self.evaluate() if self.eval_rows else {})})
            while self.step < self.total_steps:
                metrics = self.train_step()
                self._log(metrics)
                bar.set_postfix(reward=f"{metrics['reward_mean']:.3f}", kl=f"{metrics['kl_divergence']:.3f}")
                bar.update(1)
                if self.cfg.sample_every and (self.step % self.cfg.sample_every == 0 or self.step == 1) and main:
                    self._write_samples()
                if self.step % save_every == 0 or self.step == self.total_steps:
                    self.save_checkpoint()
        if self.eval_rows:
            final_eval = self.evaluate()
            self._log({"step": self.step, **final_eval})
            metrics = {**metrics, **final_eval}
        trainable = self.policy_params + self.critic_params
        names = {id(p): n for n, p in self.model.named_parameters()}
        head = {id(p): f"critic_head.{n}" for n, p in self.critic.head.named_parameters()}
        write_rank_digest([({**names, **head}[id(p)], p) for p in trainable])
        for tracker in self.accelerator.trackers:  # not end_training(): it also ends the process group
            tracker.finish()
        return metrics

    def _start_trackers(self) -> None:
        """`training.report_to` through accelerate's trackers, as the TRL stages log through transformers'."""
        if self.accelerator.log_with:
            from omegaconf import OmegaConf

            flat = _flatten(OmegaConf.to_container(OmegaConf.structured(self.preset)))
            self.accelerator.init_trackers("ppo", config=flat)

    def _log(self, metrics: dict) -> None:
        """One metrics.jsonl line, and the same numbers to every tracker (`train/<name>`), main process only."""
        if not self.accelerator.is_main_process:
            return
        append_metrics(self.run.metrics, metrics)
        if self.accelerator.log_with:
            values = {f"train/{k}": v for k, v in metrics.items() if k != "step"}
            self.accelerator.log(values, step=metrics["step"])

    def _write_samples(self) -> None:
        """`samples.jsonl`: the prompt as written in the data file, the response as text, its raw RM score."""
        roll, _targets, scores, rows = self._last
        n = min(self.cfg.num_samples, len(roll))
        texts = self.response_texts(roll)
        records = [
            {
                "step": self.step,
                "prompt": self.prompt_rows[rows[i]]["prompt"],
                "response": texts[i],
                "reward": scores[i].item(),
            }
            for i in range(n)
        ]
        append_jsonl(self.run.samples, records, ensure_ascii=False)

    # ------------------------------------------------------------------------------------ state

    def _rng_state(self) -> dict:
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }

    def _state(self, rng_states: list[dict]) -> dict:
        from peft import get_peft_model_state_dict

        return {
            "step": self.step,
            "score_stats": self.score_stats,
            "policy": get_peft_model_state_dict(self.model, adapter_name=POLICY),
            "critic": self.critic.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_states,  # one per process, in rank order
        }

    def save_checkpoint(self) -> None:
        """`checkpoints/checkpoint-<step>/` written atomically with every process's RNG state; the
        oldest beyond save_total_limit go."""
        from accelerate.utils import gather_object

        rng = self._rng_state()
        rng_states = gather_object([rng]) if self.accelerator.num_processes > 1 else [rng]
        if self.accelerator.is_main_process:
            target = self.run.checkpoint_dir(self.step)
            with atomic_directory(target) as tmp:
                torch.save(self._state(rng_states), tmp / "ppo_state.pt")
                (tmp / "trainer_state.json").write_text(json.dumps({"global_step": self.step}) + "\n")
            self.run.prune_checkpoints(self.preset.training.save_total_limit)
        self.accelerator.wait_for_everyone()

    def load_checkpoint(self, path: Path) -> None:
        from peft import set_peft_model_state_dict

        # on the CPU: the RNG states must stay there, and the rest is copied onto the parameters' device
        state = torch.load(path / "ppo_state.pt", map_location="cpu", weights_only=False)
        set_peft_model_state_dict(self.model, state["policy"], adapter_name=POLICY)
        self.critic.load_state_dict(state["critic"])
        self.model.set_adapter(POLICY)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self._restore_rng(state["rng"], path)
        self.step = state["step"]
        self.score_stats = state.get("score_stats")
        if self.accelerator.is_main_process:
            trim_metrics(self.run.samples, self.step)
            trim_metrics(self.run.eval_samples, self.step)

    def _restore_rng(self, states: list[dict], path: Path) -> None:
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        if len(states) != world:
            logger.warning(
                "%s was saved by %d process(es), resuming on %d: sampling continues from fresh per-process seeds",
                path,
                len(states),
                world,
            )
            return
        mine = states[rank]
        torch.set_rng_state(mine["torch"].cpu())
        if mine["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([rng.cpu() for rng in mine["cuda"]])  # CPU ByteTensors only

    def save_final(self) -> None:
        """`final/`: the policy adapter (loadable as model_name), the critic, preset, tokenizer."""
        if self.accelerator.is_main_process:
            with atomic_directory(self.run.final) as tmp:
                self.model.save_pretrained(tmp, selected_adapters=[POLICY])
                self.tokenizer.padding_side = "right"
                self.tokenizer.save_pretrained(tmp)
                self.critic.save(tmp)
                if self.run.preset.is_file():
                    shutil.copy(self.run.preset, tmp / "preset.yml")
                if self.cfg.save_merged:
                    merged = copy.deepcopy(self.model).merge_and_unload(adapter_names=[POLICY])
                    merged.save_pretrained(tmp / "merged")
                    self.tokenizer.save_pretrained(tmp / "merged")
                write_final_marker(tmp, stage="ppo", base=resolved_model_name(self.preset.model_name), steps=self.step)
        self.accelerator.wait_for_everyone()


def _accelerator(preset: Preset, run: RunDir) -> Accelerator:
    """The run's Accelerator, with `training.report_to`'s trackers (TensorBoard under `<output_dir>/tensorboard`)."""
    from accelerate.tracking import get_available_trackers
    from accelerate.utils import LoggerType, ProjectConfiguration

    wanted = as_list(preset.training.report_to)
    known = set(LoggerType.list()) - {"all"}
    unknown = [name for name in wanted if name not in known and name != "all"]
    if unknown:
        raise PresetError(f"training.report_to: unknown logger {unknown[0]!r}; choose from {', '.join(sorted(known))}")
    available = {str(t) for t in get_available_trackers()}
    missing = [name for name in wanted if name != "all" and name not in available]
    for name in missing:
        logger.warning("training.report_to: %s is not installed here; PPO does not log to it", name)
    log_with = [name for name in wanted if name not in missing]
    project = ProjectConfiguration(project_dir=str(run.root), logging_dir=str(run.tensorboard))
    return Accelerator(cpu=use_cpu(), log_with=log_with or None, project_config=project)


def _flatten(tree: dict, prefix: str = "") -> dict:
    """{"training": {"lr": 1e-4}} -> {"training.lr": 1e-4}; lists and None as text (tracker configs take scalars)."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return flat


def run_ppo(preset: Preset, run: RunDir, resume_from: str | None) -> dict:
    if use_bf16(preset) and not torch.cuda.is_available():
        logger.warning("bf16 requested without a GPU: PPO runs in the model's dtype on the CPU")
    trainer = PPOTrainer(preset, run)
    metrics = trainer.train(resume_from=resume_from)
    trainer.save_final()
    history = read_metrics(run.metrics)
    return {**metrics, "steps": len(history)}
