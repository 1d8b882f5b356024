"""Score generations in a samples file with a judge: the true objective next to the RM's reward.

    python examples/judge_samples.py outputs/smollm2/03_ppo/eval_samples.jsonl
    python examples/judge_samples.py FILE --judge my_rules.py:my_fn

FILE is PPO's `eval_samples.jsonl` (held-out prompts sampled before the first step and after the
last) or `samples.jsonl`; each line holds `step`, `prompt`, `response` and `reward` (the RM's raw
score). The judge has TRL's reward-function signature, `fn(prompts, completions) -> list[float]`;
the default is the example task's rule, `eulerforge_trl.examples.reviews:review_reward`. Prints,
per step, the number of samples, the mean RM reward and the mean judge score, so a rising reward
with a flat judge (reward hacking) shows at once.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from eulerforge_trl.data.render import as_completion
from eulerforge_trl.errors import UserError
from eulerforge_trl.rewards.functions import call_reward_function, load_reward_function


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", help="eval_samples.jsonl or samples.jsonl")
    parser.add_argument("--judge", default="eulerforge_trl.examples.reviews:review_reward")
    args = parser.parse_args()
    try:
        judge_all(args.samples, args.judge)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def judge_all(samples: str, spec: str) -> None:
    judge = load_reward_function(spec, key="--judge")
    by_step = defaultdict(list)
    for line in Path(samples).read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            by_step[record["step"]].append(record)
    print(f"{'step':>5} {'n':>4} {'rm_reward':>10} {'judge':>7} {'judge>0':>8}")
    for step, records in sorted(by_step.items()):
        prompts, responses = [r["prompt"] for r in records], [r["response"] for r in records]
        completions = [as_completion(p, c) for p, c in zip(prompts, responses)]  # as TRL passes them
        scores = call_reward_function(judge, f"--judge {spec}", prompts, completions)
        rm = sum(r["reward"] for r in records) / len(records)
        mean = sum(scores) / len(scores)
        positive = sum(s > 0 for s in scores) / len(scores)
        print(f"{step:>5} {len(records):>4} {rm:>10.3f} {mean:>7.3f} {positive:>8.2f}")


if __name__ == "__main__":
    main()
