"""Benchmark one step of our PPOTrainer against the floor: the least work any PPO step of its shape does.

The model is a random-init ``qwen3_5_text`` of ``--hidden``/``--layers``, shaped by
``benchmarks/_shapes.py`` exactly as ``benchmarks/peer_trl112.py`` shapes the peer's, with the
tokenizer our package ships, saved to a temporary directory; or, with ``--model``, a pretrained
model (a local directory or a built-in name such as ``smollm2-135m-instruct``) with its own
tokenizer. It is given to ``eulerforge_trl.trainers.ppo.trainer.PPOTrainer`` as ``model_name``,
with a LoRA of rank
``--lora-r`` (alpha 2r), a random reward head (``training.reward_model.checkpoint_path: ""``) and
prompts that tokenize to exactly ``--prompt-len`` tokens. ``generate`` stops early only when every
row of the batch has sampled EOS, which neither a random model nor a pretrained one given random
prompts practically does, so the batch runs to ``--response-len`` tokens: the shape of a step is
fixed (the generated width and mean response length up to EOS are reported).

What it measures, after ``--warmup`` untimed steps:

* our step: the median wall time of ``train_step()`` over ``--steps`` steps, and the median of
  each phase the trainer times itself (generate, reward, reference, old logprobs/values, update);
* the floor, on the same model object: one bare ``generate`` of the batch (sampling, exactly
  ``--response-len`` new tokens), two bare no-grad forward passes over ``[batch, prompt+response]``
  (reference with adapters off, reward), and ``--ppo-epochs`` bare forward+backward passes of the
  policy over the full batch (no optimizer step); each timed ``--steps`` times, floor = the sum
  of the medians. The forwards compute logits only where a PPO step needs them (``logits_to_keep``
  = response length + 1), as our trainer does;
* peak memory: ``torch.cuda.max_memory_allocated`` on CUDA, peak RSS (``ru_maxrss``, the whole
  process so far: model build and load included) on a CPU, both read before the floor runs.

A table goes to stdout, then, as the last line, one JSON object (only that with ``--json-only``)::

    python benchmarks/ppo_step.py                       # tiny: 64/2 hidden/layers, 8 x 16+32 tokens
    python benchmarks/ppo_step.py --hidden 256 --layers 4 --batch 16 --response-len 64
    python benchmarks/ppo_step.py --model smollm2-135m-instruct  # a real model, 576/30 hidden/layers
    python benchmarks/ppo_step.py --steps 2 --threads 1 # a quick look on a busy machine

Timings need idle cores; on a shared 2-core machine prefer ``--threads 1``.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _shapes  # noqa: E402  (shared with peer_trl112.py, which runs in another venv)

BENCH_NAME = "eulerforge-trl PPOTrainer"
# metrics key of train_step() -> phase name in our output
PHASES = {
    "time_generate": "generate",
    "time_reward": "reward",
    "time_reference": "reference",
    "time_old_logprobs": "old_logprobs",
    "time_train": "update",
    "time_weight_sync": "weight_sync",  # the policy's weights pushed into the vllm engine (0 with hf)
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from eulerforge_trl.config.schema import PPOSection

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    _shapes.add_shape_args(p)
    p.add_argument(
        "--critic",
        choices=["adapter", "value_head"],
        default=PPOSection.critic,
        help=f"training.ppo.critic (default: the preset default, {PPOSection.critic})",
    )
    add_generation_args(p)
    p.add_argument("--json-only", action="store_true", help="print only the JSON line")
    args = p.parse_args(argv)
    _shapes.check_shape_args(p, args)
    return args


def add_generation_args(p: argparse.ArgumentParser) -> None:
    """--generation, --vllm-dtype, --merged-copy: the preset's generation.backend, vllm_dtype, merged_copy."""
    p.add_argument("--generation", choices=["hf", "vllm"], default="hf", help="generation.backend (default hf)")
    p.add_argument(
        "--vllm-dtype",
        choices=["auto", "fp32", "bf16", "fp16"],
        default="auto",
        help="generation.vllm_dtype (auto = the training dtype)",
    )
    p.add_argument(
        "--merged-copy",
        choices=["auto", "on", "off"],
        default="auto",
        help="PPO with hf: generation.merged_copy (auto = null: on with CUDA); GRPO refuses on",
    )


def generation_preset(args: argparse.Namespace) -> dict:
    """The preset's `generation:` section for --generation (absent on revisions that predate it: ab.py)."""
    from eulerforge_trl.config.schema import Preset

    if "generation" not in Preset.__dataclass_fields__:
        return {}
    # vLLM's CPU build: an explicit KV cache is sized by the engine itself; the RAM share stays small
    section = {"backend": args.generation, "vllm_dtype": args.vllm_dtype}
    if getattr(args, "merged_copy", "auto") != "auto":
        section["merged_copy"] = args.merged_copy == "on"
    return {"generation": section}


def log(msg: str) -> None:
    print(f"[ppo_step] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# 1. Model directory, prompts, preset
# --------------------------------------------------------------------------------------------


def build_model_dir(args: argparse.Namespace, out_dir: Path, tokenizer) -> int:
    """Save a random-init model of the benchmark's shape, with our tokenizer; returns its parameter count."""
    import torch
    from transformers import AutoModelForCausalLM

    config = _shapes.qwen3_5_text_config(
        vocab_size=len(tokenizer),
        hidden=args.hidden,
        layers=args.layers,
        max_len=args.prompt_len + args.response_len,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(args.seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    n_params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    del model
    gc.collect()
    return n_params


def benchmark_tokenizer(args: argparse.Namespace):
    """`--model`'s tokenizer (as the trainer loads it), else the tiny tokenizer our package ships."""
    if args.model:
        from eulerforge_trl.models.loading import load_tokenizer

        return load_tokenizer(args.model)
    from eulerforge_trl.models.tiny import load_tiny_tokenizer

    return load_tiny_tokenizer()


def base_parameter_count(model) -> int:
    """Parameters of the base model, LoRA weights left out (the same count for ours and the peer's policy)."""
    return sum(p.numel() for name, p in model.named_parameters() if "lora_" not in name)


def write_prompts(tokenizer, path: Path, n: int, prompt_len: int, seed: int) -> None:
    """`n` prompts of random text that tokenizes to exactly `prompt_len` tokens.

    Exactly, not at least: the policy keeps the last `data.max_prompt_length` (= prompt_len) tokens
    but the reward reads the prompt's text, so a longer text would make our reward pass longer
    than the peer's. A real tokenizer does not give back the ids its text was decoded from, so
    texts are drawn until one re-tokenizes to `prompt_len` ids. The batch has no padding, as in
    the peer.
    """
    rng = random.Random(seed)
    special = set(tokenizer.all_special_ids)
    allowed = [i for i in range(len(tokenizer)) if i not in special]

    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    with path.open("w", encoding="utf-8") as handle:
        for _ in range(n):
            for _attempt in range(1000):
                text = tokenizer.decode(
                    encode(tokenizer.decode([rng.choice(allowed) for _ in range(2 * prompt_len)]))[:prompt_len]
                )
                if len(encode(text)) == prompt_len:
                    break
            else:
                raise RuntimeError(f"no random text re-tokenizes to {prompt_len} tokens with this tokenizer")
            handle.write(json.dumps({"prompt": text}) + "\n")


def make_preset(args: argparse.Namespace, model_dir: Path, prompts: Path, output_dir: Path, dtype: str):
    from eulerforge_trl.config import load_preset
    from eulerforge_trl.config.schema import PPOSection

    ppo = {
        "epochs": args.ppo_epochs,
        "num_mini_batches": args.mini_batches,
        "max_gen_len": args.response_len,
        "critic": args.critic,
        "sample_every": 0,
    }
    if hasattr(PPOSection, "score_norm_samples"):  # (ab.py runs this on older revisions too)
        # the score scale is estimated once, inside the untimed warmup step: one batch is enough
        ppo["score_norm_samples"] = args.batch

    return load_preset(
        None,
        {
            "model_name": str(model_dir),
            "lora": {"r": args.lora_r, "alpha": 2 * args.lora_r, "dropout": 0.0, "target_modules": "all-linear"},
            "data": {"task": "prompt_only", "path": str(prompts), "max_prompt_length": args.prompt_len},
            "training": {
                "type": "ppo",
                "max_steps": args.warmup + args.steps,
                "batch_size": args.batch,
                "seed": args.seed,
                "precision": dtype,
                "report_to": [],
                "reward_model": {"checkpoint_path": ""},
                "ppo": ppo,
            },
            "output_dir": str(output_dir),
            **generation_preset(args),
        },
    )


# --------------------------------------------------------------------------------------------
# 2. Timing
# --------------------------------------------------------------------------------------------


def make_clock(device: str):
    import torch

    def now() -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    return now


def time_train_steps(trainer, args: argparse.Namespace, now) -> tuple[list[float], list[dict]]:
    """Wall time and metrics of `--steps` train_step() calls after `--warmup` untimed ones."""
    walls, metrics = [], []
    for i in range(args.warmup + args.steps):
        start = now()
        m = trainer.train_step()
        wall = now() - start
        timed = i >= args.warmup
        log(
            f"{'step' if timed else 'warmup'} {i + 1}: {wall:.3f} s  "
            + "  ".join(f"{name}={m.get(key, 0.0):.3f}" for key, name in PHASES.items())
        )
        if timed:
            walls.append(wall)
            metrics.append(m)
    return walls, metrics


def repeat(fn, reps: int, warmup: int, now) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start = now()
        fn()
        times.append(now() - start)
    return times


def measure_floor(trainer, args: argparse.Namespace, now) -> dict:
    """Median seconds of the bare operations one PPO step of this shape cannot avoid."""
    import torch

    model, tok = trainer.model, trainer.tokenizer
    prompt_ids, prompt_mask, _ = trainer.prompt_batch(0)
    n_prompt, n_resp = prompt_ids.shape[1], args.response_len
    keep = n_resp + 1  # logits at the last prompt token and every response token

    def generate():
        with torch.no_grad():
            return model.generate(
                input_ids=prompt_ids,
                attention_mask=prompt_mask,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                max_new_tokens=n_resp,
                min_new_tokens=n_resp,  # EOS suppressed: always the full length
                eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id,
                use_cache=True,
            )

    model.eval()
    sequences = generate()
    if sequences.shape != (args.batch, n_prompt + n_resp):
        raise RuntimeError(f"floor generate returned shape {tuple(sequences.shape)}")
    attention = torch.cat([prompt_mask, torch.ones_like(sequences[:, n_prompt:])], dim=1)
    targets = sequences[:, n_prompt:]

    def forward():
        with torch.no_grad():
            return model(input_ids=sequences, attention_mask=attention, logits_to_keep=keep, use_cache=False).logits

    def reference():
        with model.disable_adapter():
            forward()

    def forward_backward():
        logits = model(input_ids=sequences, attention_mask=attention, logits_to_keep=keep, use_cache=False).logits
        logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, targets.unsqueeze(-1))
        (-logprobs.mean()).backward()

    reps, warmup = args.steps, args.warmup
    times = {
        "generate": repeat(generate, reps, warmup, now),
        "reference": repeat(reference, reps, warmup, now),
        "reward": repeat(forward, reps, warmup, now),
    }
    model.train()
    times["update"] = repeat(lambda: [forward_backward() for _ in range(args.ppo_epochs)], reps, warmup, now)
    model.zero_grad(set_to_none=True)
    trainer.optimizer.zero_grad(set_to_none=True)
    model.eval()
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    medians["total"] = sum(medians.values())
    return medians


def peak_memory_mib(device: str) -> tuple[float, str]:
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / 2**20, "cuda_allocated"
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss"  # KiB on Linux


# --------------------------------------------------------------------------------------------
# 3. Run, report
# --------------------------------------------------------------------------------------------


def choose_device(flag: str) -> str:
    if flag == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # as the peer does: nothing picks a GPU behind our back
        return "cpu"
    import torch

    if flag == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda but torch.cuda.is_available() is False")
    return "cuda" if torch.cuda.is_available() else "cpu"


def start(args: argparse.Namespace) -> tuple[str, str]:
    """What every benchmark of ours does first: (device, dtype of the frozen base).

    torch's huge-page CPU allocations are turned on before torch loads, as the CLI's entry points
    do (`eulerforge_trl.enable_cpu_huge_pages`; a THP_MEM_ALLOC_ENABLE the user set is kept);
    threads are set as asked; the random reward head's warning is silenced
    (checkpoint_path "" scores with a random RewardHead: meaningless rewards, the same cost).
    """
    import eulerforge_trl

    enable = getattr(eulerforge_trl, "enable_cpu_huge_pages", None)  # older revisions set it at import (ab.py)
    if enable is not None:
        enable()
    device = choose_device(args.device)
    import torch

    logging.getLogger("eulerforge_trl.models.scorer").setLevel(logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)
    return device, _shapes.resolve_dtype(args.dtype, device)


def prepare_model(args: argparse.Namespace, tmp: Path) -> tuple[str, object]:
    """`model_name` for the preset and its tokenizer: `--model`, or a random model saved under `tmp`."""
    tokenizer = benchmark_tokenizer(args)
    if args.model:
        return args.model, tokenizer
    build_model_dir(args, tmp / "model", tokenizer)
    return str(tmp / "model"), tokenizer


def run_benchmark(args: argparse.Namespace) -> dict:
    device, dtype = start(args)
    import torch
    from accelerate import Accelerator

    from eulerforge_trl.rundir import RunDir
    from eulerforge_trl.trainers.ppo.trainer import PPOTrainer

    now = make_clock(device)
    with tempfile.TemporaryDirectory(prefix="ppo_step_") as tmp:
        tmp = Path(tmp)
        model_name, tokenizer = prepare_model(args, tmp)
        write_prompts(
            tokenizer, tmp / "prompts.jsonl", args.batch * (args.warmup + args.steps), args.prompt_len, args.seed
        )
        preset = make_preset(args, model_name, tmp / "prompts.jsonl", tmp / "run", dtype)
        torch.manual_seed(args.seed)
        trainer = PPOTrainer(preset, RunDir(tmp / "run"), accelerator=Accelerator(cpu=device == "cpu"))
        lengths = {len(ids) for ids in getattr(trainer.prompts, "ids", trainer.prompts)}  # (ab.py: older revisions)
        if lengths != {args.prompt_len}:
            raise RuntimeError(f"prompts tokenized to lengths {sorted(lengths)}, expected {args.prompt_len}")
        n_params = base_parameter_count(trainer.model)
        model_config = trainer.model.config
        short = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
        weights_dtype = short[trainer.model.get_input_embeddings().weight.dtype]  # what the preset gave

        sampler = getattr(trainer, "sampler", None)  # (ab.py: older revisions have none)
        merged_copy = getattr(sampler, "name", "hf") == "hf" and getattr(sampler, "own_weights", False)
        walls, metrics = time_train_steps(trainer, args, now)
        generated_width = trainer._last[0].response_ids.shape[1]  # columns generate() produced
        mem, mem_kind = peak_memory_mib(device)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        floor = measure_floor(trainer, args, now)
        floor_mem = peak_memory_mib(device)[0] if device == "cuda" else None

    def med(key: str) -> float:
        return statistics.median(m.get(key, 0.0) for m in metrics)

    step_s = statistics.median(walls)
    phases = {name: med(key) for key, name in PHASES.items()}
    other = statistics.median(w - sum(m.get(k, 0.0) for k in PHASES) for w, m in zip(walls, metrics))
    seq_tokens = args.batch * (args.prompt_len + args.response_len)
    scoring = phases["reward"] + phases["reference"] + phases["old_logprobs"]
    r = 4  # decimals of seconds in the JSON
    return {
        "bench": BENCH_NAME,
        "step_s": round(step_s, r),
        "floor_s": round(floor["total"], r),
        "step_over_floor": round(step_s / floor["total"], 3),
        **{f"{name}_s": round(t, r) for name, t in phases.items()},
        "other_s": round(other, r),
        **{f"floor_{name}_s": round(floor[name], r) for name in ("generate", "reference", "reward", "update")},
        "generate_over_floor": round(phases["generate"] / floor["generate"], 3),
        "scoring_over_floor": round(scoring / (floor["reference"] + floor["reward"]), 3),
        "update_over_floor": round(phases["update"] / floor["update"], 3),
        "generated_tokens_per_s": round(args.batch * generated_width / phases["generate"], 1),
        "trained_tokens_per_s": round(seq_tokens * args.ppo_epochs / phases["update"], 1),
        "response_len_mean": round(statistics.mean(m["response_length"] for m in metrics), 2),
        "generated_len": generated_width,
        "no_eos_fraction": round(statistics.mean(m["no_eos_fraction"] for m in metrics), 3),
        "peak_mem_mib": round(mem, 1),
        "mem_kind": mem_kind,
        "floor_peak_mem_mib": None if floor_mem is None else round(floor_mem, 1),
        "step_times_s": [round(w, r) for w in walls],
        "device": device,
        "dtype": weights_dtype,
        "thp_mem_alloc": os.environ.get("THP_MEM_ALLOC_ENABLE"),  # torch's huge-page CPU allocations
        "threads": torch.get_num_threads(),
        **_shapes.shape_record(args, model_config),
        "critic": args.critic,
        "generation": args.generation,
        "vllm_dtype": args.vllm_dtype if args.generation == "vllm" else None,
        "merged_copy": merged_copy,  # as resolved (hf on a merged copy of the policy)
        "steps": args.steps,
        "warmup": args.warmup,
        "seed": args.seed,
        "vocab": len(tokenizer),
        "params": n_params,
    }


def print_table(res: dict) -> None:
    def row(name: str, ours: float, floor: float | None) -> tuple[str, str, str, str]:
        if floor is None:
            return name, f"{ours:.4f}", "", ""
        return name, f"{ours:.4f}", f"{floor:.4f}", f"{ours / floor:.2f}x"

    print(
        f"{res['bench']} on {res['device']} ({res['dtype']}, {res['threads']} threads): {res['model']} "
        f"{res['hidden']}/{res['layers']} hidden/layers ({res['params'] / 1e6:.2f}M params, vocab {res['vocab']}), "
        f"batch {res['batch']} x {res['prompt_len']}+{res['response_len']} tokens, LoRA r {res['lora_r']}, "
        f"{res['ppo_epochs']} PPO epochs x {res['mini_batches']} minibatches, critic {res['critic']}, "
        f"generation {res.get('generation', 'hf')}"
    )
    rows = [
        ("phase (median s)", "ours", "floor", "ours/floor"),
        row("generate", res["generate_s"], res["floor_generate_s"]),
        row("reward", res["reward_s"], res["floor_reward_s"]),
        row("reference", res["reference_s"], res["floor_reference_s"]),
        row("old logprobs/values", res["old_logprobs_s"], None),
        row("update", res["update_s"], res["floor_update_s"]),
        row("weight sync (vllm)", res.get("weight_sync_s", 0.0), None),
        row("other (GAE, logging)", res["other_s"], None),
        row("step", res["step_s"], res["floor_s"]),
    ]
    floor_mem = res["floor_peak_mem_mib"]
    extra = [
        ("timed steps (s)", " ".join(f"{t:.3f}" for t in res["step_times_s"])),
        ("generated tokens/s", f"{res['generated_tokens_per_s']:.0f}"),
        ("trained tokens/s", f"{res['trained_tokens_per_s']:.0f}"),
        ("response length (mean)", f"{res['response_len_mean']:.2f} of {res['generated_len']} generated"),
        (
            f"peak memory ({res['mem_kind']})",
            f"{res['peak_mem_mib']:.0f} MiB" + (f" (floor alone: {floor_mem:.0f} MiB)" if floor_mem else ""),
        ),
        ("step / floor", f"{res['step_over_floor']:.2f}"),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    widths[0] = max(widths[0], *(len(key) for key, _ in extra))
    for r in rows:
        print(f"{r[0]:<{widths[0]}}  " + "  ".join(f"{c:>{w}}" for c, w in zip(r[1:], widths[1:])))
    for key, val in extra:
        print(f"{key:<{widths[0]}}  {val}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run_benchmark(args)
    if not args.json_only:
        print_table(result)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
