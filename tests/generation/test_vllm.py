"""The vllm rollout engine with the real engine (vLLM's CPU build here; `make install-vllm`).

What must hold: the engine samples what the trainer's own weights would (greedy continuations
equal, before and after weights are pushed), PPO with it learns, and a machine without vLLM gets
one line naming the install command.
"""

from __future__ import annotations

import json
import sys

import pytest
import torch

from eulerforge_trl.config import load_preset
from eulerforge_trl.rundir import RunDir, read_metrics
from eulerforge_trl.train import main

from .conftest import tiny_llama

PLEASANT = """
PLEASANT = ("happy", "bright", "kind", "calm", "warm", "gentle", "joyful", "sweet")


def pleasant_count(prompts, completions, **kwargs):  # pleasant words per answer, over 3
    return [sum(w.strip(".,").lower() in PLEASANT for w in c.split()) / 3.0 for c in completions]
"""


def _greedy(sampler, model, prompt_ids, prompt_mask, n: int) -> tuple[list, list]:
    """n greedy tokens per prompt from the engine (a sampler or the engine itself: its `llm`) and from
    the training model (no stop token)."""
    import vllm

    params = vllm.SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True)
    prompts = [{"prompt_token_ids": ids[m.bool()].tolist()} for ids, m in zip(prompt_ids, prompt_mask)]
    engine = [list(o.outputs[0].token_ids) for o in sampler.llm.generate(prompts, params, use_tqdm=False)]
    model.eval()
    with torch.no_grad():
        out = model.generate(
            input_ids=prompt_ids, attention_mask=prompt_mask, do_sample=False, max_new_tokens=n, min_new_tokens=n
        )
    return engine, out[:, prompt_ids.shape[1] :].tolist()


def test_engine_samples_the_policy_weights_after_every_push():
    pytest.importorskip("vllm", reason="vLLM is not installed: make install-vllm")
    from peft import LoraConfig, get_peft_model

    from eulerforge_trl.config.schema import GenerationSection
    from eulerforge_trl.generation import build_sampler
    from eulerforge_trl.models.loading import load_tokenizer
    from eulerforge_trl.trainers.ppo.rollout import response_forward

    tokenizer = load_tokenizer("tiny-qwen3.5")
    tokenizer.padding_side = "left"
    model = get_peft_model(
        tiny_llama(tokenizer), LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", lora_dropout=0.0)
    )
    stop = tokenizer.eos_token_id
    sampler = build_sampler(
        GenerationSection(backend="vllm", vllm_enforce_eager=True),  # no compile: a faster start for a test
        model,
        tokenizer,
        adapter="default",
        max_new_tokens=12,
        temperature=1.0,
        stop_ids=[stop],
        max_prompt_length=32,
    )
    try:
        batch = tokenizer.pad(
            {"input_ids": [tokenizer(t)["input_ids"] for t in ("a happy cat", "the dog sat on", "x")]},
            return_tensors="pt",
        )
        ids, mask = batch["input_ids"], batch["attention_mask"]
        engine, trainer = _greedy(sampler, model, ids, mask, 10)
        assert engine == trainer
        with torch.no_grad():  # a trained adapter: the policy now differs from the base
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0.0, 0.5)
        before_push, _ = _greedy(sampler, model, ids, mask, 10)
        sampler.sync_weights()
        engine, trainer = _greedy(sampler, model, ids, mask, 10)
        assert engine == trainer and engine != before_push  # the push reached the engine
        roll = sampler.sample(ids, mask)
        assert roll.n_prompt == ids.shape[1] and torch.equal(roll.input_ids[:, : roll.n_prompt], ids)
        ends = roll.response_mask.sum(dim=1) - 1  # the last real response token of each row
        for row, end in enumerate(ends.tolist()):  # nothing after a stop token; a stop token only at the end
            assert (roll.response_ids[row, :end] != stop).all()
            assert bool(roll.contains_eos[row]) == (roll.response_ids[row, end].item() == stop)
        own = response_forward(model, roll.input_ids, roll.attention_mask, roll.n_prompt, 1.0).logprobs
        gap = ((own - roll.engine_logprobs).abs() * roll.response_mask).sum() / roll.response_mask.sum()
        assert gap < 1e-3  # fp32 on both sides: the engine's log-probs are the trainer's
    finally:
        sampler.close()


def test_without_vllm_the_backend_is_one_line_and_exit_2(tmp_path, tiny_argv, tiny_sft_final, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` now fails as on a machine without it
    argv = tiny_argv(
        "tiny_ppo.yml",
        tmp_path,
        f"model_name={tiny_sft_final}",
        "training.reward_model.checkpoint_path=",
        "training.reward_funcs=[eulerforge_trl.examples.animals:well_formed]",
        "generation.backend=vllm",
    )
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "make install-vllm" in err[0] and "generation.backend" in err[0]
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.slow  # a learning run with the real engine
def test_ppo_with_vllm_learns_and_its_engine_follows_the_trainer(tmp_path, tiny_argv, tiny_llama_sft_final):
    pytest.importorskip("vllm", reason="vLLM is not installed: make install-vllm")
    from eulerforge_trl.trainers.ppo.trainer import PPOTrainer

    functions = tmp_path / "rewards.py"
    functions.write_text(PLEASANT, encoding="utf-8")
    steps = 30
    argv = tiny_argv(
        "tiny_ppo.yml",
        tmp_path / "run",
        f"model_name={tiny_llama_sft_final}",
        "training.reward_model.checkpoint_path=",
        f"training.reward_funcs=[{functions}:pleasant_count]",
        "generation.backend=vllm",
        "generation.vllm_enforce_eager=true",  # no compile: a faster start for a test
        f"training.max_steps={steps}",
        f"training.save_steps={steps}",
        "training.lr=2e-3",
        "training.ppo.target_kl=null",  # a fixed KL coefficient: the preset's KL target would damp this short run
    )
    overrides = [argv[i + 1] for i, flag in enumerate(argv) if flag == "--set"]
    preset = load_preset(argv[0], overrides, output_dir=str(tmp_path / "run"))
    assert preset.generation.backend == "vllm"
    run = RunDir(tmp_path / "run")
    run.root.mkdir(parents=True)
    trainer = PPOTrainer(preset, run)
    try:
        trainer.train()
        assert trainer.sampler.name == "vllm"
        prompts = trainer.prompts
        ids, mask = prompts.padded_rows(list(range(4)), trainer.device)
        engine, own = _greedy(trainer.sampler, trainer.model, ids, mask, 12)
        assert engine == own  # after 30 optimizer steps the engine samples the trained policy
        trainer.save_final()
    finally:
        trainer.sampler.close()
    # `eulerforge export` makes final/ a plain model directory that vLLM itself serves, same tokens
    import vllm

    from eulerforge_trl.export import export_model

    export_model(run.final, tmp_path / "exported")
    llm = vllm.LLM(
        model=str(tmp_path / "exported"),
        dtype="float32",
        max_model_len=128,
        enforce_eager=True,
        kv_cache_memory_bytes=64 << 20,
        seed=0,
    )
    params = vllm.SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
    prompts = [{"prompt_token_ids": row[m.bool()].tolist()} for row, m in zip(ids, mask)]
    assert [list(o.outputs[0].token_ids) for o in llm.generate(prompts, params, use_tqdm=False)] == own
    history = [r for r in read_metrics(run.metrics) if r["step"] > 0 and "reward_mean" in r]
    assert len(history) == steps
    k = steps // 5
    first = sum(r["reward_mean"] for r in history[:k]) / k
    last = sum(r["reward_mean"] for r in history[-k:]) / k
    assert last > first + 0.1, f"reward_mean did not rise with vllm rollouts: {first:.2f} -> {last:.2f}"
    assert all(r["generation/logprob_gap"] < 1e-3 for r in history), [r["generation/logprob_gap"] for r in history]
    assert all(r["time_weight_sync"] > 0 for r in history)
    json.dumps(history)  # metrics stay plain numbers


def test_grpo_maps_generation_onto_trl(tmp_path, tiny_argv):
    from eulerforge_trl.errors import PresetError
    from eulerforge_trl.trainers.grpo_generation import grpo_generation_args

    def preset(*overrides):
        argv = tiny_argv("tiny_grpo.yml", tmp_path, *overrides)
        return load_preset(argv[0], [argv[i + 1] for i, flag in enumerate(argv) if flag == "--set"])

    hf = grpo_generation_args(preset("generation.compile=true"))
    assert hf["use_vllm"] is False and hf["cache_implementation"] == "static"
    assert grpo_generation_args(preset())["cache_implementation"] == ("static" if torch.cuda.is_available() else None)
    # vllm on any machine: TRL starts no engine of its own (use_vllm off while the trainer is built, our
    # engine installed after), with TRL's importance-sampling correction on
    args = grpo_generation_args(
        preset(
            "generation.backend=vllm",
            "generation.vllm_gpu_memory_utilization=0.5",
            "generation.vllm_dtype=bf16",
            "generation.vllm_enforce_eager=true",
        )
    )
    assert args["use_vllm"] is False and args["vllm_mode"] == "colocate"
    assert args["vllm_gpu_memory_utilization"] == 0.5 and args["vllm_importance_sampling_correction"] is True
    with pytest.raises(PresetError, match="generation.compile=true: hf only"):
        grpo_generation_args(preset("generation.backend=vllm", "generation.compile=true"))
    with pytest.raises(PresetError, match="generation.compile=true: hf only"):  # PPO's engine the same
        load_preset("presets/tiny_ppo.yml", ["generation.backend=vllm", "generation.compile=true"])


def test_the_push_streams_tensor_by_tensor_and_a_partial_push_is_an_error():
    """The merged weights reach vLLM one tensor at a time (at most one layer's merged tensors alive:
    vLLM buffers a layer's until it has them all), and a push that misses a weight vLLM's model has,
    which vLLM only logs while keeping the old tensor, is an error; so is a name vLLM does not know."""
    pytest.importorskip("vllm", reason="vLLM is not installed: make install-vllm")
    import weakref

    from peft import LoraConfig, get_peft_model

    from eulerforge_trl.generation.merged import iter_merged_weights, lora_layers
    from eulerforge_trl.generation.vllm_engine import ColocatedEngine, push_weights
    from eulerforge_trl.models.loading import load_tokenizer

    tokenizer = load_tokenizer("tiny-qwen3.5")
    tokenizer.padding_side = "left"
    model = get_peft_model(
        tiny_llama(tokenizer), LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", lora_dropout=0.0)
    )
    with torch.no_grad():  # a trained adapter: every LoRA layer's merged weight differs from its base
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.5)
    engine = ColocatedEngine(
        model,
        tokenizer,
        adapter="default",
        seed=0,
        max_model_len=64,
        max_num_seqs=4,
        gpu_memory_utilization=0.3,
        dtype="auto",
        enforce_eager=True,
    )
    try:
        merged_names = set(lora_layers(model, "default"))
        assert len(merged_names) == 4 * 7  # q k v o gate up down in each of the 4 layers
        alive, peak = [], 0

        def watched():
            nonlocal peak
            for name, tensor in iter_merged_weights(model, "default"):
                if name in merged_names:
                    alive.append(weakref.ref(tensor))
                    peak = max(peak, sum(ref() is not None for ref in alive))
                yield name, tensor

        push_weights(engine.llm, watched())
        assert len(alive) == len(merged_names) and peak <= 3, peak  # q, k and v wait for each other
        batch = tokenizer.pad({"input_ids": [tokenizer("a happy cat")["input_ids"]]}, return_tensors="pt")
        engine_tokens, own = _greedy(engine, model, batch["input_ids"], batch["attention_mask"], 8)
        assert engine_tokens == own

        missing = (item for item in iter_merged_weights(model, "default") if item[0] != "model.norm.weight")
        with pytest.raises(RuntimeError, match=r"push into vLLM was partial.*model\.norm\.weight"):
            push_weights(engine.llm, missing)
        renamed = (
            (name.replace("up_proj", "upper_proj"), tensor) for name, tensor in iter_merged_weights(model, "default")
        )
        with pytest.raises(ValueError, match="upper_proj"):  # vLLM itself refuses a name it does not know
            push_weights(engine.llm, renamed)
    finally:
        engine.close()


def test_the_engine_model_directory_holds_config_and_tokenizer_only(tmp_path):
    """vLLM starts from a directory of its own: `model_name` may be a built-in name (or an adapter-only
    final/) that vLLM cannot load; the weights come from the push, so none are written."""
    pytest.importorskip("vllm", reason="vLLM is not installed: make install-vllm")
    from pathlib import Path

    from transformers import AutoTokenizer
    from vllm.transformers_utils.config import get_config

    from eulerforge_trl.generation.vllm_engine import write_engine_model
    from eulerforge_trl.models.loading import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer("tiny-qwen3.5")
    model = load_causal_lm("tiny-qwen3.5", tokenizer=tokenizer)
    assert not Path(model.name_or_path).is_dir()  # nothing vLLM could start from
    write_engine_model(model, tokenizer, tmp_path / "engine")
    files = sorted(p.name for p in (tmp_path / "engine").iterdir())
    assert "config.json" in files and not [f for f in files if f.endswith((".safetensors", ".bin", ".pt"))], files
    config = get_config(str(tmp_path / "engine"), trust_remote_code=False)
    assert config.architectures == ["Qwen3_5ForCausalLM"] and config.tie_word_embeddings
    text = "a happy cat sat on the mat"
    assert AutoTokenizer.from_pretrained(tmp_path / "engine")(text)["input_ids"] == tokenizer(text)["input_ids"]
    write_engine_model(model, tokenizer, tmp_path / "untied", untied=True)  # a LoRA on the tied head or embedding
    assert not get_config(str(tmp_path / "untied"), trust_remote_code=False).tie_word_embeddings


def test_a_kv_cache_that_does_not_fit_names_the_memory_share():
    pytest.importorskip("vllm", reason="vLLM is not installed: make install-vllm")
    from vllm.v1.core.kv_cache_utils import _check_enough_kv_cache_memory

    from eulerforge_trl.generation.vllm_engine import engine_error

    for available in (0, 1 << 20):  # no room at all; less than one full-length sequence needs
        with pytest.raises(ValueError) as caught:
            _check_enough_kv_cache_memory(available, lambda: 2 << 20, 4096, lambda memory: 1024)
        refused = engine_error(caught.value, 0.3)
        assert refused is not None and "\n" not in str(refused), caught.value
        assert str(refused).startswith("generation.vllm_gpu_memory_utilization (0.3): vLLM's KV cache does not fit")
        assert str(refused).endswith(
            "raise generation.vllm_gpu_memory_utilization (or shorten data.max_prompt_length and the completions)"
        )


def test_hf_static_cache_keeps_the_rollout_layout(tmp_path):
    """`generation.compile` (on by default on CUDA): prompts padded to a bucket for a static cache, the
    extra columns gone again from the rollout; greedy tokens as without it."""
    from eulerforge_trl.generation.hf import PROMPT_BUCKET, HFSampler
    from eulerforge_trl.models.loading import load_tokenizer

    tokenizer = load_tokenizer("tiny-qwen3.5")
    tokenizer.padding_side = "left"
    model = tiny_llama(tokenizer)
    batch = tokenizer.pad(
        {"input_ids": [tokenizer(t)["input_ids"] for t in ("a happy cat", "the dog sat on the mat")]},
        return_tensors="pt",
    )
    rolls = []
    for compile in (False, True):
        sampler = HFSampler(
            model,
            max_new_tokens=8,
            temperature=1e-4,
            stop_ids=[tokenizer.eos_token_id],
            pad_token_id=0,
            compile=compile,
        )
        torch.manual_seed(0)
        rolls.append(sampler.sample(batch["input_ids"], batch["attention_mask"]))
    plain, static = rolls
    assert batch["input_ids"].shape[1] % PROMPT_BUCKET  # the bucket really pads
    assert static.n_prompt == plain.n_prompt == batch["input_ids"].shape[1]
    assert torch.equal(static.input_ids, plain.input_ids) and torch.equal(static.response_mask, plain.response_mask)


@pytest.mark.slow  # two launches of 2 processes, each with its own engine
def test_ppo_with_vllm_on_two_processes_data_parallel_and_sharded(tmp_path, tiny_argv, tiny_llama_sft_final):
    """Each training process runs its own colocated engine (vLLM's `external_launcher` on the launch's
    process group), seeded apart, and pushes the merged policy into it after every step, gathered
    whole when the policy is sharded: the engines' log-probs match the trainer's at every step, and
    the sharded run computes what the data-parallel one does."""
    pytest.importorskip("vllm", reason="vLLM is not installed: make install-vllm")
    import os
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    functions = tmp_path / "rewards.py"
    functions.write_text(PLEASANT, encoding="utf-8")
    history = {}
    for config in ("multi_cpu_2proc", "fsdp2_cpu_2proc"):
        out = tmp_path / config
        argv = tiny_argv(
            "tiny_ppo.yml",
            out,
            f"model_name={tiny_llama_sft_final}",
            "training.reward_model.checkpoint_path=",
            f"training.reward_funcs=[{functions}:pleasant_count]",
            "generation.backend=vllm",
            "generation.vllm_enforce_eager=true",
            "training.max_steps=3",
            "training.batch_size=4",
            "training.logging_steps=1",
            "training.ppo.max_gen_len=8",
        )
        command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file"]
        command += [str(repo / "examples" / "accelerate" / f"{config}.yaml"), "--main_process_port", "0"]
        command += [str(repo / "tests" / "rank_probe.py"), *argv]  # each rank's holdings written after training
        env = {**os.environ, "OMP_NUM_THREADS": "1", "EULERFORGE_RANK_DIGEST_DIR": str(tmp_path / f"{config}.ranks")}
        result = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, f"{config}: {result.stderr[-3000:]}"
        history[config] = [r for r in read_metrics(out / "metrics.jsonl") if "ppo_loss" in r]
        assert [r["step"] for r in history[config]] == [1, 2, 3]
        for r in history[config]:  # the mean over both ranks' engines: each follows its trainer's weights
            assert r["generation/logprob_gap"] < 1e-3 and r["time_weight_sync"] > 0, r
    for replicated, sharded in zip(history["multi_cpu_2proc"], history["fsdp2_cpu_2proc"], strict=True):
        for key in ("reward_mean", "ppo_loss", "value_loss"):
            assert sharded[key] == pytest.approx(replicated[key], rel=1e-4, abs=1e-6), (key, replicated["step"])
    held = [json.loads(f.read_text()) for f in sorted((tmp_path / "fsdp2_cpu_2proc.ranks").glob("rank*.json"))]
    assert len(held) == 2 and all(0.45 < rank["held"] / rank["total"] < 0.55 for rank in held), held


def test_an_architecture_vllm_cannot_load_is_one_line_before_the_engine(tmp_path, tiny_argv, capsys):
    """The default tiny Qwen3.5 on vLLM's CPU build (its module imports torchvision, absent here): one
    line naming the architecture and generation.backend=hf, not vLLM's pydantic traceback."""
    pytest.importorskip("vllm", reason="vLLM is not installed: make install-vllm")
    import importlib.util
    from types import SimpleNamespace

    from eulerforge_trl.generation.vllm_engine import require_architecture

    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed: vLLM can load Qwen3.5 here")
    argv = tiny_argv(
        "tiny_ppo.yml",
        tmp_path,
        "model_name=tiny-qwen3.5",
        "training.reward_model.checkpoint_path=",
        "training.reward_funcs=[eulerforge_trl.examples.animals:well_formed]",
        "generation.backend=vllm",
    )
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith(("error", "Traceback", "ERROR"))]
    assert len(err) == 1, err
    assert "architecture Qwen3_5ForCausalLM cannot run on vLLM's CPU build" in err[0]
    assert "torchvision" in err[0] and "generation.backend=hf" in err[0]
    assert not (tmp_path / "checkpoints").exists()
    for arch in ("LlamaForCausalLM", "NoSuchForCausalLM"):  # loads here; not registered: left to vLLM
        require_architecture(SimpleNamespace(config=SimpleNamespace(architectures=[arch])))


def test_vllm_refusing_its_engine_is_one_line():
    import os

    from pydantic import BaseModel, ValidationError

    from eulerforge_trl.generation.vllm_engine import engine_error as _engine_error

    class Config(BaseModel):
        max_model_len: int

    with pytest.raises(ValidationError) as caught:
        Config(max_model_len="long")
    refused = _engine_error(caught.value)  # vLLM's config validation
    assert refused is not None and "\n" not in str(refused)
    assert str(refused).startswith("generation.backend=vllm: vLLM cannot start on this model: Input should be")
    assert str(refused).endswith("set generation.backend=hf")
    inside_vllm = compile(
        "raise ValueError('Layer 0 cannot be handled')", os.path.join("", "x", "vllm", "m.py"), "exec"
    )
    with pytest.raises(ValueError) as caught:
        exec(inside_vllm)
    assert "Layer 0 cannot be handled" in str(_engine_error(caught.value))
    with pytest.raises(ValueError) as caught:
        raise ValueError("our bug")
    assert _engine_error(caught.value) is None  # raised outside vLLM: keeps its traceback
    assert _engine_error(RuntimeError("our bug")) is None
