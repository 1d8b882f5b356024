"""RLOO with `generation.backend: vllm` on the real engine (vLLM's CPU build; `make install-vllm`).

TRL's RLOOTrainer samples through the same `VLLMGeneration` as its GRPOTrainer, so the stage hands it
the engine GRPO gets (`grpo_vllm.install_vllm_engine`): it must be the one sampling, told the stop
ids, and the base (RLOO's reference) must come out of training bit for bit as loaded, while the
policy adapter moved.
"""

from __future__ import annotations

import pytest
import torch

import eulerforge_trl.trainers.group_policy as group_policy
from eulerforge_trl.rundir import read_metrics
from eulerforge_trl.train import main


@pytest.mark.slow  # the real engine starts (about a minute on 2 cores)
def test_rloo_samples_with_our_engine_and_leaves_the_base_alone(tmp_path, tiny_argv, tiny_llama_dir, monkeypatch):
    pytest.importorskip("vllm", reason="vLLM is not installed: make install-vllm")
    from trl import RLOOTrainer

    from eulerforge_trl.generation.merged import base_model, plain_name
    from eulerforge_trl.models.loading import load_causal_lm, load_tokenizer

    installed = {}
    install_engine = group_policy.install_vllm_engine

    def install(trainer, preset):  # observe the trainer and its engine from outside
        installed["trainer"], installed["engine"] = trainer, install_engine(trainer, preset)
        return installed["engine"]

    monkeypatch.setattr(group_policy, "install_vllm_engine", install)
    argv = tiny_argv(
        "tiny_rloo.yml",
        tmp_path / "run",
        f"model_name={tiny_llama_dir}",
        "generation.backend=vllm",
        "generation.vllm_enforce_eager=true",  # no compile: a faster start for a test
        "training.max_steps=2",
        "training.save_steps=2",
        "training.batch_size=8",
        "training.rloo.max_completion_length=12",
        "data.max_prompt_length=64",
        "training.lr=1e-2",
    )
    assert main(argv) == 0
    trainer, engine = installed["trainer"], installed["engine"]
    assert isinstance(trainer, RLOOTrainer) and trainer.use_vllm and trainer.vllm_generation.engine is engine
    tokenizer = load_tokenizer(str(tiny_llama_dir))
    assert trainer.args.generation_kwargs["stop_token_ids"] == [tokenizer.eos_token_id]  # plain-text prompts

    model = trainer.model
    fresh = load_causal_lm(str(tiny_llama_dir), tokenizer=tokenizer).state_dict()
    trained = {plain_name(k): v for k, v in base_model(model).state_dict().items() if "lora_" not in k}
    assert fresh.keys() == trained.keys()
    assert [name for name in fresh if not torch.equal(fresh[name], trained[name])] == []
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)  # the policy moved
    history = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "reward_mean" in r]
    assert [r["step"] for r in history] == [1, 2]
