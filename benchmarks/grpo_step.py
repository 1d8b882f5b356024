"""Benchmark one step of our GRPO stage, built like ppo_step.py to compare with PPO at equal samples per step.

The stage is ``eulerforge_trl.trainers.grpo.run_grpo``: TRL's ``GRPOTrainer`` on one shared
``PeftModel`` (policy LoRA; reference = adapters disabled; reward on the same base). It is run as
the pipeline runs it, from a preset built with ``load_preset(None, {...})``, on the model
``ppo_step.py`` uses: without ``--model`` a random-init ``qwen3_5_text`` of ``--hidden``/``--layers``
with the tokenizer our package ships (``ppo_step.build_model_dir``), with ``--model`` a local model
directory or a built-in name (``smollm2-135m-instruct``) and its own tokenizer. LoRA of rank
``--lora-r`` (alpha 2r, dropout 0, all-linear), a random reward head
(``training.reward_model.checkpoint_path: ""``), the preset's default beta (a reference pass with
adapters off) and one update per generated batch (``num_iterations`` 1).

Equal samples per step: ``--batch`` B counts completions. A GRPO step samples B/``--num-generations``
prompts x ``--num-generations`` completions each; a PPO step B prompts x 1. Completions are at most
``--response-len`` tokens (``max_completion_length``); prompts are ``ppo_step.write_prompts``' texts
of exactly ``--prompt-len`` tokens, the same as PPO's.
With ``grad_accum`` 1, TRL generates once per optimizer step (``steps_per_generation`` 1), so one
training step = generate B completions + score them (reward, reference) + one forward/backward of
the policy + the optimizer step. The benchmark checks this from TRL's token count (``num_tokens``
grows by B x (prompt + mean completion length) every step). ``--ppo-epochs`` and ``--mini-batches``
are PPO's: accepted, so that one argv serves both benchmarks, and ignored.

What it measures, after ``--warmup`` untimed steps:

* the step: the median wall time over ``--steps`` training steps, from the trainer's
  ``on_step_begin`` to its ``on_step_end`` (a callback added to the stage's trainer; CUDA is
  synchronised at both ends). Inside: generation, scoring, update, gradient clipping, optimizer
  step. Outside: fetching the step's prompt rows and logging (both small);
* the mean completion length (TRL's ``completions/mean_length``) and the share of completions cut
  at ``--response-len`` without EOS (``completions/clipped_ratio``): even a random model samples
  EOS now and then (TRL then pads the batch to its longest completion);
* peak memory, as ppo_step.py: ``torch.cuda.max_memory_allocated`` on CUDA, peak RSS
  (``ru_maxrss``, the whole process: model build and load included) on a CPU, read at the end of
  training.

A table goes to stdout (the trainer's own logs to stderr), then, as the last line, one JSON object
(only that with ``--json-only``)::

    python benchmarks/grpo_step.py                        # tiny: 64/2 hidden/layers, 2 prompts x 4, 16+32 tokens
    python benchmarks/grpo_step.py --hidden 256 --layers 4 --batch 16 --response-len 64
    python benchmarks/grpo_step.py --model smollm2-135m-instruct --batch 8 --response-len 64
    python benchmarks/grpo_step.py --steps 2 --threads 1  # a quick look on a busy machine

Timings need idle cores; on a shared 2-core machine prefer ``--threads 1``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _shapes  # noqa: E402
import ppo_step  # noqa: E402  (top level imports only the standard library and _shapes)

BENCH_NAME = "eulerforge-trl GRPOTrainer"
# help of the shared flags whose meaning differs here
HELP = {
    "--batch": "completions per GRPO step: batch/num-generations prompts x num-generations (PPO: prompts)",
    "--response-len": "new tokens per completion, at most (training.grpo.max_completion_length)",
    "--ppo-epochs": "PPO only: accepted and ignored (GRPO makes one update per batch)",
    "--mini-batches": "PPO only: accepted and ignored",
    "--steps": "timed GRPO steps",
    "--warmup": "GRPO steps run first and not timed",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from eulerforge_trl.config.schema import GRPOSection

    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="--ppo-epochs and --mini-batches are accepted so that compare.py can give both benchmarks "
        "the same argv; GRPO ignores them.",
    )
    _shapes.add_shape_args(p)
    for action in p._actions:
        for flag in action.option_strings:
            action.help = HELP.get(flag, action.help)
    p.add_argument(
        "--num-generations",
        type=int,
        default=GRPOSection.num_generations,
        help=f"completions per prompt (training.grpo.num_generations, default {GRPOSection.num_generations}); "
        "must divide --batch",
    )
    ppo_step.add_generation_args(p)
    p.add_argument("--json-only", action="store_true", help="print only the JSON line")
    args = p.parse_args(argv)
    _shapes.check_shape_args(p, args)
    if args.num_generations < 2:
        p.error(f"--num-generations must be >= 2 (GRPO compares completions of a prompt), got {args.num_generations}")
    if args.batch % args.num_generations:
        p.error(
            f"--num-generations ({args.num_generations}) must divide --batch ({args.batch}): --batch counts "
            f"completions, batch/num-generations prompts per step"
        )
    return args


def log(msg: str) -> None:
    print(f"[grpo_step] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# 1. Model, prompts, preset
# --------------------------------------------------------------------------------------------


def make_preset(args: argparse.Namespace, model_name: str, prompts: Path, output_dir: Path, dtype: str):
    from eulerforge_trl.config import load_preset

    max_steps = args.warmup + args.steps
    return load_preset(
        None,
        {
            "model_name": model_name,
            "lora": {"r": args.lora_r, "alpha": 2 * args.lora_r, "dropout": 0.0, "target_modules": "all-linear"},
            "data": {"task": "prompt_only", "path": str(prompts)},
            "training": {
                "type": "grpo",
                "max_steps": max_steps,
                "batch_size": args.batch,  # completions per step
                "seed": args.seed,
                "precision": dtype,
                "report_to": [],
                "logging_steps": 1,  # completions/mean_length and num_tokens of every step
                "save_steps": max_steps + 1,  # no checkpoint
                "reward_model": {"checkpoint_path": ""},
                "grpo": {
                    "num_generations": args.num_generations,
                    "max_completion_length": args.response_len,
                    "sample_every": 0,
                },
            },
            "output_dir": str(output_dir),
            **ppo_step.generation_preset(args),
        },
    )


# --------------------------------------------------------------------------------------------
# 2. Timing
# --------------------------------------------------------------------------------------------


def step_timer(args: argparse.Namespace, device: str):
    """A TrainerCallback timing every training step and collecting what TRL logs of it."""
    from transformers import TrainerCallback

    now = ppo_step.make_clock(device)

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.walls: list[float] = []  # every step, warmup included
            self.logs: dict[int, dict] = {}  # global step -> TRL's logs of that step
            self.model_config = self.weights_dtype = self.params = self.peak = None
            self.start = 0.0

        def on_train_begin(self, targs, state, control, model=None, **kwargs):
            self.model_config = model.config
            self.weights_dtype = model.get_input_embeddings().weight.dtype
            self.params = ppo_step.base_parameter_count(model)

        def on_step_begin(self, targs, state, control, **kwargs):
            self.start = now()

        def on_step_end(self, targs, state, control, **kwargs):
            self.walls.append(now() - self.start)
            step = len(self.walls)
            log(f"{'step' if step > args.warmup else 'warmup'} {step}: {self.walls[-1]:.3f} s")

        def on_log(self, targs, state, control, logs=None, **kwargs):
            if logs and "completions/mean_length" in logs:
                self.logs[state.global_step] = dict(logs)

        def on_train_end(self, targs, state, control, **kwargs):
            self.peak = ppo_step.peak_memory_mib(device)

    return StepTimer()


def with_callback(trainer_cls, callback):
    """`trainer_cls` as the stage calls it, with `callback` added to every trainer it builds."""

    def build(*args, **kwargs):
        trainer = trainer_cls(*args, **kwargs)
        trainer.add_callback(callback)
        return trainer

    return build


def run_stage(preset, run_dir: Path, timer) -> None:
    """The GRPO stage as the pipeline runs it, with `timer` on its trainer (src/ is not changed)."""
    from eulerforge_trl.rundir import RunDir
    from eulerforge_trl.trainers import grpo

    patched = mock.patch.object(grpo, "GRPOTrainer", with_callback(grpo.GRPOTrainer, timer))
    # transformers prints every log dict to stdout: stdout is for our table and JSON line only
    with patched, contextlib.redirect_stdout(sys.stderr):
        grpo.run_grpo(preset, RunDir(run_dir), resume_from=None)


def check_samples_per_step(timer, args: argparse.Namespace) -> None:
    """Every step saw B completions of prompt-len tokens: TRL's num_tokens grows by B x (prompt + completion)."""
    seen = 0
    for step in range(1, args.warmup + args.steps + 1):
        logs = timer.logs.get(step)
        if logs is None:
            raise RuntimeError(f"TRL logged nothing for step {step} (logging_steps is 1)")
        expected = args.batch * (args.prompt_len + logs["completions/mean_length"])
        if abs(logs["num_tokens"] - seen - expected) > 0.5:
            raise RuntimeError(
                f"step {step} saw {logs['num_tokens'] - seen:.0f} tokens, expected {expected:.0f} = --batch "
                f"{args.batch} x (--prompt-len {args.prompt_len} + mean completion length)"
            )
        seen = logs["num_tokens"]


# --------------------------------------------------------------------------------------------
# 3. Run, report
# --------------------------------------------------------------------------------------------


def timed_mean(timer, args: argparse.Namespace, key: str) -> float | None:
    values = [timer.logs[s][key] for s in range(args.warmup + 1, args.warmup + args.steps + 1) if key in timer.logs[s]]
    return round(statistics.mean(values), 3) if values else None


def run_benchmark(args: argparse.Namespace) -> dict:
    device, dtype = ppo_step.start(args)
    import torch

    prompts_per_step = args.batch // args.num_generations
    timer = step_timer(args, device)
    with tempfile.TemporaryDirectory(prefix="grpo_step_") as tmp:
        tmp = Path(tmp)
        model_name, tokenizer = ppo_step.prepare_model(args, tmp)
        n_prompts = prompts_per_step * (args.warmup + args.steps)
        ppo_step.write_prompts(tokenizer, tmp / "prompts.jsonl", n_prompts, args.prompt_len, args.seed)
        preset = make_preset(args, model_name, tmp / "prompts.jsonl", tmp / "run", dtype)
        torch.manual_seed(args.seed)  # the LoRA's initialisation
        run_stage(preset, tmp / "run", timer)
    if len(timer.walls) != args.warmup + args.steps:
        raise RuntimeError(f"{len(timer.walls)} training steps ran, expected {args.warmup + args.steps}")
    check_samples_per_step(timer, args)

    walls = timer.walls[args.warmup :]
    mem, mem_kind = timer.peak
    short = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
    r = 4  # decimals of seconds in the JSON
    return {
        "bench": BENCH_NAME,
        "step_s": round(statistics.median(walls), r),
        "step_times_s": [round(w, r) for w in walls],
        "peak_mem_mib": round(mem, 1),
        "mem_kind": mem_kind,
        "samples_per_step": args.batch,
        "prompts_per_step": prompts_per_step,
        "num_generations": args.num_generations,
        "completion_len_mean": timed_mean(timer, args, "completions/mean_length"),
        "no_eos_fraction": timed_mean(timer, args, "completions/clipped_ratio"),
        "beta": preset.training.grpo.beta,
        "num_iterations": preset.training.grpo.passthrough.get("num_iterations", 1),  # TRL's default: 1
        "device": device,
        "dtype": short[timer.weights_dtype],
        "thp_mem_alloc": os.environ.get("THP_MEM_ALLOC_ENABLE"),  # torch's huge-page CPU allocations
        "threads": torch.get_num_threads(),
        **_shapes.shape_record(args, timer.model_config),
        "steps": args.steps,
        "warmup": args.warmup,
        "seed": args.seed,
        "vocab": len(tokenizer),
        "params": timer.params,
    }


def print_table(res: dict) -> None:
    print(
        f"{res['bench']} on {res['device']} ({res['dtype']}, {res['threads']} threads): {res['model']} "
        f"{res['hidden']}/{res['layers']} hidden/layers ({res['params'] / 1e6:.2f}M params, vocab {res['vocab']}), "
        f"{res['samples_per_step']} completions per step = {res['prompts_per_step']} prompts x "
        f"{res['num_generations']}, {res['prompt_len']}+{res['response_len']} tokens, LoRA r {res['lora_r']}, "
        f"beta {res['beta']}, {res['num_iterations']} update per batch"
    )
    length = res["completion_len_mean"]
    rows = [
        ("step (median s)", f"{res['step_s']:.4f}"),
        ("timed steps (s)", " ".join(f"{t:.3f}" for t in res["step_times_s"])),
        ("completions/s", f"{res['samples_per_step'] / res['step_s']:.1f}"),
        (
            "completion length (mean)",
            "-" if length is None else f"{length:.2f} of {res['response_len']} (no EOS: {res['no_eos_fraction']})",
        ),
        (f"peak memory ({res['mem_kind']})", f"{res['peak_mem_mib']:.0f} MiB"),
    ]
    width = max(len(key) for key, _ in rows)
    for key, val in rows:
        print(f"{key:<{width}}  {val}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run_benchmark(args)
    if not args.json_only:
        print_table(result)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
