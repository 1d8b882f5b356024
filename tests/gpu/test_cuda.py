"""GPU paths, skipped without CUDA: a bf16 PPO run that resumes from its checkpoint on the GPU.

On a CPU these skip; run them whenever a GPU is available (`pytest tests/gpu`). Resuming used to
fail on every GPU: torch.load maps the saved CUDA RNG states onto the device, and
`torch.cuda.set_rng_state_all` accepts CPU tensors only.
"""

from __future__ import annotations

import pytest
import torch

from eulerforge_trl.rundir import read_metrics
from eulerforge_trl.train import main

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_bf16_ppo_resumes_on_cuda(tmp_path, tiny_argv, tiny_sft_final, tiny_rm_final):
    def ppo(steps: int) -> int:
        return main(
            tiny_argv(
                "tiny_ppo.yml",
                tmp_path,
                f"model_name={tiny_sft_final}",
                f"training.reward_model.checkpoint_path={tiny_rm_final}",
                f"training.max_steps={steps}",
                "training.save_steps=2",
                "training.batch_size=8",
                "training.precision=bf16",
            )
        )

    assert ppo(2) == 0
    assert ppo(4) == 0  # resumes from checkpoint-2 on the GPU
    history = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "reward_mean" in r]
    assert [r["step"] for r in history] == [1, 2, 3, 4]
    assert all(torch.isfinite(torch.tensor(r["reward_mean"])) for r in history)


def test_compiled_static_cache_rollouts_on_cuda(tmp_path, tiny_argv, tiny_sft_final, tiny_rm_final):
    """generation.compile (on by default with CUDA): PPO samples through a static, compiled KV cache;
    bucketed prompt widths keep the cache's shape, the rollouts keep their layout, the run learns nothing odd."""
    code = main(
        tiny_argv(
            "tiny_ppo.yml",
            tmp_path,
            f"model_name={tiny_sft_final}",
            f"training.reward_model.checkpoint_path={tiny_rm_final}",
            "training.max_steps=3",
            "training.batch_size=8",
            "training.precision=bf16",
        )
    )
    assert code == 0
    history = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "reward_mean" in r]
    assert len(history) == 3 and history[0]["kl_divergence"] == pytest.approx(0.0, abs=1e-2)  # bf16
    assert all(torch.isfinite(torch.tensor(r["reward_mean"])) and r["response_length"] > 0 for r in history)
