"""PPO for language models on one shared base model (TRL removed its PPOTrainer in 1.13).

Roles, all on the same base weights in memory:
  policy    - the SFT model + a trainable LoRA adapter (peft adapter "default");
  reference - the same model with adapters disabled (the KL anchor);
  reward    - the RM adapter + RewardHead from the rm stage (frozen);
  critic    - `value_head`: a head on the policy's own hidden states (no extra pass), or
              `adapter`: its own LoRA adapter + head, both initialised from the RM.

One step, CleanRL-style: 1. rollout  2. score  3. reference + old logprobs/values
4. KL-shaped rewards  5. GAE  6. PPO epochs  7. log. The maths is in `losses.py`.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from trl.trainer.utils import disable_dropout_in_model

from ...config.schema import Preset
from ...data import render
from ...data.jsonl import is_conversational, split_rows
from ...errors import ModelError
from ...models.loading import load_causal_lm, load_tokenizer, resolved_model_name
from ...models.reward_head import RewardHead, RewardScorer
from ...rundir import RunDir, atomic_directory, read_metrics, trim_metrics, write_final_marker
from ...runtime import use_cpu, write_rank_digest
from ..common import as_list, lora_config, use_bf16, weights_dtype
from . import losses
from .gradients import average_gradients
from .rollout import Rollout, response_forward, sample_responses, value_forward

logger = logging.getLogger(__name__)

POLICY = "default"  # peft writes the "default" adapter at the top of a directory: final/ loads as a model
REWARD = "reward"
CRITIC = "critic"


@dataclass
class StepTimes:
    generate: float = 0.0
    reward: float = 0.0
    reference: float = 0.0
    old_logprobs: float = 0.0
    update: float = 0.0


class PPOTrainer:
    """Owns the shared model, the optimizer and the loop; `train()` runs to `total_steps`."""

    def __init__(self, preset: Preset, run: RunDir, accelerator: Accelerator | None = None):
        self.preset, self.run, self.cfg = preset, run, preset.training.ppo
        self.accelerator = accelerator or Accelerator(cpu=use_cpu())
        self.device = self.accelerator.device
        self.tokenizer = load_tokenizer(preset.model_name)
        self.tokenizer.padding_side, self.tokenizer.truncation_side = "left", "left"
        self.prompt_rows, held_out = split_rows(preset.data, preset.training.seed)
        self.prompts = self._tokenize_prompts(self.prompt_rows)
        self.stop_ids = render.stop_token_ids(self.tokenizer, is_conversational(self.prompt_rows[0]["prompt"]))
        self.eval_rows = self._eval_share(held_out or [])
        self.model = self._build_policy()
        _check_reward_base_name(preset)
        self.scorer = RewardScorer.attach(
            self.model,
            preset.training.reward_model.checkpoint_path or "",
            resolved_model_name(preset.model_name),
            REWARD,
        )
        self.value_head = RewardHead.from_linear(self.scorer.head.linear).to(self.device)  # value init = reward head
        if self.cfg.critic == "adapter":
            self._add_critic_adapter()
        # dropout makes pi_old != pi on identical weights: off everywhere, once every adapter is in
        # place (an adapter loaded later, the RM's or the critic's, brings its own LoRA dropout)
        disable_dropout_in_model(self.model)
        self.model.set_adapter(POLICY)
        self.optimizer = torch.optim.AdamW(self._trainable_parameters(), lr=preset.training.lr, eps=1e-5)
        self.total_steps = self._total_steps()
        self.scheduler = self._scheduler()
        self.step = 0
        self.score_stats: tuple[float, float] | None = None  # RM score (mean, std) under the SFT policy
        self.tb_writer = None

    # ------------------------------------------------------------------------------------ setup

    def _build_policy(self):
        from peft import get_peft_model
        from transformers import GenerationConfig

        base = load_causal_lm(self.preset.model_name, dtype=weights_dtype(self.preset), tokenizer=self.tokenizer)
        base.to(self.device)
        # generate() fills every setting we leave unset from the checkpoint's generation_config
        # (repetition_penalty, top_k, ...): samples would then not come from pi_old. A clean one
        # leaves only what `sample_responses` asks for: pure sampling at `temperature`.
        base.generation_config = GenerationConfig(
            bos_token_id=base.generation_config.bos_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        if self.preset.training.gradient_checkpointing:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            base.enable_input_require_grads()
        config = lora_config(self.preset, "CAUSAL_LM")
        config.lora_dropout = 0.0  # dropout makes pi_old != pi on identical weights: off everywhere in PPO
        return get_peft_model(base, config, adapter_name=POLICY)

    def _add_critic_adapter(self) -> None:
        checkpoint = self.preset.training.reward_model.checkpoint_path
        if checkpoint:
            self.model.load_adapter(checkpoint, adapter_name=CRITIC, is_trainable=True)
        else:
            self.model.add_adapter(CRITIC, copy.deepcopy(self.model.peft_config[POLICY]))

    def _trainable_parameters(self) -> list[torch.nn.Parameter]:
        adapters = [POLICY] + ([CRITIC] if self.cfg.critic == "adapter" else [])
        params = [
            p
            for name, p in self.model.named_parameters()
            if "lora_" in name and any(f".{a}." in name for a in adapters)
        ]
        return params + list(self.value_head.parameters())

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

    def _clock(self) -> float:
        """Wall time after the device's queued work: GPU kernels run asynchronously."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

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
        batch = self.tokenizer.pad({"input_ids": [self.prompts[i] for i in chosen]}, return_tensors="pt")
        return batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device), chosen

    # ------------------------------------------------------------------------------------ one step

    def fuses_old_pass(self) -> bool:
        """With one minibatch and the value-head critic, the first update pass sees the weights
        that sampled the batch: its logprobs and values *are* the old ones, so no separate pass."""
        return self.cfg.num_mini_batches == 1 and self.cfg.critic == "value_head"

    def response_texts(self, roll: Rollout) -> list[str]:
        """Each sampled response as text, up to (not including) its first stop token."""
        stops = torch.as_tensor(self.stop_ids, device=roll.response_ids.device)
        answer = roll.response_mask & ~torch.isin(roll.response_ids, stops)
        return [
            self.tokenizer.decode(ids[keep], skip_special_tokens=True) for ids, keep in zip(roll.response_ids, answer)
        ]

    def score(self, roll: Rollout, prompts: list) -> torch.Tensor:
        """[B] RM scores of the rollout, each response rendered with its prompt as the RM was trained (`reward_ids`).

        Re-tokenising from text costs little and makes "scored as trained" hold for chat templates,
        whose rendered conversation differs from the sampled ids (the template's closing tokens).
        """
        ids, mask = render.reward_batch(self.tokenizer, prompts, self.response_texts(roll), self.device)
        return self.scorer.score_ids(ids, mask)

    def sample(self, prompt_ids, prompt_mask) -> Rollout:
        """Responses of the policy (pure sampling at `temperature`), in eval mode for the KV cache."""
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

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Sample and score the held-out prompts; append the generations to eval_samples.jsonl.

        Returns `eval_reward_mean` (raw RM score), `eval_response_length` and `eval_no_eos_fraction`
        over every process's share, the numbers to compare before and after training.
        """
        from accelerate.utils import gather_object

        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        mine = self.eval_rows[rank::world]
        bs = self.preset.training.batch_size
        records, scores, lengths, no_eos = [], [], [], []
        for start in range(0, len(mine), bs):
            rows = mine[start : start + bs]
            batch = self.tokenizer.pad({"input_ids": self._tokenize_prompts(rows)}, return_tensors="pt")
            roll = self.sample(batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device))
            prompts = [r["prompt"] for r in rows]
            batch_scores = self.score(roll, prompts)
            scores.append(batch_scores)
            lengths.append(roll.response_mask.sum(dim=1).float())
            no_eos.append((~roll.contains_eos).float())
            for prompt, text, value in zip(prompts, self.response_texts(roll), batch_scores.tolist()):
                records.append({"step": self.step, "prompt": prompt, "response": text, "reward": value})
        local = torch.stack([torch.cat(scores).mean(), torch.cat(lengths).mean(), torch.cat(no_eos).mean()])
        reduced = self.accelerator.reduce(local.to(self.device), "mean").tolist()
        everyone = gather_object(records) if world > 1 else records
        if self.accelerator.is_main_process:
            with self.run.eval_samples.open("a", encoding="utf-8") as handle:
                handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in everyone)
        return dict(zip(("eval_reward_mean", "eval_response_length", "eval_no_eos_fraction"), reduced))

    def collect(self, prompt_ids, prompt_mask, rows: list[int], times: StepTimes) -> Rollout:
        """Phases 1-5: rollout, score, reference/old logprobs and values, shaped rewards, GAE.

        When `fuses_old_pass()`, phases 3b-5 wait for the first update pass (see `update`).
        """
        cfg, model = self.cfg, self.model
        t0 = self._clock()
        # 1. rollout
        roll = self.sample(prompt_ids, prompt_mask)
        t1 = self._clock()
        # 2. score: RM adapter + head on the same base, read at the last real token
        roll.scores = self.score(roll, [self.prompt_rows[i]["prompt"] for i in rows])
        t2 = self._clock()
        args = (roll.input_ids, roll.attention_mask, roll.n_prompt, cfg.temperature)
        with torch.no_grad():
            # 3a. reference logprobs (adapters off)
            with model.disable_adapter():
                ref_logprobs, _, _ = response_forward(model, *args)
            roll.ref_logprobs = ref_logprobs.masked_fill(~roll.response_mask, 0.0)
            t3 = self._clock()
            # 3b. old policy logprobs and values
            if not self.fuses_old_pass():
                head = self.value_head if cfg.critic == "value_head" else None
                logprobs, values, _ = response_forward(model, *args, value_head=head)
                if cfg.critic == "adapter":
                    model.set_adapter(CRITIC)
                    values = value_forward(model, roll.input_ids, roll.attention_mask, roll.n_prompt, self.value_head)
                    model.set_adapter(POLICY)
                self._set_old_pass(roll, logprobs, values)
            t4 = self._clock()
        times.generate, times.reward = t1 - t0, t2 - t1
        times.reference, times.old_logprobs = t3 - t2, t4 - t3
        return roll

    @torch.no_grad()
    def _set_old_pass(self, roll: Rollout, logprobs: torch.Tensor, values: torch.Tensor) -> None:
        """Store pi_old logprobs and V_old, then phases 4-5: KL-shaped rewards, GAE, advantages."""
        cfg, mask = self.cfg, roll.response_mask
        roll.logprobs = logprobs.detach().masked_fill(~mask, 0.0)
        roll.values = values.detach()
        # 4. per-token rewards: -kl_coef * KL, plus the (EOS-penalised) score at the last token
        scores = losses.penalize_missing_eos(
            self._normalized(roll.scores), roll.contains_eos, cfg.missing_eos_penalty, cfg.missing_eos_mode
        )
        rewards, roll.kl = losses.shape_rewards(
            scores, roll.logprobs, roll.ref_logprobs, mask, cfg.kl_coef, cfg.kl_estimator
        )
        if cfg.whiten_rewards:
            rewards = losses.masked_whiten(rewards, mask, shift_mean=False)
        # 5. GAE (gamma, lambda) and whitened advantages
        advantages, roll.returns = losses.compute_gae(rewards, roll.values, mask, cfg.gamma, cfg.lam)
        roll.advantages = losses.masked_whiten(advantages, mask)

    def _normalized(self, scores: torch.Tensor) -> torch.Tensor:
        """RM scores in units of the SFT policy's score spread ("N implementation details", 2.4).

        The statistics come from the first rollout, gathered over every process, and are kept
        (and checkpointed) for the whole run.
        """
        if not self.cfg.normalize_scores:
            return scores
        if self.score_stats is None:
            everyone = self.accelerator.gather(scores)
            self.score_stats = (everyone.mean().item(), everyone.std(unbiased=False).clamp(min=1e-6).item())
            logger.info("reward normalisation: mean %.4f, std %.4f", *self.score_stats)
        mean, std = self.score_stats
        return (scores - mean) / std

    def update(self, roll: Rollout) -> dict[str, float]:
        """Phase 6: `epochs` passes of minibatch updates with the clipped objectives."""
        cfg, model = self.cfg, self.model
        model.train()
        n = len(roll)
        mb_size = n // cfg.num_mini_batches
        stats: dict[str, list[torch.Tensor]] = {}
        generator = torch.Generator().manual_seed(self.preset.training.seed * 100003 + self.step)
        for _epoch in range(cfg.epochs):
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, mb_size):
                idx = order[start : start + mb_size].to(self.device)
                mb_ids, mb_attn, mb_mask = roll.input_ids[idx], roll.attention_mask[idx], roll.response_mask[idx]
                head = self.value_head if cfg.critic == "value_head" else None
                logprobs, values, entropy = response_forward(
                    model,
                    mb_ids,
                    mb_attn,
                    roll.n_prompt,
                    cfg.temperature,
                    value_head=head,
                    with_entropy=True,
                    entropy_grad=cfg.entropy_coef > 0,
                )
                if roll.logprobs is None:  # fused first pass: the whole batch, weights not yet updated
                    unpermute = torch.empty_like(idx).scatter_(0, idx, torch.arange(n, device=idx.device))
                    self._set_old_pass(roll, logprobs[unpermute], values[unpermute])
                pg_loss, pg_stats = losses.policy_loss(
                    logprobs, roll.logprobs[idx], roll.advantages[idx], mb_mask, cfg.clip_range
                )
                entropy_mean = losses.masked_mean(entropy, mb_mask)
                loss = pg_loss - cfg.entropy_coef * entropy_mean
                if cfg.critic == "adapter":  # the critic's own pass comes after the policy's backward
                    loss.backward()
                    model.set_adapter(CRITIC)
                    values = value_forward(model, mb_ids, mb_attn, roll.n_prompt, self.value_head)
                vf_loss, vf_stats = losses.value_loss(
                    values, roll.values[idx], roll.returns[idx], mb_mask, cfg.clip_range_value
                )
                if cfg.critic == "adapter":
                    (cfg.vf_coef * vf_loss).backward()
                    model.set_adapter(POLICY)
                else:
                    (loss + cfg.vf_coef * vf_loss).backward()
                self._sync_gradients()
                torch.nn.utils.clip_grad_norm_(
                    self.optimizer.param_groups[0]["params"], self.preset.training.max_grad_norm
                )
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                for key, value in {
                    "ppo_loss": pg_loss.detach(),
                    "value_loss": vf_loss.detach(),
                    "entropy": entropy_mean.detach(),
                    **pg_stats,
                    **vf_stats,
                }.items():
                    stats.setdefault(key, []).append(value)
        return {k: torch.stack(v).mean() for k, v in stats.items()}

    def _sync_gradients(self) -> None:
        """Average gradients across processes (see `gradients.average_gradients`)."""
        if self.accelerator.num_processes > 1:
            average_gradients(self.optimizer.param_groups[0]["params"], self.accelerator.num_processes)

    def train_step(self) -> dict[str, float]:
        """One PPO step (rollout batch); returns the logged metrics."""
        times = StepTimes()
        start = self._clock()
        prompt_ids, prompt_mask, rows = self.prompt_batch(self.step)
        roll = self.collect(prompt_ids, prompt_mask, rows, times)
        t_update = self._clock()
        update_stats = self.update(roll)
        times.update = self._clock() - t_update
        self.scheduler.step()
        self.step += 1
        # 7. log (averaged over processes)
        mask = roll.response_mask
        local = {
            "reward_mean": roll.scores.mean(),
            "reward_std": roll.scores.std(unbiased=False),
            "kl_divergence": roll.kl.sum(dim=1).mean(),
            "response_length": mask.sum(dim=1).float().mean(),
            "no_eos_fraction": (~roll.contains_eos).float().mean(),
            "advantage_mean": losses.masked_mean(roll.advantages, mask),
            "value_mean": losses.masked_mean(roll.values, mask),
            **update_stats,
        }
        keys = list(local)
        reduced = self.accelerator.reduce(torch.stack([local[k].float() for k in keys]).to(self.device), "mean")
        metrics = {"step": self.step, **{k: v.item() for k, v in zip(keys, reduced)}}
        elapsed = self._clock() - start
        generated = mask.sum().item() * self.accelerator.num_processes
        metrics.update(
            learning_rate=self.scheduler.get_last_lr()[0],
            time_generate=times.generate,
            time_reward=times.reward,
            time_reference=times.reference,
            time_old_logprobs=times.old_logprobs,
            time_score=times.reward + times.reference + times.old_logprobs,
            time_train=times.update,
            time_step=elapsed,
            tokens_per_second=generated / elapsed,
            generated_tokens_per_second=generated / max(times.generate, 1e-9),
        )
        self._last_rollout, self._last_rows = roll, rows
        return metrics

    # ------------------------------------------------------------------------------------ loop

    def train(self, resume_from: str | None = None) -> dict[str, float]:
        from tqdm.auto import tqdm

        if resume_from:
            self.load_checkpoint(Path(resume_from))
        main = self.accelerator.is_main_process
        if main and "tensorboard" in as_list(self.preset.training.report_to):
            from torch.utils.tensorboard import SummaryWriter

            self.tb_writer = SummaryWriter(log_dir=str(self.run.tensorboard))
        bar = tqdm(total=self.total_steps, initial=self.step, desc="ppo", disable=not main, dynamic_ncols=True)
        metrics: dict[str, float] = {}
        save_every = self.preset.training.save_steps
        if self.eval_rows and self.step == 0:
            self._log({"step": 0, **self.evaluate()})
        while self.step < self.total_steps:
            metrics = self.train_step()
            if main:
                self._log(metrics)
                bar.set_postfix(reward=f"{metrics['reward_mean']:.3f}", kl=f"{metrics['kl_divergence']:.3f}")
            bar.update(1)
            if self.cfg.sample_every and (self.step % self.cfg.sample_every == 0 or self.step == 1) and main:
                self._write_samples()
            if self.step % save_every == 0 or self.step == self.total_steps:
                self.save_checkpoint()
        bar.close()
        if self.eval_rows:
            final_eval = self.evaluate()
            self._log({"step": self.step, **final_eval})
            metrics = {**metrics, **final_eval}
        trainable = {id(p) for p in self.optimizer.param_groups[0]["params"]}
        write_rank_digest(
            [(n, p) for n, p in self.model.named_parameters() if id(p) in trainable]
            + [(f"value_head.{n}", p) for n, p in self.value_head.named_parameters()]
        )
        if self.tb_writer:
            self.tb_writer.close()
        return metrics

    def _log(self, metrics: dict) -> None:
        """One metrics.jsonl line (and TensorBoard scalars), written by the main process only."""
        if not self.accelerator.is_main_process:
            return
        with self.run.metrics.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(metrics) + "\n")
        if self.tb_writer:
            for key, value in metrics.items():
                if key != "step":
                    self.tb_writer.add_scalar(f"ppo/{key}", value, metrics["step"])

    def _write_samples(self) -> None:
        """`samples.jsonl`: the prompt as written in the data file, the response as text, its raw RM score."""
        roll, rows = self._last_rollout, self._last_rows
        n = min(self.cfg.num_samples, len(roll))
        texts = self.response_texts(roll)
        with self.run.samples.open("a", encoding="utf-8") as handle:
            for i in range(n):
                record = {
                    "step": self.step,
                    "prompt": self.prompt_rows[rows[i]]["prompt"],
                    "response": texts[i],
                    "reward": roll.scores[i].item(),
                }
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")

    # ------------------------------------------------------------------------------------ state

    def _state(self) -> dict:
        from peft import get_peft_model_state_dict

        adapters = {POLICY: get_peft_model_state_dict(self.model, adapter_name=POLICY)}
        if self.cfg.critic == "adapter":
            adapters[CRITIC] = get_peft_model_state_dict(self.model, adapter_name=CRITIC)
        return {
            "step": self.step,
            "score_stats": self.score_stats,
            "adapters": adapters,
            "value_head": self.value_head.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            },
        }

    def save_checkpoint(self) -> None:
        """`checkpoints/checkpoint-<step>/` written atomically; the oldest beyond save_total_limit go."""
        if self.accelerator.is_main_process:
            target = self.run.checkpoints / f"checkpoint-{self.step}"
            with atomic_directory(target) as tmp:
                torch.save(self._state(), tmp / "ppo_state.pt")
                (tmp / "trainer_state.json").write_text(json.dumps({"global_step": self.step}) + "\n")
            kept = sorted(self.run.checkpoints.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
            for old in kept[: -self.preset.training.save_total_limit]:
                shutil.rmtree(old, ignore_errors=True)
        self.accelerator.wait_for_everyone()

    def load_checkpoint(self, path: Path) -> None:
        from peft import set_peft_model_state_dict

        state = torch.load(path / "ppo_state.pt", map_location=self.device, weights_only=False)
        for name, adapter_state in state["adapters"].items():
            set_peft_model_state_dict(self.model, adapter_state, adapter_name=name)
        self.model.set_adapter(POLICY)
        self.value_head.load_state_dict(state["value_head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if state["rng"]["cuda"] is not None and torch.cuda.is_available():
            # torch.load mapped these onto the GPU; set_rng_state_all accepts CPU ByteTensors only
            torch.cuda.set_rng_state_all([rng.cpu() for rng in state["rng"]["cuda"]])
        self.step = state["step"]
        self.score_stats = state.get("score_stats")
        if self.accelerator.is_main_process:
            trim_metrics(self.run.samples, self.step)
            trim_metrics(self.run.eval_samples, self.step)

    def save_final(self) -> None:
        """`final/`: the policy adapter (loadable as model_name), value head, critic, preset, tokenizer."""
        if self.accelerator.is_main_process:
            with atomic_directory(self.run.final) as tmp:
                self.model.save_pretrained(tmp, selected_adapters=[POLICY])
                self.tokenizer.padding_side = "right"
                self.tokenizer.save_pretrained(tmp)
                torch.save(self.value_head.state_dict(), tmp / "value_head.pt")
                if self.cfg.critic == "adapter":
                    self.model.save_pretrained(tmp / "critic_adapter", selected_adapters=[CRITIC])
                if self.run.preset.is_file():
                    shutil.copy(self.run.preset, tmp / "preset.yml")
                if self.cfg.save_merged:
                    merged = copy.deepcopy(self.model).merge_and_unload(adapter_names=[POLICY])
                    merged.save_pretrained(tmp / "merged")
                    self.tokenizer.save_pretrained(tmp / "merged")
                write_final_marker(tmp, stage="ppo", base=resolved_model_name(self.preset.model_name), steps=self.step)
        self.accelerator.wait_for_everyone()


def _check_reward_base_name(preset: Preset) -> None:
    """`training.reward_model.model_name`, when given, must be the policy's base: one base in memory."""
    named = preset.training.reward_model.model_name
    if named and resolved_model_name(named) != resolved_model_name(preset.model_name):
        raise ModelError(
            f"training.reward_model.model_name ({named}) differs from model_name ({preset.model_name}): the reward "
            f"adapter runs on the policy's base, so train the RM on {preset.model_name} (or leave this key out)"
        )


def run_ppo(preset: Preset, run: RunDir, resume_from: str | None) -> dict:
    if use_bf16(preset) and not torch.cuda.is_available():
        logger.warning("bf16 requested without a GPU: PPO runs in the model's dtype on the CPU")
    trainer = PPOTrainer(preset, run)
    metrics = trainer.train(resume_from=resume_from)
    trainer.save_final()
    history = read_metrics(run.metrics)
    return {**metrics, "steps": len(history)}
