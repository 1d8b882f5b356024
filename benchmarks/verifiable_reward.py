"""Held-out exact match, greedy, before and after GRPO and after PPO on a reward you can check.

    python benchmarks/verifiable_reward.py --output outputs/verifiable          # the shipped math presets
    python benchmarks/verifiable_reward.py --grpo-steps 100 --skip-ppo --set training.grpo.loss_type=dr_grpo

Runs what a user runs, through the CLI: `eulerforge train` on the GRPO preset (then the PPO preset,
both from the same starting model), then one `eulerforge evaluate --temperature 0` of the starting
model and every trained `final/` on the held-out problems, judged by the task's exact match. Prints
one line per model (exact match, KL to the start, response length; each stage's training KL and
length over its last 10% of steps beside it) and a JSON line last. Each stage's wall time is in it.
A finished stage in `--output` is skipped (its files are reused): rerun the same command after an
interruption, or delete the stage's directory to train it again.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GRPO_PRESET = "smollm2_135m_lora_grpo_math.yml"
PPO_PRESET = "smollm2_135m_lora_ppo_math.yml"
HELD_OUT = REPO / "examples" / "data" / "math" / "arithmetic_eval.jsonl"
JUDGE = "eulerforge_trl.examples.arithmetic:exact_match"
# what each stage logs as its KL to the starting model and its response length
STAGE_KEYS = {"grpo": ("kl_divergence", "completions/mean_length"), "ppo": ("kl_divergence", "response_length")}


def eulerforge(*args: str, log: Path) -> float:
    """Run `eulerforge ARGS` with its output in `log`; the wall time in seconds. Exits on failure."""
    start = time.perf_counter()
    with log.open("w", encoding="utf-8") as out:
        code = subprocess.call([sys.executable, "-m", "eulerforge_trl.cli", *args], stdout=out, stderr=out, cwd=REPO)
    if code != 0:
        tail = log.read_text(encoding="utf-8").strip().splitlines()[-3:]
        sys.exit(f"eulerforge {' '.join(args[:2])} failed (exit {code}), see {log}:\n" + "\n".join(tail))
    return time.perf_counter() - start


def last_tenth(metrics: Path, key: str) -> float | None:
    """Mean of `key` over the last 10% of the logged training steps (at least one)."""
    values = []
    for line in metrics.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        value = record.get(key)
        if record.get("step", 0) > 0 and isinstance(value, (int, float)) and math.isfinite(value):
            values.append(float(value))
    if not values:
        return None
    k = max(1, len(values) // 10)
    return sum(values[-k:]) / k


def train(stage: str, preset: str, out: Path, steps: int | None, model: str, overrides: list[str]) -> dict:
    """Train one stage unless its `final/` is there; its wall time and last-10% KL and length."""
    run = out / stage
    sets = [f"model_name={model}", "training.report_to=[]", *overrides]
    if steps is not None:
        sets.append(f"training.max_steps={steps}")
    seconds = None
    if not (run / "final").is_dir():
        args = ["train", preset, "--output-dir", str(run)]
        for item in sets:
            args += ["--set", item]
        seconds = eulerforge(*args, log=out / f"{stage}.log")
    kl_key, length_key = STAGE_KEYS[stage]
    return {
        "final": str(run / "final"),
        "train_seconds": seconds,
        "train_kl_last10": last_tenth(run / "metrics.jsonl", kl_key),
        "train_response_length_last10": last_tenth(run / "metrics.jsonl", length_key),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="outputs/verifiable", help="where runs, logs and the evaluation go")
    parser.add_argument("--model", default="smollm2-135m-instruct", help="the starting model (model_name)")
    parser.add_argument("--grpo-preset", default=GRPO_PRESET)
    parser.add_argument("--ppo-preset", default=PPO_PRESET)
    parser.add_argument("--grpo-steps", type=int, default=None, help="training.max_steps (default: the preset's)")
    parser.add_argument("--ppo-steps", type=int, default=None, help="training.max_steps (default: the preset's)")
    parser.add_argument("--skip-ppo", action="store_true", help="GRPO only")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an override for GRPO")
    parser.add_argument("--ppo-set", action="append", default=[], metavar="KEY=VALUE", help="an override for PPO")
    parser.add_argument("--prompts", default=str(HELD_OUT), help="held-out problems (with their answer column)")
    parser.add_argument("--judge", default=JUDGE)
    parser.add_argument("--max-prompts", type=int, default=None, help="evaluate on the first K held-out problems")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))

    out = Path(args.output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    stages = {"grpo": train("grpo", args.grpo_preset, out, args.grpo_steps, args.model, args.set)}
    if not args.skip_ppo:
        stages["ppo"] = train("ppo", args.ppo_preset, out, args.ppo_steps, args.model, args.ppo_set)

    models = [args.model] + [s["final"] for s in stages.values()]
    evaluate = ["evaluate", "--models", *models, "--prompts", args.prompts, "--judge", args.judge]
    evaluate += ["--temperature", "0", "--max-new-tokens", str(args.max_new_tokens), "--output", str(out / "eval")]
    if args.max_prompts:
        evaluate += ["--max-prompts", str(args.max_prompts)]
    eval_seconds = eulerforge(*evaluate, log=out / "evaluate.log")
    summary = json.loads((out / "eval" / "summary.json").read_text(encoding="utf-8"))

    result: dict = {"model": args.model, "eval_seconds": eval_seconds, "prompts": args.prompts}
    start = summary[models[0]]
    result["start"] = {"exact_match": start["judge_mean"], "response_length": start["response_length"]}
    print(f"{'model':<8} {'exact match':>11} {'change':>8} {'KL to start':>12} {'length':>7}  training (last 10%)")
    print(f"{'start':<8} {start['judge_mean']:>11.3f} {'':>8} {0.0:>12.3f} {start['response_length']:>7.1f}")
    for name, stage in stages.items():
        row = summary[stage["final"]]
        change = row["judge_mean"] - start["judge_mean"]
        result[name] = {
            "exact_match": row["judge_mean"],
            "points": round(100 * change, 1),
            "kl_to_start": row["kl_to_first"],
            "response_length": row["response_length"],
            **stage,
        }
        kl, length = stage["train_kl_last10"], stage["train_response_length_last10"]
        trained = f"KL {kl:.3f}, length {length:.1f}" if kl is not None and length is not None else "not logged"
        minutes = f", {stage['train_seconds'] / 60:.1f} min" if stage["train_seconds"] else ""
        print(
            f"{name:<8} {row['judge_mean']:>11.3f} {100 * change:>+7.1f}p {row['kl_to_first']:>12.3f} "
            f"{row['response_length']:>7.1f}  {trained}{minutes}"
        )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
