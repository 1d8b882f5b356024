"""Sharded training (FSDP2) on 2 CPU processes (gloo), against data parallelism (DDP) on the same 2.

SFT, RM, DPO, GRPO and PPO (twice: with each critic) run once under each config
(`examples/accelerate/multi_cpu_2proc.yaml` and `fsdp2_cpu_2proc.yaml`), all in one launch per
config (tests/multiprocess_stages.py).
Both see the same rows in the same order and start from the same weights, so the sharded run must
reproduce the replicated one step for step: the losses agree to LOSS_RTOL (only the order of
floating-point sums differs, reduce-scatter against all-reduce). Each rank writes what it holds
(`tests/rank_probe.py`): sharded, about half; replicated, all.
Every sharded run, killed after its checkpoint at step 2, resumes from it and ends where it would have.
Every run, replicated or sharded, ends with the same weights on both ranks and writes its files once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eulerforge_trl.rundir import read_metrics

pytestmark = pytest.mark.slow  # 3 launches of 2 processes: ~3.5 min, 4.5 min with the shared tiny SFT/RM runs

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {
    "ddp": REPO / "examples" / "accelerate" / "multi_cpu_2proc.yaml",
    "fsdp2": REPO / "examples" / "accelerate" / "fsdp2_cpu_2proc.yaml",
}
STAGES = ("sft", "rm", "dpo", "grpo", "ppo", "ppo_adapter")  # run names; ppo_adapter: PPO, critic=adapter
TYPE = {"ppo_adapter": "ppo"}  # training.type and preset (tiny_<type>.yml) where not the run's name
# what each stage's metrics.jsonl must agree on, step by step (GRPO and PPO: the sampled rewards too:
# both configs sample the same completions from the same weights and seeds)
PPO_KEYS = ("ppo_loss", "value_loss", "reward_mean", "grad_norm_critic")
COMPARED = {"grpo": ("loss", "reward_mean"), "ppo": PPO_KEYS, "ppo_adapter": PPO_KEYS}
STEPS = 4
BATCH = 4  # rows per process and step
TRAINING_ROWS = {"sft": 2000, "rm": 1500, "dpo": 1500}  # the tiny presets' training files (for the epoch count)
# Measured here (torch 2.13, 2 ranks): the sharded losses equal the replicated ones to the last bit
# over the 4 steps of every stage; the tolerance leaves room for other reduction orders (more
# ranks, other kernels). A rank training on other rows or other weights moves them by > 1e-2.
LOSS_RTOL = 1e-4


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_argv, tiny_sft_final, tiny_rm_final) -> Path:
    """`<root>/<config>/<stage>/` (output dir) and `<root>/<config>/<stage>.ranks/` (what each rank wrote)."""
    root = tmp_path_factory.mktemp("fsdp")
    # checkpoint-2 of every stage is resumed below
    overrides = [
        f"training.max_steps={STEPS}",
        f"training.batch_size={BATCH}",
        "training.logging_steps=1",
        "training.save_steps=2",
    ]
    extra = {  # no held-out evaluation: it is not what differs between the configs, and costs time
        "sft": ["data.eval_path=null"],
        "rm": [f"model_name={tiny_sft_final}", "data.eval_path=null"],
        "dpo": [f"model_name={tiny_sft_final}", "data.eval_path=null"],
        "grpo": [
            f"model_name={tiny_sft_final}",
            f"training.reward_model.checkpoint_path={tiny_rm_final}",
            "training.grpo.max_completion_length=8",
        ],
        "ppo": [  # the policy LoRA, the RM adapter and the critic on one sharded base
            f"model_name={tiny_sft_final}",
            f"training.reward_model.checkpoint_path={tiny_rm_final}",
            "training.ppo.max_gen_len=8",
        ],
        "ppo_adapter": [  # the critic's own adapter beside the policy's (its gradients: sharded LoRA + plain head)
            f"model_name={tiny_sft_final}",
            f"training.reward_model.checkpoint_path={tiny_rm_final}",
            "training.ppo.max_gen_len=8",
            "training.ppo.critic=adapter",
            "training.gradient_checkpointing=true",
            "training.ppo.save_merged=true",
            "generation.merged_copy=true",  # sampled from a merged copy: gathered whole once, refreshed each step
        ],
    }
    for name, config in CONFIGS.items():
        plan = []
        for stage in STAGES:
            argv = tiny_argv(f"tiny_{TYPE.get(stage, stage)}.yml", root / name / stage, *overrides, *extra[stage])
            plan.append({"argv": argv, "digests": str(root / name / f"{stage}.ranks")})
        (root / f"{name}.json").write_text(json.dumps(plan))
        (root / f"{name}.log").write_text(launch(config, root / f"{name}.json"))
    return root


def launch(config: Path, plan: Path) -> str:
    """Run the plan's commands in one `accelerate launch` of 2 processes; returns their stderr."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)]
    command += ["--main_process_port", "0", str(REPO / "tests" / "multiprocess_stages.py"), str(plan)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{config.name}: {result.stderr[-3000:]}"
    return result.stderr


def holdings(runs: Path, config: str, stage: str) -> list[dict]:
    files = sorted((runs / config / f"{stage}.ranks").glob("rank*.json"))
    assert [f.name for f in files] == ["rank0.json", "rank1.json"]
    return [json.loads(f.read_text()) for f in files]


def losses(out: Path, key: str = "loss") -> list[tuple[int, float]]:
    """(step, value) of every training step's `key` (TRL's per-step rows carry `epoch`, PPO's `ppo_loss`)."""
    rows = read_metrics(out / "metrics.jsonl")
    return [(r["step"], r[key]) for r in rows if key in r and ("epoch" in r or "ppo_loss" in r)]


def test_an_fsdp_launch_no_longer_runs_ddp(runs):
    assert "find_unused_parameters" in (runs / "ddp.log").read_text()  # DDP says so: the check can fail
    assert "find_unused_parameters" not in (runs / "fsdp2.log").read_text()


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("stage", STAGES)
def test_both_ranks_end_with_the_same_weights_and_rank_0_writes_once(runs, config, stage):
    out = runs / config / stage
    ranks = digests(runs / config / f"{stage}.ranks")
    assert len(ranks) == 2 and ranks[0] == ranks[1], "ranks ended with different weights"
    key = COMPARED.get(stage, ("loss",))[0]
    assert [step for step, _ in losses(out, key)] == list(range(1, STEPS + 1))  # each step once: no duplicates
    assert TYPE.get(stage, stage) in (out / "final" / "eulerforge_final.json").read_text()
    if stage in TRAINING_ROWS:  # each rank saw its own half of every global batch
        epoch = [r["epoch"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r][-1]
        assert epoch == pytest.approx(STEPS * BATCH * 2 / TRAINING_ROWS[stage], rel=0.05)


@pytest.mark.parametrize("stage", STAGES)
def test_each_rank_holds_half_of_the_weights_when_sharded(runs, stage):
    sharded = holdings(runs, "fsdp2", stage)
    for rank in sharded:
        assert rank["sharded_tensors"] > 0
        assert 0.45 < rank["held"] / rank["total"] < 0.55, rank
        assert 0.45 < rank["trainable_held"] / rank["trainable_total"] < 0.55, rank
    assert sum(rank["held"] for rank in sharded) == sharded[0]["total"]  # every element stored exactly once
    for rank in holdings(runs, "ddp", stage):  # replicated: every rank holds everything
        assert rank["held"] == rank["total"] and rank["sharded_tensors"] == 0


@pytest.mark.parametrize("stage", STAGES)
def test_sharded_run_matches_the_data_parallel_one_step_for_step(runs, stage):
    for key in COMPARED.get(stage, ("loss",)):
        ddp, fsdp = losses(runs / "ddp" / stage, key), losses(runs / "fsdp2" / stage, key)
        assert [s for s, _ in fsdp] == [s for s, _ in ddp] == list(range(1, STEPS + 1))
        for (step, expected), (_, got) in zip(ddp, fsdp, strict=True):
            assert got == pytest.approx(expected, rel=LOSS_RTOL, abs=1e-6), f"{stage} {key} step {step}"
        assert len({value for _, value in fsdp}) > 1  # it trained (or sampled) something


@pytest.mark.parametrize("stage", STAGES)
def test_sharded_final_is_the_usual_layout_with_the_trained_weights(runs, stage):
    """final/ is gathered on rank 0: the same files as without sharding, loaded by the usual
    loaders, holding the weights the replicated run ended with."""
    import torch

    ddp, fsdp = runs / "ddp" / stage / "final", runs / "fsdp2" / stage / "final"
    assert sorted(p.name for p in fsdp.iterdir()) == sorted(p.name for p in ddp.iterdir())
    expected, got = weights(ddp, stage), weights(fsdp, stage)
    assert got.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, rtol=1e-3, atol=1e-4, msg=f"{stage}: {name}")


@pytest.fixture(scope="module")
def resumed(runs, tmp_path_factory) -> tuple[Path, str]:
    """Every sharded run as if killed after step 2 (its output dir without checkpoint-4 and final/),
    run again with the same argv in one launch: (the resumed runs' root, the launch's log)."""
    import shutil

    root = tmp_path_factory.mktemp("resumed")
    plan = []
    for stage, run in zip(STAGES, json.loads((runs / "fsdp2.json").read_text()), strict=True):
        first = runs / "fsdp2" / stage
        shutil.copytree(first, root / stage, ignore=shutil.ignore_patterns(f"checkpoint-{STEPS}", "final"))
        assert (root / stage / "checkpoints" / "checkpoint-2").is_dir(), stage
        argv = [str(root / stage) if a == str(first) else a for a in run["argv"]]
        plan.append({"argv": argv, "digests": str(root / f"{stage}.ranks")})
    (root / "plan.json").write_text(json.dumps(plan))
    return root, launch(CONFIGS["fsdp2"], root / "plan.json")


@pytest.mark.parametrize("stage", STAGES)
def test_a_sharded_run_resumes_from_its_checkpoint_exactly(runs, resumed, stage):
    """The rerun loads the sharded checkpoint-2 (TRL's stages: accelerate's FSDP checkpoint; PPO:
    its own, full tensors cut into each rank's shards; both with every rank's RNG) and ends where the
    uninterrupted run ended: the same numbers at steps 3-4 and the same final weights."""
    root, log = resumed
    first = runs / "fsdp2" / stage
    assert f"resuming {TYPE.get(stage, stage)} from {root / stage / 'checkpoints' / 'checkpoint-2'}" in log
    for key in COMPARED.get(stage, ("loss",)):
        assert losses(root / stage, key) == losses(first, key), f"{stage} {key}"  # steps 3-4 trained again
    assert digests(root / f"{stage}.ranks") == digests(runs / "fsdp2" / f"{stage}.ranks")


def digests(ranks: Path) -> list[str]:
    """Each rank's hash of its trainable weights, gathered whole, at the end of training (`tests/rank_probe.py`)."""
    return [f.read_text() for f in sorted(ranks.glob("rank*.txt"))]


def weights(final: Path, stage: str) -> dict:
    """Every weight of a stage's final/, loaded as the next stage loads it."""
    if stage == "rm":
        from eulerforge_trl.models.scorer import load_reward_model

        scorer, _ = load_reward_model(str(final))
        return {**scorer.model.state_dict(), **{f"head.{k}": v for k, v in scorer.head.state_dict().items()}}
    import torch
    from safetensors.torch import load_file

    from eulerforge_trl.models.loading import load_causal_lm, load_tokenizer

    found = load_causal_lm(str(final), tokenizer=load_tokenizer(str(final))).state_dict()
    if (final / "value_head.pt").is_file():  # PPO's critic: its head, and its adapter when it has one
        found.update({f"value_head.{k}": v for k, v in torch.load(final / "value_head.pt").items()})
    for adapter in sorted(final.glob("critic_adapter/*/adapter_model.safetensors")):
        found.update({f"critic.{k}": v for k, v in load_file(adapter).items()})
    if (final / "merged").is_dir():
        found.update({f"merged.{k}": v for k, v in load_file(final / "merged" / "model.safetensors").items()})
    return found


def test_ppo_refuses_deepspeed_in_one_line(tmp_path, tiny_argv, tiny_sft_final, tiny_rm_final, monkeypatch, capsys):
    """Our PPO trainer shards with FSDP2 only: a DeepSpeed launch stops before loading anything,
    naming what works instead."""
    from eulerforge_trl.train import main

    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    argv = tiny_argv(
        "tiny_ppo.yml",
        tmp_path / "out",
        f"model_name={tiny_sft_final}",
        f"training.reward_model.checkpoint_path={tiny_rm_final}",
    )
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: training.type ppo cannot be sharded with DeepSpeed"), err
    assert "fsdp2_cpu_2proc.yaml" in err[0] and "multi_cpu_2proc.yaml" in err[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1"}, "error: the accelerate config asks for FSDP version 1"),
        ({"ACCELERATE_USE_DEEPSPEED": "true"}, "error: the accelerate config asks for DeepSpeed"),
    ],
)
def test_what_cannot_shard_on_cpus_refuses_in_one_line(env, message, tmp_path, tiny_argv, monkeypatch, capsys):
    """Rather than train replicated under a sharding config, say what to use instead."""
    from eulerforge_trl.train import main

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(tiny_argv("tiny_sft.yml", tmp_path / "out", "training.max_steps=1")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message), err
    assert "fsdp2_cpu_2proc.yaml" in err[0]


def test_deepspeed_zero3_partitions_the_weights(tmp_path, tiny_argv):
    """ZeRO-3 needs `deepspeed` and GPUs: on this project's CPU machine `pip install deepspeed` fails to
    build (deepspeed 0.19.8 against torch 2.13's cpp_extension), so the config is GPU-only."""
    pytest.importorskip("deepspeed", reason="deepspeed is not installed (GPU-only here: it does not build on the CPU)")
    import torch

    if torch.cuda.device_count() < 2:
        pytest.skip("DeepSpeed ZeRO-3 is tested on 2 GPUs; this machine has fewer")
    out, ranks = tmp_path / "out", tmp_path / "ranks"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file"]
    command += [str(REPO / "examples" / "accelerate" / "deepspeed_zero3.yaml"), "--main_process_port", "0"]
    command += [str(REPO / "tests" / "rank_probe.py"), *tiny_argv("tiny_sft.yml", out, "training.max_steps=2")]
    env = {**os.environ, "EULERFORGE_RANK_DIGEST_DIR": str(ranks)}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    for f in sorted(ranks.glob("rank*.json")):
        held = json.loads(f.read_text())
        assert 0.45 < held["held"] / held["total"] < 0.55, held
    assert (out / "final" / "model.safetensors").is_file()
