"""`eulerforge evaluate`: sample several models on the same prompts, score them, compare them to the first.

For every model (any stage's `final/`), every prompt is sampled `num_samples` times with the same
seed; the samples are scored by the RM (adapter + RewardHead on the models' shared base, exactly
as PPO scores) and by a judge (a Python function with TRL's reward-function signature), and each
model's KL to the first model is estimated on its own samples. A rising RM reward with a flat or
falling judge score is reward hacking.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

from ..config.chat_template import resolve_chat_template
from ..data.jsonl import extra_columns, read_rows
from ..errors import UserError
from ..models.reward_files import read_reward_meta
from ..rewards.functions import call_reward_function, load_reward_function
from .models import ModelSet, inspect_model, load_model_set

DEFAULT_OUTPUT = "outputs/evaluate"


@dataclass(frozen=True)
class Sample:
    """One sampled response and its numbers (a line of samples.jsonl)."""

    model: str
    prompt_index: int
    sample: int
    prompt: object  # as written in the prompts file: a string or a message list
    response: str
    response_length: int  # tokens, the stop token included (as PPO's response_length)
    kl_to_first: float | None  # sum over its tokens of log p_model - log p_first
    reward: float | None = None
    judge: float | None = None


def evaluate_models(
    models: list[str],
    prompts: str | Path,
    reward: str | None = None,
    judge: str | None = None,
    num_samples: int = 1,
    output: str | Path = DEFAULT_OUTPUT,
    seed: int = 0,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    max_prompts: int | None = None,
    batch_size: int = 16,
    chat_template: str | None = None,
) -> dict[str, dict[str, float | None]]:
    """Sample, score and compare `models`; write samples.jsonl, summary.json and summary.png to `output`.

    Args:
        models: anything `model_name` takes: stage `final/` directories (full models or LoRA adapters),
            transformers model directories, built-in names (`smollm2-135m-instruct`), hub ids; the
            first is the baseline.
        prompts: a JSONL prompts file (`{"prompt": ...}` rows, plain text or message lists; an SFT file works).
        reward: the rm stage's `final/`, trained on the models' shared base; None: no `reward_mean`.
        judge: `package.module:function` or `path/to/file.py:function` with TRL's reward-function
            signature `fn(prompts, completions, **columns) -> list[float]`; None: no `judge_mean`.
        num_samples: responses per prompt.
        output: where the three files go (created if needed).
        seed: every model samples from the same RNG state, reset to this seed before its first prompt.
        max_new_tokens, temperature: pure sampling (no top-k/top-p), as PPO samples; temperature 0
            decodes greedily (the most likely token each step: no sampling noise, so a task with a
            right answer scores the model itself; `num_samples` then repeats the same response).
        max_prompts: use only the first this many prompts (None: all of them).
        batch_size: prompts per `generate` call.
        chat_template: a Jinja file or the template itself, given to every model's tokenizer and the RM's
            (as a preset's `chat_template`); None: each keeps its own (a stage's final/ keeps the one it
            trained with).

    Returns:
        `{model: {reward_mean, judge_mean, win_rate_vs_first, kl_to_first, response_length}}`, None
        where a number cannot be had (no RM, no judge, tokenizers that differ from the first's).
        `win_rate_vs_first` compares each prompt's mean judge score (the RM's without a judge) with
        the first model's on the same prompt; ties count half. `kl_to_first` is the mean over this
        model's samples of sum_t (log p_model - log p_first) at `temperature`: an unbiased estimate of
        KL(model || first) (at temperature 1.0, of the models themselves); 0 for the first. Greedy
        responses (temperature 0) are not samples of any distribution: the same sum is taken at
        temperature 1.0 on them, a measure of how far apart the models are, not an unbiased KL.

    Example:
        >>> from eulerforge_trl.evaluation import evaluate_models
        >>> summary = evaluate_models(["outputs/tiny/01_sft/final", "outputs/tiny/03_ppo/final"],
        ...     "examples/data/sft_eval.jsonl", reward="outputs/tiny/02_rm/final",
        ...     judge="eulerforge_trl.examples.animals:well_formed")
        >>> summary["outputs/tiny/03_ppo/final"]["judge_mean"]   # the share of well-formed answers
    """
    import torch
    from tqdm.auto import tqdm
    from trl.data_utils import is_conversational

    # everything a user can get wrong is checked before any model is loaded
    specs, rows, columns, judge_fn, reward_meta, output = _check_inputs(
        models, prompts, reward, judge, num_samples, output, max_new_tokens, temperature, max_prompts, batch_size
    )
    if chat_template:
        chat_template = resolve_chat_template(chat_template, key="--chat-template")
    output.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    loaded = load_model_set(specs, reward, reward_meta, device, chat_template=chat_template)
    conversational = is_conversational(rows[0])
    for spec, tokenizer in zip(specs, loaded.tokenizers):
        _require_template(tokenizer, rows, spec.name)
    items = [(p, k) for p in range(len(rows)) for k in range(num_samples)]
    per_model: list[list[Sample]] = []
    for i, spec in enumerate(specs):
        bar = tqdm(total=len(items), desc=f"evaluate {i + 1}/{len(specs)}", unit="sample", dynamic_ncols=True)
        torch.manual_seed(seed)  # the same seed for every model: identical models give identical samples
        samples, completion_ids = [], []
        for start in range(0, len(items), batch_size):
            batch = items[start : start + batch_size]
            texts, ids, lengths, kls = _sample_batch(
                loaded, i, [rows[p]["prompt"] for p, _ in batch], conversational, max_new_tokens, temperature
            )
            completion_ids += ids
            for (p, k), text, length, kl in zip(batch, texts, lengths, kls):
                samples.append(Sample(spec.name, p, k, rows[p]["prompt"], text, length, kl))
            bar.update(len(batch))
        bar.close()
        per_model.append(_scored(samples, completion_ids, loaded, judge_fn, judge, columns, batch_size))
    summary = summarize(per_model, [s.name for s in specs], by="judge" if judge else "reward")
    write_outputs(output, per_model, summary)
    return summary


def _check_inputs(
    models, prompts, reward, judge, num_samples, output, max_new_tokens, temperature, max_prompts, batch_size
):
    if not models:
        raise UserError("--models: give at least one model directory")
    repeated = sorted({m for m in models if models.count(m) > 1})
    if repeated:
        raise UserError(f"--models: {repeated[0]} is given twice")
    for flag, value, low in (
        ("--num-samples", num_samples, 1),
        ("--max-new-tokens", max_new_tokens, 1),
        ("--batch-size", batch_size, 1),
        ("--max-prompts", 1 if max_prompts is None else max_prompts, 1),
    ):
        if value < low:
            raise UserError(f"{flag} ({value}) must be >= {low}")
    if not temperature >= 0:
        raise UserError(f"--temperature ({temperature}) must be >= 0 (0: greedy decoding)")
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise UserError(f"--output {output}: is a file, not a directory")
    judge_fn = load_reward_function(judge, key="--judge") if judge else None
    rows = read_rows(prompts, "prompt_only", key="--prompts")
    columns = extra_columns(prompts, "prompt_only")
    if max_prompts is not None:
        rows, columns = rows[:max_prompts], {k: v[:max_prompts] for k, v in columns.items()}
    reward_meta = read_reward_meta(reward, key="--reward") if reward else None
    specs = [inspect_model(m) for m in models]
    return specs, rows, columns, judge_fn, reward_meta, output


def _require_template(tokenizer, rows, name: str) -> None:
    from ..data.render import require_chat_template

    require_chat_template(tokenizer, rows, name, key="--prompts", setting="--chat-template")


def _sample_batch(loaded: ModelSet, i: int, prompts: list, conversational: bool, max_new_tokens, temperature):
    """Sample model i on `prompts`; (texts, completion ids, lengths, per-sample KL to model 0)."""
    import torch

    from ..config.schema import GenerationSection
    from ..data.render import prompt_ids, stop_token_ids
    from ..generation import build_sampler, completion_ids, response_texts
    from ..trainers.ppo.rollout import response_forward

    tokenizer = loaded.tokenizers[i]
    stops = stop_token_ids(tokenizer, conversational)
    device = loaded.shared.get_input_embeddings().weight.device
    padded = tokenizer.pad({"input_ids": [prompt_ids(tokenizer, p) for p in prompts]}, return_tensors="pt")
    with torch.no_grad():
        with loaded.active(i) as model:
            sampler = build_sampler(
                GenerationSection(),  # the hf engine on the model as loaded: several models, one pass each
                model,
                tokenizer,
                adapter=None,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                stop_ids=stops,
            )
            roll = sampler.sample(padded["input_ids"].to(device), padded["attention_mask"].to(device))
            scale = temperature or 1.0  # greedy: log-probs of the models themselves
            own = response_forward(model, roll.input_ids, roll.attention_mask, roll.n_prompt, scale)[0] if i else None
        mask = roll.response_mask
        kls: list[float | None] = [0.0] * len(prompts)
        if i and _same_vocabulary(tokenizer, loaded.tokenizers[0]):
            with loaded.active(0) as first:
                ref = response_forward(first, roll.input_ids, roll.attention_mask, roll.n_prompt, scale)[0]
            kls = ((own - ref) * mask).sum(dim=1).tolist()
        elif i:
            kls = [None] * len(prompts)
    return response_texts(tokenizer, roll, stops), completion_ids(roll), mask.sum(dim=1).tolist(), kls


def _same_vocabulary(a, b) -> bool:
    return a is b or a.get_vocab() == b.get_vocab()


def _scored(samples: list[Sample], completion_ids, loaded: ModelSet, judge_fn, judge: str | None, columns, batch_size):
    """The samples with their RM score and judge score filled in."""
    from dataclasses import replace

    from ..data.render import as_completion
    from ..models.scorer import score

    prompts = [s.prompt for s in samples]
    rewards = [None] * len(samples)
    if loaded.scorer is not None:
        texts = [s.response for s in samples]
        rewards = score(loaded.scorer, loaded.reward_tokenizer, prompts, texts, batch_size=batch_size)
    judged = [None] * len(samples)
    if judge_fn is not None:
        completions = [as_completion(s.prompt, s.response) for s in samples]
        kwargs = {name: [values[s.prompt_index] for s in samples] for name, values in columns.items()}
        kwargs["completion_ids"] = completion_ids
        judged = [
            None if math.isnan(v) else v
            for v in call_reward_function(judge_fn, f"--judge {judge}", prompts, completions, **kwargs)
        ]
    return [replace(s, reward=r, judge=j) for s, r, j in zip(samples, rewards, judged)]


def summarize(per_model: list[list[Sample]], names: list[str], by: str = "judge") -> dict[str, dict]:
    """summary.json: per model the means, its win rate against the first model, its KL to the first.

    `by` ("judge" or "reward") is the score the win rate compares, prompt by prompt.
    """
    first = _per_prompt(per_model[0], by)
    summary = {}
    for name, samples in zip(names, per_model):
        mine = _per_prompt(samples, by)
        contests = [(mine[p], first[p]) for p in mine if p in first]
        summary[name] = {
            "reward_mean": _mean([s.reward for s in samples]),
            "judge_mean": _mean([s.judge for s in samples]),
            "win_rate_vs_first": (
                sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in contests) / len(contests) if contests else None
            ),
            "kl_to_first": _mean([s.kl_to_first for s in samples]),
            "response_length": _mean([s.response_length for s in samples]),
        }
    return summary


def _per_prompt(samples: list[Sample], by: str) -> dict[int, float]:
    """{prompt index: mean score over its samples}, prompts without any score left out."""
    scores: dict[int, list[float]] = {}
    for s in samples:
        value = s.judge if by == "judge" else s.reward
        if value is not None:
            scores.setdefault(s.prompt_index, []).append(value)
    return {p: sum(v) / len(v) for p, v in scores.items()}


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def write_outputs(output: Path, per_model: list[list[Sample]], summary: dict) -> None:
    """samples.jsonl (one line per sample), summary.json and summary.png, each written atomically."""
    from dataclasses import asdict

    from ..rundir import atomic_write_text
    from .report import plot_summary

    lines = [json.dumps(asdict(s), ensure_ascii=False) + "\n" for samples in per_model for s in samples]
    atomic_write_text(output / "samples.jsonl", "".join(lines))
    atomic_write_text(output / "summary.json", json.dumps(summary, indent=2) + "\n")
    plot_summary(summary, output / "summary.png")


def run_evaluate_command(args: argparse.Namespace) -> int:
    """The CLI handler: evaluate, then print the table and where the files are."""
    from ..runtime import library_notes_silenced
    from .report import format_table

    with library_notes_silenced():
        summary = _evaluate_from(args)
    print(format_table(summary, win_rate_by="judge" if args.judge else "reward" if args.reward else None))
    output = Path(args.output)
    print(f"wrote {output / 'samples.jsonl'}, {output / 'summary.json'}, {output / 'summary.png'}")
    return 0


def _evaluate_from(args: argparse.Namespace) -> dict:
    return evaluate_models(
        args.models,
        args.prompts,
        reward=args.reward,
        judge=args.judge,
        num_samples=args.num_samples,
        output=args.output,
        seed=args.seed,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        max_prompts=args.max_prompts,
        batch_size=args.batch_size,
        chat_template=args.chat_template,
    )
