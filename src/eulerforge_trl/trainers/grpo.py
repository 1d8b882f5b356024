"""GRPO stage: TRL `GRPOTrainer` on one shared base, rewarded by the RM adapter and reward functions.

Roles, all on the same base weights in memory (as in PPO):
  policy    - the SFT model + a trainable LoRA adapter (peft adapter "default"), handed to TRL as a
              `PeftModel` (no `peft_config`, so TRL does not wrap it again);
  reference - the same model with adapters disabled (TRL's PEFT path; `ref_model` stays None);
  reward    - the RM adapter ("reward", never trainable) + RewardHead from the rm stage, called as a
              reward function "rm" that switches to the RM adapter under no_grad and back;
  functions - `training.reward_funcs`, TRL's signature, one reward source each.

Total reward = reward_model.weight x RM score + sum(reward_weights x functions) (TRL's
`reward_weights`), normalised within each group of `num_generations` completions of a prompt.
Without an RM checkpoint (`checkpoint_path: ""`) and with functions, no RM is used at all.

Logged per step beside TRL's own names: `reward_mean` (the weighted total, TRL's `reward`),
`reward/<name>` (each source, unweighted: `reward/rm`, `reward/<function>`), `kl_divergence`
(TRL's `kl`, only when beta > 0), `entropy`, `loss`, `time_step` (seconds per step), and with
`generation.backend: vllm` `generation/logprob_gap` (the engine's per-token log-prob gap to the
trainer's, which TRL's importance sampling corrects; see `grpo_vllm`).
`final/` holds the policy adapter only, loadable as `model_name` like PPO's.

Data as PPO reads it: `data.path` (with `data.split`/`subset`/`columns`), prompts cut to their last
`data.max_prompt_length` tokens (TRL 1.16's GRPOConfig has no such field; see `cut_prompts`), and
held-out prompts (`data.eval_path` or a `data.eval_split` fraction) evaluated with TRL's own
evaluation before the first step, every `save_steps` and after the last: `eval_reward_mean` and
`eval_reward/<name>` in the logs, every held-out completion in `eval_samples.jsonl`.

Refused before the model loads (one line, exit 2): fewer training prompts than one step takes
(`require_one_step`; TRL would drop the incomplete batch, train nothing and exit 0), and a data
column whose values mix types, which no Arrow table holds (`as_dataset`). A reward function's
+-inf, or an RM score that is not finite, stops the step that computed it (`call_reward_function`,
`RewardModelSource.score`), before the optimizer uses it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer
from trl.trainer.utils import disable_dropout_in_model

from ..config.schema import Preset
from ..data import render
from ..data.jsonl import is_conversational, split_rows
from ..distributed import fit_wrap_policy
from ..errors import DataError
from ..models.loading import load_tokenizer
from ..models.scorer import REWARD_ADAPTER
from ..rewards.functions import call_reward_function
from ..rewards.sources import FUNCS_KEY, RM_NAME, RewardFunction, RewardModelSource, RewardSources
from ..rundir import RunDir, append_jsonl
from .common import (
    adapters_in_fp32,
    evaluation_at_end,
    logging_callbacks,
    sampling_policy,
    trained_model_to_save,
    weights_dtype,
)
from .grpo_generation import compile_decoding, grpo_generation_args, stop_generation_at
from .grpo_vllm import install_vllm_engine
from .policy_final import POLICY, save_policy_final
from .trl_config import build_trl_config

logger = logging.getLogger(__name__)


def to_grpo_config(preset: Preset, run: RunDir, reward_weights: list[float], has_eval: bool = False) -> GRPOConfig:
    """The `GRPOConfig` for a preset (`build_trl_config`): `training.grpo`'s keys and TRL fields, and
    the fields GRPO sets itself.

    `has_eval`: held-out prompts are evaluated before the first step (the SFT policy's held-out
    reward, as PPO's step-0 evaluation), every `save_steps`, and (by `run_grpo`) after the last, with
    `num_generations` completions each.
    """
    return build_trl_config(
        "grpo",
        preset,
        run,
        has_eval,
        eval_on_start=has_eval,
        num_generations_eval=preset.training.grpo.num_generations,
        reward_weights=reward_weights,
        disable_dropout=True,  # the reference (adapters off) and the policy must see the same network
        sync_ref_model=False,  # the reference is the adapters-off model: no copy to sync
        log_completions=False,  # samples.jsonl instead (see SampleRecorder)
        remove_unused_columns=False,  # extra data columns reach the reward functions
        **grpo_generation_args(preset),  # generation.backend: TRL's generate, or its colocated vLLM
    )


# ------------------------------------------------------------------------------------ rewards


class SampleRecorder:
    """Collects each source's rewards for the current batch; the last source writes samples.jsonl.

    TRL calls the reward functions one after another on the same (prompts, completions) of this
    process; after the last one the weighted total is known. Main process only, at step 1 and
    every `sample_every` steps; during TRL's evaluation (the model in eval mode, as TRL tells the
    modes apart) every held-out completion goes to eval_samples.jsonl under the step it follows.
    """

    def __init__(
        self, run: RunDir, names: list[str], weights: list[float], every: int, count: int, is_main: bool, model=None
    ):
        self.run, self.names, self.weights = run, names, weights
        self.every, self.count, self.is_main = every, count, is_main
        self.model = model
        self.values: dict[str, list[float]] = {}

    def add(self, name: str, prompts: list, completions: list, values: list[float], trainer_state=None) -> None:
        self.values[name] = values
        if name != self.names[-1]:
            return
        values_by_source, self.values = self.values, {}
        done = trainer_state.global_step if trainer_state is not None else 0
        evaluating = self.model is not None and not self.model.training
        step = done if evaluating else done + 1  # an evaluation follows `done` steps; training computes the next
        if not self.is_main or not (evaluating or (self.every and (step == 1 or step % self.every == 0))):
            return
        records = []
        for i in range(len(completions) if evaluating else min(self.count, len(completions))):
            per_source = {n: values_by_source[n][i] for n in self.names if n in values_by_source}
            total = sum(w * v for n, w in zip(self.names, self.weights) if not math.isnan(v := per_source[n]))
            records.append(
                {
                    "step": step,
                    "prompt": prompts[i],
                    "response": _text(completions[i]),
                    "reward": total,
                    "rewards": per_source,
                }
            )
        append_jsonl(self.run.eval_samples if evaluating else self.run.samples, records, ensure_ascii=False)


def _text(completion) -> str:
    """A completion as text: TRL gives a string, or [{"role": "assistant", "content": ...}] for conversations."""
    if isinstance(completion, list):
        return "".join(str(m.get("content", "")) for m in completion)
    return completion


def rm_reward(source: RewardModelSource, batch_size: int, recorder: SampleRecorder, stop_ids) -> Callable:
    """The RM as a TRL reward function named "rm": each (prompt, completion) rendered as the RM was
    trained and scored under no_grad (`RewardModelSource.score`, the same code PPO scores with), a
    completion that does not end in one of `stop_ids` (cut at max_completion_length) rendered as cut;
    on the shared base the policy adapter and the training mode are restored after every batch."""
    stops = set(stop_ids)

    def rm(prompts, completions, trainer_state=None, completion_ids=None, **_columns) -> list[float]:
        finished = [bool(ids) and ids[-1] in stops for ids in completion_ids] if completion_ids is not None else None
        scores = source.score(list(prompts), list(completions), batch_size, finished).tolist()
        recorder.add(RM_NAME, prompts, completions, scores, trainer_state)
        return scores

    rm.__name__ = rm.__qualname__ = RM_NAME
    return rm


def user_reward(function: RewardFunction, recorder: SampleRecorder) -> Callable:
    """A `training.reward_funcs` entry as a TRL reward function under its logging name; whatever goes
    wrong in the user's code is one `UserError` naming the spec (`call_reward_function`)."""

    def reward(prompts, completions, **kwargs) -> list[float]:
        values = call_reward_function(function.fn, f"{FUNCS_KEY} {function.spec}", prompts, completions, **kwargs)
        recorder.add(function.name, prompts, completions, values, kwargs.get("trainer_state"))
        return values

    reward.__name__ = reward.__qualname__ = function.name
    return reward


# ------------------------------------------------------------------------------------ logging


class GRPOMetricNames(TrainerCallback):
    """Adds the EulerForge names to TRL's logs, in place, before metrics.jsonl and TensorBoard see them.

    reward -> reward_mean, kl -> kl_divergence, rewards/<name>/mean -> reward/<name> (and the same
    with TRL's eval_ prefix on evaluation: eval_reward_mean, eval_reward/<name>),
    sampling/sampling_logp_difference/mean (vllm) -> generation/logprob_gap, as PPO names it; plus
    time_step, the wall seconds per optimizer step since the previous log.
    """

    def __init__(self):
        self.last_time: float | None = None
        self.last_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.last_time, self.last_step = time.perf_counter(), state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "eval_reward" in logs:
            logs["eval_reward_mean"] = logs["eval_reward"]
            for key, value in list(logs.items()):
                if key.startswith("eval_rewards/") and key.endswith("/mean"):
                    logs["eval_reward/" + key[len("eval_rewards/") : -len("/mean")]] = value
            return
        if not logs or "reward" not in logs:
            return
        extra = {"reward_mean": logs["reward"]}
        if "kl" in logs:
            extra["kl_divergence"] = logs["kl"]
        if "sampling/sampling_logp_difference/mean" in logs:  # vllm: mean |log p trainer - log p engine| per token
            extra["generation/logprob_gap"] = logs["sampling/sampling_logp_difference/mean"]
        for key, value in logs.items():
            if key.startswith("rewards/") and key.endswith("/mean"):
                extra["reward/" + key[len("rewards/") : -len("/mean")]] = value
        now = time.perf_counter()
        if self.last_time is not None and state.global_step > self.last_step:
            extra["time_step"] = (now - self.last_time) / (state.global_step - self.last_step)
        self.last_time, self.last_step = now, state.global_step
        logs.update(extra)


# ------------------------------------------------------------------------------------ model


def prompt_splits(preset: Preset) -> tuple[list[dict], list[dict] | None]:
    """Training and held-out rows (`split_rows`, as PPO reads them), each with its source's other
    columns beside the prompt: TRL hands those to reward functions as keyword arguments (a
    `solution` column, say)."""
    train, held_out = split_rows(preset.data, preset.training.seed, columns=True)

    def flat(rows: list[dict]) -> list[dict]:
        return [{**{k: v for k, v in row.items() if k != "columns"}, **row.get("columns", {})} for row in rows]

    return flat(train), (flat(held_out) if held_out else None)


def cut_prompts(rows: list[dict], tokenizer, keep: int, key: str = "data.max_prompt_length") -> list[dict]:
    """Each prompt cut to its last `keep` tokens, as PPO cuts them: TRL 1.16's GRPOConfig has no
    `max_prompt_length`, and TRL tokenizes the prompts itself, so a plain-text prompt that is longer
    is replaced by the text of its last `keep` tokens. A conversation cannot be cut that way (TRL
    renders the messages through the chat template again): a longer one is a DataError.
    """
    out, cut, long_chats, longest = [], 0, 0, 0
    for row in rows:
        ids = render.prompt_ids(tokenizer, row["prompt"])
        if len(ids) <= keep:
            out.append(row)
            continue
        longest = max(longest, len(ids))
        if is_conversational(row["prompt"]):
            long_chats += 1
            continue
        out.append({**row, "prompt": tokenizer.decode(ids[-keep:], skip_special_tokens=True)})
        cut += 1
    if long_chats:
        raise DataError(
            f"{key} ({keep}): {long_chats} conversational prompts are longer (the longest {longest} tokens "
            f"with the chat template) and GRPO cannot cut a conversation; set {key}={longest} or shorten them"
        )
    if cut:
        logger.warning(
            "%s (%d): %d prompts cut to their last %d tokens (the longest had %d)", key, keep, cut, keep, longest
        )
    return out


def require_one_step(preset: Preset, prompts: int, processes: int) -> None:
    """Refuse training prompts too few for one optimizer step: TRL's sampler (`RepeatSampler`) takes
    `generation_batch_size / num_generations` distinct prompts per step (generation_batch_size =
    batch_size x processes x grad_accum) and drops an incomplete batch, so with fewer it trains on
    nothing and still writes an untrained `final/`."""
    t = preset.training
    needed = t.batch_size * processes * t.grad_accum // t.grpo.num_generations
    if prompts >= needed:
        return
    held = " after data.eval_split" if not preset.data.eval_path and preset.data.eval_split > 0 else ""
    raise DataError(
        f"data.path {preset.data.path}: {prompts} training prompt{'' if prompts == 1 else 's'}{held}, fewer than "
        "one GRPO step needs: "
        f"training.batch_size ({t.batch_size}) x grad_accum ({t.grad_accum}) x processes ({processes}) / "
        f"training.grpo.num_generations ({t.grpo.num_generations}) = {needed} prompts (TRL drops an incomplete "
        "batch); add prompts or lower training.batch_size"
    )


def as_dataset(rows: list[dict], key: str, source: str):
    """`rows` as the `datasets.Dataset` TRL reads; a column whose values mix types (5 in one row, "cat"
    in the next), which Arrow cannot hold in one column, is a DataError naming it."""
    import pyarrow as pa
    from datasets import Dataset

    try:
        return Dataset.from_list(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        column = _mixed_column(rows)
        what = f"column {column!r} mixes value types" if column else "the columns cannot form one table"
        raise DataError(
            f"{key} {source}: {what} ({reason}); GRPO hands the data to TRL as an Arrow table, one type per "
            "column: give every row the same type there (all strings, say), or drop the column"
        ) from None


def _mixed_column(rows: list[dict]) -> str | None:
    """The first column Arrow cannot hold as one array (None: none on its own)."""
    import pyarrow as pa

    for name in dict.fromkeys(k for row in rows for k in row):
        try:
            pa.array([row.get(name) for row in rows])
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return name
    return None


def run_grpo(preset: Preset, run: RunDir, resume_from: str | None) -> dict:
    """Train and write `final/` (the policy adapter, tokenizer, preset.yml); returns the final metrics."""
    from accelerate import PartialState

    grpo_generation_args(preset)  # a generation: setting TRL cannot honour stops here, before any loading
    if preset.generation.backend == "vllm":
        from ..generation.vllm import require_vllm

        require_vllm()
    state = PartialState()
    is_main = state.is_main_process
    tokenizer = load_tokenizer(preset.model_name)
    tokenizer.padding_side = "left"  # prompts are left-padded for generation
    train_rows, eval_rows = prompt_splits(preset)
    if is_conversational(train_rows[0]["prompt"]):
        render.require_chat_template(tokenizer, train_rows, preset.model_name)
    train_rows = cut_prompts(train_rows, tokenizer, preset.data.max_prompt_length)
    if eval_rows:
        eval_rows = cut_prompts(eval_rows, tokenizer, preset.data.max_prompt_length)
    require_one_step(preset, len(train_rows), state.num_processes)
    train_dataset = as_dataset(train_rows, "data.path", preset.data.path)
    eval_key = "data.eval_path" if preset.data.eval_path else "data.path"
    eval_dataset = as_dataset(eval_rows, eval_key, preset.data.eval_path or preset.data.path) if eval_rows else None
    model = sampling_policy(preset, tokenizer, POLICY).to(state.device)  # before the RM's head is placed beside it
    # the RM (its adapter beside the policy's, or `separate`) and the functions, as PPO builds them
    sources = RewardSources.from_preset(
        preset, model, tokenizer, state.device, REWARD_ADAPTER, dtype=weights_dtype(preset)
    )
    names = [name.removeprefix("reward/") for name in sources.names]
    weights = ([sources.rm.weight] if sources.rm else []) + [f.weight for f in sources.functions]
    g = preset.training.grpo
    recorder = SampleRecorder(run, names, weights, g.sample_every, g.num_samples, is_main, model)
    stop_ids = render.stop_token_ids(tokenizer, is_conversational(train_rows[0]["prompt"]))
    reward_funcs = [rm_reward(sources.rm, preset.training.batch_size, recorder, stop_ids)] if sources.rm else []
    reward_funcs += [user_reward(function, recorder) for function in sources.functions]
    disable_dropout_in_model(model)  # the RM adapter brings its own LoRA dropout
    model.set_adapter(POLICY)
    callbacks = [GRPOMetricNames(), *logging_callbacks(preset, run)]
    args = to_grpo_config(preset, run, weights, has_eval=eval_rows is not None)
    stop_generation_at(preset, model, args, stop_ids)  # EOS and the template's end of turn, as PPO stops
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    if preset.generation.backend == "vllm":
        install_vllm_engine(trainer, preset)  # our engine and out-of-place weight push, not TRL's (grpo_vllm)
    compile_decoding(trainer, preset)  # TRL turns transformers' compile off
    if preset.quantization is not None:
        adapters_in_fp32(model)  # TRL casts a quantized model's trainable weights to bf16: ours train in fp32
    if "ref" in model.peft_config:
        # TRL copies a PeftModel's adapter as "ref" for a re-trained adapter; ours starts at zero
        # (LoRA B = 0), so the SFT model with adapters disabled is the same reference without a copy
        model.delete_adapter("ref")
        model.set_adapter(POLICY)
    fit_wrap_policy(trainer.accelerator, trainer.model)
    result = trainer.train(resume_from_checkpoint=resume_from)
    final_eval = evaluation_at_end(trainer) if eval_rows else {}  # the trained policy on the held-out prompts
    policy = trained_model_to_save(trainer, lambda: sampling_policy(preset, tokenizer, POLICY), model)
    if trainer.is_world_process_zero():
        save_policy_final(run, policy, tokenizer, preset, stage="grpo", steps=trainer.state.global_step)
    trainer.accelerator.wait_for_everyone()
    last = next((h for h in reversed(trainer.state.log_history) if "reward_mean" in h), {})
    numbers = {k: v for k, v in {**last, **final_eval}.items() if isinstance(v, (int, float))}
    return {**dict(result.metrics), **numbers}


__all__ = ["as_dataset", "require_one_step", "run_grpo", "to_grpo_config"]
