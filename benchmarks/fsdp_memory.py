"""Per-process memory of a 2-process run, replicated (DDP) against sharded (FSDP2), on CPUs.

    .venv/bin/python benchmarks/fsdp_memory.py                      # SmolLM2-135M LoRA SFT, 3 steps
    .venv/bin/python benchmarks/fsdp_memory.py --full               # the same without LoRA (every weight trains)
    .venv/bin/python benchmarks/fsdp_memory.py --preset tiny_sft.yml --steps 2
    .venv/bin/python benchmarks/fsdp_memory.py --preset smollm2_135m_lora_ppo.yml --batch-size 4 \
        --configs ddp fsdp2 fsdp2-per-token --set model_name=SFT/final \
        --set training.reward_model.checkpoint_path=RM/final --set data.eval_split=0

Launches `eulerforge_trl.train` three times through `accelerate launch`, with
examples/accelerate/multi_cpu_2proc.yaml, fsdp2_cpu_2proc.yaml and the latter with
`fsdp_cpu_ram_efficient_loading: true` ("fsdp2-rank0-loads"), and prints per rank: the
parameter elements it holds (of the model's total), its RSS at the end of training (what it keeps:
weights, gradients, optimizer state), its peak RSS up to then (loading included: every rank
loads the whole model before it is sharded) and at exit
(after `final/` is written: sharded, rank 0 gathers the whole model there). A PPO run also gives
its median `time_generate` and `time_step`; "fsdp2-per-token" is FSDP2 with PPO's rollouts left on
the sharded layers (each layer gathered at every decoded token) instead of the policy gathered once
for the rollout phase (`trainers/ppo/sharding.gathered`). Ends with one JSON line.
Measure on a quiet machine; RSS includes the ~0.5 GB of torch, transformers and TRL themselves.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {
    "ddp": REPO / "examples" / "accelerate" / "multi_cpu_2proc.yaml",
    "fsdp2": REPO / "examples" / "accelerate" / "fsdp2_cpu_2proc.yaml",
}


PER_TOKEN_ENV = "BENCH_PPO_ROLLOUT_PER_TOKEN"


def worker(out: Path, argv: list[str]) -> int:
    """In each launched process: train, then record the peak RSS at exit beside the rank's holdings."""
    import contextlib

    sys.path.insert(0, str(REPO / "tests"))
    from eulerforge_trl.runtime import process_state
    from rank_probe import RANK_DIGEST_ENV, install, peak_rss_mb  # each rank's holdings, written after training

    install()
    if os.environ.get(PER_TOKEN_ENV):  # the comparison point only: rollouts on the sharded layers
        from eulerforge_trl.trainers.ppo import scoring

        scoring.gathered = lambda model: contextlib.nullcontext()
    os.environ[RANK_DIGEST_ENV] = str(out)
    from eulerforge_trl.train import main

    code = main(argv)
    rank = process_state().process_index
    (out / f"exit{rank}.json").write_text(json.dumps({"peak_rss_mb_at_exit": peak_rss_mb()}))
    return code


def config_file(config: str, root: Path) -> Path:
    """The accelerate config; "fsdp2-rank0-loads" is fsdp2_cpu_2proc.yaml with
    `fsdp_cpu_ram_efficient_loading: true` (rank 0 reads the weights, the others get their shards)."""
    if config != "fsdp2-rank0-loads":
        return CONFIGS["fsdp2" if config == "fsdp2-per-token" else config]
    text = CONFIGS["fsdp2"].read_text()
    path = root / "fsdp2_rank0_loads.yaml"
    path.write_text(text.replace("fsdp_cpu_ram_efficient_loading: false", "fsdp_cpu_ram_efficient_loading: true"))
    return path


def run(config: str, args, root: Path) -> list[dict]:
    out = root / config
    out.mkdir(parents=True)
    argv = [args.preset, "--output-dir", str(out / "run"), "--set", "training.report_to=[]"]
    for item in (
        f"training.max_steps={args.steps}",
        "training.save_steps=1000",
        f"training.batch_size={args.batch_size}",
    ):
        argv += ["--set", item]
    if args.full:
        argv += ["--set", "lora=null"]
    for item in args.set:
        argv += ["--set", item]
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file(config, root))]
    command += ["--main_process_port", "0", __file__, "--worker", str(out), *argv]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    if config == "fsdp2-per-token":
        env[PER_TOKEN_ENV] = "1"
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"{config} failed:\n{result.stderr[-3000:]}")
    timing = step_times(out / "run" / "metrics.jsonl")
    ranks = []
    for rank in (0, 1):
        held = json.loads((out / f"rank{rank}.json").read_text())
        ranks.append(
            {"config": config, "rank": rank, **held, **json.loads((out / f"exit{rank}.json").read_text()), **timing}
        )
    return ranks


def step_times(metrics: Path) -> dict:
    """PPO's median `time_generate` and `time_step` over the steps after the first (empty for other stages)."""
    import statistics

    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    steps = [r for r in rows if "time_step" in r][1:] or [r for r in rows if "time_step" in r]
    if not steps:
        return {}
    return {key: statistics.median(r[key] for r in steps) for key in ("time_generate", "time_step")}


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        return worker(Path(sys.argv[2]), sys.argv[3:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="smollm2_135m_lora_sft.yml")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--full", action="store_true", help="full fine-tuning (lora=null)")
    parser.add_argument("--batch-size", type=int, default=2, help="training.batch_size (per process)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more preset overrides")
    parser.add_argument(
        "--configs",
        nargs="+",
        default=["ddp", "fsdp2", "fsdp2-rank0-loads"],
        choices=["ddp", "fsdp2", "fsdp2-rank0-loads", "fsdp2-per-token"],
    )
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="fsdp-memory-") as tmp:
        for config in args.configs:
            rows += run(config, args, Path(tmp))
    print(
        f"{'config':17} {'rank':>4} {'held params':>12} {'of':>12} {'trainable held':>14} "
        f"{'RSS end of train':>16} {'peak RSS train':>14} {'peak at exit':>12}"
    )
    for r in rows:
        print(
            f"{r['config']:17} {r['rank']:>4} {r['held']:>12,} {r['total']:>12,} {r['trainable_held']:>14,} "
            f"{r['rss_mb']:>13.0f} MB {r['peak_rss_mb']:>11.0f} MB {r['peak_rss_mb_at_exit']:>9.0f} MB"
            + (f"   generate {r['time_generate']:.2f} s, step {r['time_step']:.2f} s" if "time_step" in r else "")
        )
    print(json.dumps({"preset": args.preset, "steps": args.steps, "full": args.full, "sets": args.set, "ranks": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
