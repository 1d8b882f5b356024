"""Data parallelism on the CPU: PPO under `accelerate launch` with 2 processes (gloo), resumed.

The run must finish, end with identical trainable weights on both ranks (each rank writes a
digest: tests/rank_probe.py), write its files once (rank 0 only), keep each
rank's RNG stream and resume both ranks exactly. Every other stage's data-parallel run (and all of
them sharded) is in tests/test_fsdp.py, which launches the stages together.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from eulerforge_trl.rundir import read_metrics

pytestmark = pytest.mark.slow  # two launches of two processes: ~40 s

REPO = Path(__file__).resolve().parents[1]
ACCELERATE_CONFIG = REPO / "examples" / "accelerate" / "multi_cpu_2proc.yaml"


def launch(tiny_argv, preset, out, digests, *overrides):
    argv = tiny_argv(preset, out, *overrides)
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(ACCELERATE_CONFIG),
        "--main_process_port",
        "0",
        str(REPO / "tests" / "rank_probe.py"),  # eulerforge_trl.train, each rank's digest written after training
        *argv,
    ]
    env = {**os.environ, "EULERFORGE_RANK_DIGEST_DIR": str(digests), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def assert_ranks_in_sync(digests: Path):
    files = sorted(digests.glob("rank*.txt"))
    assert [f.name for f in files] == ["rank0.txt", "rank1.txt"]
    assert files[0].read_text() == files[1].read_text(), "ranks ended with different weights"


def assert_written_once(out: Path, stage: str):
    steps = [r["step"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r or "reward_mean" in r]
    assert steps and len(steps) == len(set(steps)), f"metrics.jsonl has duplicate steps: {steps}"
    assert (out / "final" / "eulerforge_final.json").is_file()
    assert stage in (out / "final" / "eulerforge_final.json").read_text()


def test_ppo_trains_data_parallel_and_resumes_every_rank_exactly(tmp_path, tiny_argv, tiny_sft_final, tiny_rm_final):
    import shutil

    import torch

    args = [
        f"model_name={tiny_sft_final}",
        f"training.reward_model.checkpoint_path={tiny_rm_final}",
        "training.max_steps=3",
        "training.save_steps=2",
        "training.batch_size=4",
        "training.lr_scheduler=constant",
        "training.ppo.max_gen_len=8",
        "training.ppo.sample_every=1",
        "training.ppo.score_norm_samples=8",
    ]
    out = tmp_path / "out"
    launch(tiny_argv, "tiny_ppo.yml", out, tmp_path / "digests", *args)
    assert_ranks_in_sync(tmp_path / "digests")
    assert_written_once(out, "ppo")
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [0, 1, 2, 3]
    # each process samples its own stream, and the checkpoint keeps both states
    rng = torch.load(out / "checkpoints" / "checkpoint-2" / "ppo_state.pt", weights_only=False)["rng"]
    assert len(rng) == 2 and not torch.equal(rng[0]["torch"], rng[1]["torch"])

    # killed after step 2: the rerun resumes both ranks from checkpoint-2 and ends where the first run did
    resumed = tmp_path / "resumed"
    shutil.copytree(out, resumed, ignore=shutil.ignore_patterns("checkpoint-3", "final"))
    launch(tiny_argv, "tiny_ppo.yml", resumed, tmp_path / "digests_resumed", *args)
    assert (tmp_path / "digests_resumed" / "rank1.txt").read_text() == (tmp_path / "digests" / "rank1.txt").read_text()
    last = read_metrics(out / "metrics.jsonl")[-1]
    again = read_metrics(resumed / "metrics.jsonl")[-1]
    for key in ("reward_mean", "kl_divergence", "ppo_loss", "value_loss"):
        assert again[key] == pytest.approx(last[key], abs=1e-6), key
