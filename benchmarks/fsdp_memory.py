"""Per-process memory of a 2-process SFT run, replicated (DDP) against sharded (FSDP2), on CPUs.

    .venv/bin/python benchmarks/fsdp_memory.py                      # SmolLM2-135M LoRA SFT, 3 steps
    .venv/bin/python benchmarks/fsdp_memory.py --full               # the same without LoRA (every weight trains)
    .venv/bin/python benchmarks/fsdp_memory.py --preset tiny_sft.yml --steps 2

Launches `eulerforge_trl.train` three times through `accelerate launch`, with
examples/accelerate/multi_cpu_2proc.yaml, fsdp2_cpu_2proc.yaml and the latter with
`fsdp_cpu_ram_efficient_loading: true` ("fsdp2-rank0-loads"), and prints per rank: the
parameter elements it holds (of the model's total), its RSS at the end of training (what it keeps:
weights, gradients, optimizer state), its peak RSS up to then (loading included: every rank
loads the whole model before it is sharded) and at exit
(after `final/` is written: sharded, rank 0 gathers the whole model there). Ends with one JSON line.
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


def worker(out: Path, argv: list[str]) -> int:
    """In each launched process: train, then record the peak RSS at exit beside the rank's holdings."""
    from eulerforge_trl.runtime import RANK_DIGEST_ENV, peak_rss_mb, process_state

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
        return CONFIGS[config]
    text = CONFIGS["fsdp2"].read_text()
    path = root / "fsdp2_rank0_loads.yaml"
    path.write_text(text.replace("fsdp_cpu_ram_efficient_loading: false", "fsdp_cpu_ram_efficient_loading: true"))
    return path


def run(config: str, preset: str, steps: int, full: bool, root: Path) -> list[dict]:
    out = root / config
    out.mkdir(parents=True)
    argv = [preset, "--output-dir", str(out / "run"), "--set", "training.report_to=[]"]
    for item in (f"training.max_steps={steps}", "training.save_steps=1000", "training.batch_size=2"):
        argv += ["--set", item]
    if full:
        argv += ["--set", "lora=null"]
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file(config, root))]
    command += ["--main_process_port", "0", __file__, "--worker", str(out), *argv]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"{config} failed:\n{result.stderr[-3000:]}")
    ranks = []
    for rank in (0, 1):
        held = json.loads((out / f"rank{rank}.json").read_text())
        ranks.append({"config": config, "rank": rank, **held, **json.loads((out / f"exit{rank}.json").read_text())})
    return ranks


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        return worker(Path(sys.argv[2]), sys.argv[3:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="smollm2_135m_lora_sft.yml")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--full", action="store_true", help="full fine-tuning (lora=null)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="fsdp-memory-") as tmp:
        for config in (*CONFIGS, "fsdp2-rank0-loads"):
            rows += run(config, args.preset, args.steps, args.full, Path(tmp))
    print(
        f"{'config':17} {'rank':>4} {'held params':>12} {'of':>12} {'trainable held':>14} "
        f"{'RSS end of train':>16} {'peak RSS train':>14} {'peak at exit':>12}"
    )
    for r in rows:
        print(
            f"{r['config']:17} {r['rank']:>4} {r['held']:>12,} {r['total']:>12,} {r['trainable_held']:>14,} "
            f"{r['rss_mb']:>13.0f} MB {r['peak_rss_mb']:>11.0f} MB {r['peak_rss_mb_at_exit']:>9.0f} MB"
        )
    print(json.dumps({"preset": args.preset, "steps": args.steps, "full": args.full, "ranks": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
