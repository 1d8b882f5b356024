"""PPO for language models on one shared base model (TRL removed its PPOTrainer in 1.13).

Roles on the same base weights (`assembly.py`): the policy (SFT model + a trainable LoRA), the
reference (adapters disabled), the reward (the RM's adapter + head, and/or reward functions) and
the critic (`critic.py`). Responses come from the rollout engine `generation.backend` names (the
training model itself, or a colocated vLLM engine synced after every optimizer step); log-probs
always come from the training model. One step, CleanRL-style, as `train_step` lists it: 1. rollout
2. score  3. reference and old logprobs/values  4-5. targets (KL-shaped rewards, GAE)  6. PPO
epochs  7. metrics. Maths in `losses.py`/`targets.py`. The trainer holds small objects, each with
one job and given what it needs, in modules beside this one: sampling and scoring (`scoring.py`),
the model's passes (`rollout.py`), the PPO epochs (`update.py`), prompts, checkpoints, evaluation,
timing, score scale, KL control and logging.
"""

from __future__ import annotations

import functools
import logging
import math
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from trl.data_utils import is_conversational

from ...config import preset_to_yaml
from ...config.schema import Preset
from ...data import render
from ...data.jsonl import split_rows
from ...distributed import is_sharded
from ...generation import Rollout, build_sampler
from ...models.loading import load_tokenizer
from ...rundir import RunDir, read_metrics, start_run
from ..common import sampling_policy, use_bf16
from ..policy_final import save_policy_final
from .assembly import assemble, optimizer_and_schedule
from .checkpoint import Checkpointer, restore_training_state, training_state
from .critic import CRITIC, POLICY
from .evaluation import HeldOutEvaluation
from .kl_control import KLController
from .metrics import step_numbers, write_samples
from .prompts import PromptSet
from .rollout import Forward, PolicyPasses
from .score_scale import ScoreNormalizer, sft_scores
from .scoring import RolloutScorer
from .sharding import unsharded_copy
from .targets import Targets, ppo_targets
from .timing import PhaseTimer
from .tracking import MetricsLog, build_accelerator
from .update import PPOUpdate

logger = logging.getLogger(__name__)


class PPOTrainer:
    """Owns the shared model, the optimizer and the loop; `train()` runs to `total_steps`. The jobs
    of a step are objects it is given or builds once: `PromptSet` (which rows), `RolloutScorer`
    (sample, score), `PolicyPasses` (pi, pi_ref, pi_old, V), `PPOUpdate` (the PPO epochs)."""

    def __init__(self, preset: Preset, run: RunDir, accelerator: Accelerator | None = None):
        self.preset, self.run, self.cfg = preset, run, preset.training.ppo
        self.accelerator = accelerator or build_accelerator(preset, run)
        self.device = self.accelerator.device
        self.tokenizer = load_tokenizer(preset.model_name)
        self.tokenizer.padding_side, self.tokenizer.truncation_side = "left", "left"
        # rows carry the file's other columns with them (for reward functions), through eval_split too
        rows, held_out = split_rows(preset.data, preset.training.seed, columns=bool(preset.training.reward_funcs))
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        self.prompts = PromptSet(rows, self.tokenizer, preset.data.max_prompt_length, preset.training.seed, rank, world)
        self.stop_ids = render.stop_token_ids(self.tokenizer, is_conversational(rows[0]))
        self.held_out = HeldOutEvaluation(
            held_out or [], self.cfg.eval_prompts, self.accelerator, run.eval_samples, preset.training.batch_size
        )
        # the new adapters' and heads' initial weights come from the seed, as transformers' Trainer seeds in its
        # __init__: a trainer built in a notebook, or after another one, starts where the CLI's does
        set_seed(preset.training.seed)
        self.stack = stack = assemble(preset, self.tokenizer, self.device, self.accelerator)
        self.model, self.rewards, self.critic = stack.model, stack.rewards, stack.critic
        self.policy_params, self.critic_params = stack.policy_params, stack.critic_params
        self.total_steps = self._total_steps()
        self.optimizer, self.scheduler = optimizer_and_schedule(preset, stack, self.total_steps)
        self.sampler = build_sampler(
            preset.generation,
            self.model,
            self.tokenizer,
            adapter=POLICY,
            max_new_tokens=self.cfg.max_gen_len,
            temperature=self.cfg.temperature,
            stop_ids=self.stop_ids,
            seed=preset.training.seed + self.accelerator.process_index,
            synced_gpus=self.accelerator.num_processes > 1,
            max_prompt_length=preset.data.max_prompt_length,
        )
        logger.info("PPO rollouts: generation.backend=%s", self.sampler.name)
        self.scorer = RolloutScorer(
            self.sampler,
            self.model,
            self.rewards,
            self.tokenizer,
            self.stop_ids,
            self.prompts,
            self.device,
            self.total_steps,
        )
        self.kl = KLController(self.cfg.kl_coef, self.cfg.target_kl, self.cfg.kl_horizon)
        self.passes = PolicyPasses(self.model, self.critic, self.cfg)
        self.update = PPOUpdate(
            self.passes,
            self.optimizer,
            self.cfg,
            self.kl,
            policy_params=self.policy_params,
            critic_params=self.critic_params,
            max_grad_norm=preset.training.max_grad_norm,
            seed=preset.training.seed,
            processes=world,
            device=self.device,
        )
        self.checkpointer = Checkpointer(run, self.accelerator, preset.training.save_total_limit)
        self.log = MetricsLog(self.accelerator, run, preset)
        self.step = 0
        self.lines_at_step = 0  # metrics.jsonl lines logged at `step` so far (a checkpoint records it)
        self.scale = ScoreNormalizer(self.cfg.normalize_scores, self.cfg.score_norm_samples)

    @property
    def prompt_rows(self) -> list[dict]:
        return self.prompts.rows

    def _total_steps(self) -> int:
        t = self.preset.training
        if t.max_steps > 0:
            return t.max_steps
        return max(1, math.ceil(t.epochs * self.prompts.batches_per_epoch(t.batch_size)))

    # ------------------------------------------------------------------------------------ phases

    def prompt_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """This rank's prompts for `step` (see `PromptSet.step_batch`): padded ids, mask, row indices."""
        chosen = self.prompts.step_batch(step, self.preset.training.batch_size)
        return (*self.prompts.padded_rows(chosen, self.device), chosen)

    def targets(self, roll: Rollout, scores: torch.Tensor, ref_logprobs: torch.Tensor, old: Forward) -> Targets:
        """4-5. KL-shaped per-token rewards and GAE from the old pass, and the importance weights of an
        engine that is not the trainer's weights (see `targets.ppo_targets`)."""
        return ppo_targets(
            self.scale(scores),
            roll.contains_eos,
            roll.response_mask,
            old.logprobs,
            ref_logprobs,
            old.values,
            self.cfg,
            kl_coef=self.kl.value,
            engine_logprobs=roll.engine_logprobs,
        )

    # ------------------------------------------------------------------------------------ one step

    def train_step(self) -> dict[str, float]:
        """One PPO step on one rollout batch, phase by phase; returns the logged metrics."""
        self.ensure_score_scale()
        timer = PhaseTimer(self.device)
        prompt_ids, prompt_mask, rows = self.prompt_batch(self.step)
        with timer("generate"):
            roll = self.scorer.sample(prompt_ids, prompt_mask)  # 1. rollout
        with timer("reward"):
            scores, parts = self.scorer.score(roll, [self.prompt_rows[i] for i in rows], self.step)  # 2. raw rewards
        with timer("reference"):
            ref_logprobs = self.passes.reference_logprobs(roll)  # 3a. pi_ref
        with timer("old_logprobs"):
            old = self.passes.old(roll)  # 3b. pi_old, V_old (fused: the first update pass)
            targets = self.targets(roll, scores, ref_logprobs, old)  # 4-5. rewards, GAE
        with timer("update"):
            fused = old if self.passes.fuses_old_pass else None
            update_stats = self.update(roll, targets, self.step, fused=fused)  # 6. PPO epochs
        with timer("weight_sync"):
            self.sampler.sync_weights()  # the next rollout samples the weights just updated
        self.scheduler.step()
        self.step += 1
        self._last = (roll, targets, scores, rows)
        timer.stop()
        metrics = self._step_metrics(roll, targets, scores, parts, update_stats, timer)  # 7
        self.kl.update(metrics["kl_divergence"], len(roll) * self.accelerator.num_processes)  # next step's beta
        return metrics

    def _step_metrics(self, roll, targets, scores, parts, update_stats, timer: PhaseTimer) -> dict:
        """7. The step's numbers (`metrics.step_numbers`) averaged over processes, the learning rate, timings."""
        local = step_numbers(roll, targets, scores, parts, update_stats)
        keys = list(local)
        reduced = self.accelerator.reduce(torch.stack([local[k].float() for k in keys]).to(self.device), "mean")
        metrics = {"step": self.step, **{k: v.item() for k, v in zip(keys, reduced)}}
        metrics["learning_rate"] = self.scheduler.get_last_lr()[0]
        metrics["kl_coef"] = self.kl.value  # the coefficient this step's rewards used
        generated = roll.response_mask.sum().item() * self.accelerator.num_processes
        # what reward functions logged with log_metric, under their own names as TRL logs them
        return {**metrics, **timer.metrics(generated_tokens=generated), **self.rewards.pop_logged_metrics()}

    # ------------------------------------------------------------------------------------ score scale

    def ensure_score_scale(self) -> dict[str, float]:
        """Before step 1: the total reward's scale under the SFT policy (`score_scale.ScoreNormalizer`), and
        the critic on that scale. Returns what to log, or {} when there was nothing to do."""
        if not self.scale.needed:
            return {}
        batches = self.prompts.score_norm_batches(self.scale.samples, self.preset.training.batch_size)
        scores, rm_share = sft_scores(batches, self.scorer, self.step)
        logged = self.scale.estimate(self.accelerator.gather(scores))
        if self.step == 0:  # a resumed run keeps its trained critic
            # the critic's head estimates the RM's weighted part of the total (or nothing: a zero head),
            # so it is shifted by that part's mean; the other sources' mean is what it has to learn
            self.critic.rescale(self.accelerator.gather(rm_share).mean().item(), self.scale.stats[1])
        return logged

    # ------------------------------------------------------------------------------------ loop

    def evaluate(self) -> dict[str, float]:
        """The held-out prompts sampled and scored now (`HeldOutEvaluation`)."""
        return self.held_out(self.step, self.scorer)

    def train(self, resume_from: str | None = None) -> dict[str, float]:
        from tqdm.auto import tqdm

        # every process samples its own stream (the weights were built before, identical everywhere)
        set_seed(self.preset.training.seed, device_specific=True)
        state = self.load_checkpoint(Path(resume_from)) if resume_from else {}
        main = self.accelerator.is_main_process
        if main:  # only now, with data and models loaded: a run that failed before leaves the files as they were
            # at a checkpoint's step, the lines logged before it was saved stay; the held-out evaluation
            # after the last step (metrics and eval_samples.jsonl) comes again if that step is the last
            start_run(
                self.run,
                preset_to_yaml(self.preset),
                self.step,
                metric_lines_at_step=state.get("metric_lines_at_step", int(self._logs(self.step))),
                eval_lines_at_step=0,
            )
        self.log.start()
        metrics: dict[str, float] = {}
        save_every = self.preset.training.save_steps
        # closed however the loop ends: an error (a reward function's, say) then starts a line of its own
        with tqdm(total=self.total_steps, initial=self.step, desc="ppo", disable=not main, dynamic_ncols=True) as bar:
            before = self.ensure_score_scale()
            if self.step == 0 and (before or self.held_out):
                self.log({"step": 0, **before, **(self.evaluate() if self.held_out else {})})
            while self.step < self.total_steps:
                metrics = self.train_step()
                self.lines_at_step = int(self._logs(self.step))
                if self.lines_at_step:
                    self.log(metrics)
                bar.set_postfix(reward=f"{metrics['reward_mean']:.3f}", kl=f"{metrics['kl_divergence']:.3f}")
                bar.update(1)
                if self.cfg.sample_every and (self.step % self.cfg.sample_every == 0 or self.step == 1) and main:
                    self._write_samples()
                if self.step % save_every == 0 or self.step == self.total_steps:
                    self.save_checkpoint()
        if self.held_out:
            final_eval = self.evaluate()
            self.log({"step": self.step, **final_eval})
            metrics = {**metrics, **final_eval}
        self.log.finish()
        return metrics

    def _logs(self, step: int) -> bool:
        """Whether the metrics of `step` go to metrics.jsonl: every `logging_steps`, the first and the last."""
        return step % self.preset.training.logging_steps == 0 or step in (1, self.total_steps)

    def _write_samples(self) -> None:
        roll, _targets, scores, rows = self._last
        prompts = [self.prompt_rows[i]["prompt"] for i in rows]
        write_samples(self.run.samples, self.step, prompts, self.scorer.texts(roll), scores, self.cfg.num_samples)

    # ------------------------------------------------------------------------------------ state

    def save_checkpoint(self) -> None:
        """`checkpoints/checkpoint-<step>/` (see `Checkpointer`); the oldest beyond save_total_limit go."""
        extra = {"score_stats": self.scale.stats, "kl_coef": self.kl.value, "metric_lines_at_step": self.lines_at_step}
        self.checkpointer.save(
            self.step, {**training_state(self.model, self.critic, self.optimizer, self.scheduler), **extra}
        )

    def load_checkpoint(self, path: Path) -> dict:
        state = self.checkpointer.load(path)
        restore_training_state(state, self.model, self.critic, self.optimizer, self.scheduler)
        self.step = state["step"]
        self.scale.stats = state.get("score_stats")
        self.kl.value = state.get("kl_coef", self.cfg.kl_coef)
        self.sampler.sync_weights()  # the engine samples the resumed policy, not the SFT model
        return state

    def save_final(self) -> None:
        """`final/`: the policy adapter (loadable as model_name), the critic, preset, tokenizer. Sharded,
        rank 0 writes it from an unsharded copy holding the gathered adapters (`sharding.unsharded_copy`)."""
        model = self.model
        if is_sharded(self.accelerator):
            trained = [name for name in (POLICY, CRITIC) if name in self.model.peft_config]
            model = unsharded_copy(self.model, lambda: sampling_policy(self.preset, self.tokenizer, POLICY), trained)
        if self.accelerator.is_main_process:
            extra = functools.partial(self.critic.save, model=model)
            final = dict(stage="ppo", steps=self.step, merged=self.cfg.save_merged, extra=extra)
            save_policy_final(self.run, model, self.tokenizer, self.preset, **final)
        self.accelerator.wait_for_everyone()


def run_ppo(preset: Preset, run: RunDir, resume_from: str | None) -> dict:
    if use_bf16(preset) and not torch.cuda.is_available():
        logger.warning("bf16 requested without a GPU: PPO runs in the model's dtype on the CPU")
    trainer = PPOTrainer(preset, run)
    try:
        metrics = trainer.train(resume_from=resume_from)
        trainer.save_final()
    finally:
        trainer.sampler.close()
    history = read_metrics(run.metrics)
    return {**metrics, "steps": len(history)}
