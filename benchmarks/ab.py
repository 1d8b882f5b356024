"""Before/after of one optimisation, measured in one run: `ppo_step.py` on two git revisions.

    python benchmarks/ab.py BEFORE_REV AFTER_REV [ppo_step.py flags ...]

Each revision is checked out into a temporary git worktree and benchmarked with that worktree's
`src/` first on PYTHONPATH (the benchmark script itself is this tree's). Runs alternate
before/after `--rounds` times so machine drift hits both equally; the medians are compared.
The last line is one JSON object with both step times and `after_over_before`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def run_benchmark(src: Path, flags: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run(
        [sys.executable, str(HERE / "ppo_step.py"), "--json-only", *flags],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--rounds", type=int, default=2)
    args, flags = parser.parse_known_args()
    results: dict[str, list[dict]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {}
        for label in ("before", "after"):
            tree = Path(tmp) / label
            rev = getattr(args, label)
            subprocess.run(
                ["git", "worktree", "add", "--detach", str(tree), rev], cwd=REPO, check=True, capture_output=True
            )
            trees[label] = tree
        try:
            for _ in range(args.rounds):
                for label in ("before", "after"):
                    results[label].append(run_benchmark(trees[label] / "src", flags))
        finally:
            for tree in trees.values():
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, capture_output=True)
    summary = {}
    for label in ("before", "after"):
        runs = results[label]
        summary[label] = {
            "rev": getattr(args, label),
            "step_s": statistics.median(r["step_s"] for r in runs),
            "step_over_floor": statistics.median(r["step_over_floor"] for r in runs),
            "generate_s": statistics.median(r["generate_s"] for r in runs),
            "update_s": statistics.median(r["update_s"] for r in runs),
            "peak_mem_mib": max(r["peak_mem_mib"] for r in runs),
        }
        print(
            f"{label:>6} {summary[label]['rev'][:10]:>10}  step {summary[label]['step_s']:.3f} s  "
            f"generate {summary[label]['generate_s']:.3f} s  update {summary[label]['update_s']:.3f} s  "
            f"step/floor {summary[label]['step_over_floor']:.2f}  "
            f"peak {summary[label]['peak_mem_mib']:.0f} MiB"
        )
    ratio = summary["after"]["step_s"] / summary["before"]["step_s"]
    print(
        json.dumps(
            {
                **{f"{k}_{label}": v for label in summary for k, v in summary[label].items()},
                "after_over_before": round(ratio, 3),
                "flags": flags,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
