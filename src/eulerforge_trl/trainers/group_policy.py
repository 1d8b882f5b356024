"""The stages that sample a group of completions per prompt on one shared base (GRPO, RLOO): one runner.

TRL's `GRPOTrainer` and `RLOOTrainer` take the same model, reward functions, data and generation
settings, and differ in their loss; `train_group_policy` builds everything around either. Roles, all
on the same base weights in memory (as in PPO):
  policy    - the SFT model + a trainable LoRA adapter (peft adapter "default"), handed to TRL as a
              `PeftModel` (no `peft_config`, so TRL does not wrap it again);
  reference - the same model with adapters disabled (TRL's PEFT path; `ref_model` stays None);
  reward    - the RM adapter ("reward", never trainable) + RewardHead from the rm stage, called as a
              reward function "rm" that switches to the RM adapter under no_grad and back;
  functions - `training.reward_funcs`, TRL's signature, one reward source each (`group_rewards`).

Total reward = reward_model.weight x RM score + sum(reward_weights x functions) (TRL's
`reward_weights`). Without an RM checkpoint (`checkpoint_path: ""`) and with functions, no RM is
used at all. Sampling follows `generation:` (`grpo_generation`: TRL's generate, or its colocated
vLLM generation on our engine, `grpo_vllm`), stopping at EOS and the chat template's end of turn.
`final/` holds the policy adapter only, loadable as `model_name` like PPO's.

Data as PPO reads it: `data.path` (with `data.split`/`subset`/`columns`), prompts cut to their last
`data.max_prompt_length` tokens (TRL's configs have no such field; see `cut_prompts`), and
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
from collections.abc import Callable

from trl.data_utils import is_conversational
from trl.trainer.utils import disable_dropout_in_model

from ..config.schema import Preset
from ..data import render
from ..data.jsonl import split_rows
from ..distributed import fit_wrap_policy
from ..errors import DataError
from ..models.loading import load_tokenizer
from ..models.scorer import REWARD_ADAPTER
from ..rewards.sources import RewardSources
from ..rundir import RunDir
from .common import (
    adapters_in_fp32,
    evaluation_at_end,
    logging_callbacks,
    sampling_policy,
    trained_model_to_save,
    weights_dtype,
)
from .group_rewards import RewardMetricNames, SampleRecorder, rm_reward, user_reward
from .grpo_generation import compile_decoding, grpo_generation_args, stop_generation_at
from .grpo_vllm import install_vllm_engine
from .policy_final import POLICY, save_policy_final

logger = logging.getLogger(__name__)

# (preset, run, reward weights in the order of the reward functions, has held-out prompts) -> the TRL config
ConfigBuilder = Callable[[Preset, RunDir, list[float], bool], object]


def train_group_policy(
    preset: Preset, run: RunDir, resume_from: str | None, trainer_class, to_config: ConfigBuilder
) -> dict:
    """Train the stage `preset.training.type` with `trainer_class` (TRL's GRPOTrainer or RLOOTrainer) on
    the config `to_config` builds, write `final/` (the policy adapter, tokenizer, preset.yml) and
    return the final metrics. The stage's section (`training.<type>`) gives `num_generations`,
    `sample_every` and `num_samples`."""
    from accelerate import PartialState

    stage = preset.training.type
    section = getattr(preset.training, stage)
    grpo_generation_args(preset)  # a generation: setting TRL cannot honour stops here, before any loading
    state = PartialState()
    is_main = state.is_main_process
    tokenizer = load_tokenizer(preset.model_name)
    tokenizer.padding_side = "left"  # prompts are left-padded for generation
    train_rows, eval_rows = prompt_splits(preset)
    if is_conversational(train_rows[0]):
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
    recorder = SampleRecorder(run, names, weights, section.sample_every, section.num_samples, is_main, model)
    stop_ids = render.stop_token_ids(tokenizer, is_conversational(train_rows[0]))
    reward_funcs = [rm_reward(sources.rm, preset.training.batch_size, recorder, stop_ids)] if sources.rm else []
    reward_funcs += [user_reward(function, recorder) for function in sources.functions]
    disable_dropout_in_model(model)  # the RM adapter brings its own LoRA dropout
    model.set_adapter(POLICY)
    callbacks = [RewardMetricNames(), *logging_callbacks(preset, run)]
    args = to_config(preset, run, weights, eval_rows is not None)
    stop_generation_at(preset, model, args, stop_ids)  # EOS and the template's end of turn, as PPO stops
    trainer = trainer_class(
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
        save_policy_final(run, policy, tokenizer, preset, stage=stage, steps=trainer.state.global_step)
    trainer.accelerator.wait_for_everyone()
    last = next((h for h in reversed(trainer.state.log_history) if "reward_mean" in h), {})
    numbers = {k: v for k, v in {**last, **final_eval}.items() if isinstance(v, (int, float))}
    return {**dict(result.metrics), **numbers}


# ------------------------------------------------------------------------------------ data


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
        if is_conversational({"prompt": row["prompt"]}):
            long_chats += 1
            continue
        out.append({**row, "prompt": tokenizer.decode(ids[-keep:], skip_special_tokens=True)})
        cut += 1
    if long_chats:
        raise DataError(
            f"{key} ({keep}): {long_chats} conversational prompts are longer (the longest {longest} tokens "
            f"with the chat template) and a conversation cannot be cut (TRL renders it through the template "
            f"again); set {key}={longest} or shorten them"
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
    t, stage = preset.training, preset.training.type
    generations = getattr(t, stage).num_generations
    needed = t.batch_size * processes * t.grad_accum // generations
    if prompts >= needed:
        return
    held = " after data.eval_split" if not preset.data.eval_path and preset.data.eval_split > 0 else ""
    raise DataError(
        f"data.path {preset.data.path}: {prompts} training prompt{'' if prompts == 1 else 's'}{held}, fewer than "
        f"one {stage.upper()} step needs: "
        f"training.batch_size ({t.batch_size}) x grad_accum ({t.grad_accum}) x processes ({processes}) / "
        f"training.{stage}.num_generations ({generations}) = {needed} prompts (TRL drops an incomplete "
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
            f"{key} {source}: {what} ({reason}); TRL takes the data as an Arrow table, one type per "
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


__all__ = ["as_dataset", "cut_prompts", "prompt_splits", "require_one_step", "train_group_policy"]
