"""Benchmark the peer: TRL 1.12's ``trl.experimental.ppo.PPOTrainer`` with LoRA.

TRL removed ``PPOTrainer`` in 1.13, so this script keeps the last release that had it
(``trl==1.12.0``) in a venv of its own, ``.venv-peer/`` at the repository root, and measures
one PPO step there: rollout (sampled ``generate``), reference/value/reward forwards, GAE and
``--ppo-epochs`` optimisation epochs over one minibatch.

The models are random-init ``qwen3_5_text`` (alternating Gated DeltaNet and full-attention
layers, shaped by ``benchmarks/_shapes.py`` exactly as ``benchmarks/ppo_step.py`` shapes ours):
a causal-LM policy with a LoRA adapter (the reference is the same policy with the
adapter off), and a reward and a value model as ``AutoModelForSequenceClassification`` with
``num_labels=1``. Prompts are random token ids; the tokenizer is a tiny byte-level BPE built
in-process unless ``--tokenizer DIR`` names one (``benchmarks/compare.py`` passes our shipped
tokenizer, so both sides have the same vocabulary). ``--dtype`` sets the weights' dtype (auto: bf16
on CUDA, fp32 on a CPU, as in ``ppo_step.py``; the LoRA adapter stays fp32, no autocast);
``--mini-batches K`` splits each PPO epoch into K optimizer steps of ``--batch/K`` episodes.
Generation never stops early on purpose: ``generate`` runs ``--response-len`` tokens unless every
row of the batch samples EOS, which a random model practically never does.

What it reports: the median wall time of a PPO step over ``--steps`` steps, after
``--warmup`` discarded ones, and the peak memory of the process (peak RSS on a CPU,
``torch.cuda.max_memory_allocated`` on CUDA). A short table goes to stdout, then, as the
last line, one JSON object for other tools to read.

Run it with any Python; the first run creates ``.venv-peer/`` and installs into it
``$TORCH_SPEC`` (default ``torch==2.13.0``, the CPU wheel on this machine's disk; a plain
``torch`` would pull a multi-GB CUDA build) and then ``trl==1.12.0 transformers==5.23.0
peft==0.21.2 accelerate datasets``, and re-executes itself with the venv's Python::

    python benchmarks/peer_trl112.py                        # 64/2 hidden/layers, 8x32
    python benchmarks/peer_trl112.py --hidden 256 --layers 4 --batch 16 --response-len 64
    python benchmarks/peer_trl112.py --steps 2 --threads 2  # a quick look

Timings need idle cores: with another job busy on this 2-core machine, torch's default two
threads stall each other (a 0.57 s step took 21 s); ``--threads 1`` degrades far less.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _shapes  # noqa: E402  (stdlib + transformers only: importable from either venv)

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_DIR = REPO_ROOT / ".venv-peer"
PEER_TRL_VERSION = "1.12.0"
DEFAULT_TORCH_SPEC = "torch==2.13.0"
PEER_PACKAGES = [f"trl=={PEER_TRL_VERSION}", "transformers==5.23.0", "peft==0.21.2", "accelerate", "datasets"]
PEER_NAME = f"trl-{PEER_TRL_VERSION} PPOTrainer"

PAD_TOKEN = "<|pad|>"
EOS_TOKEN = "<|endoftext|>"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    _shapes.add_shape_args(p)
    p.add_argument(
        "--tokenizer", default=None, help="AutoTokenizer directory (default: --model's, else a tiny BPE built here)"
    )
    args = p.parse_args(argv)
    _shapes.check_shape_args(p, args)
    return args


# --------------------------------------------------------------------------------------------
# 1. The peer venv: create, install, re-execute
# --------------------------------------------------------------------------------------------


def venv_python() -> Path:
    return VENV_DIR / "bin" / "python"


def running_in_peer_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV_DIR.resolve()


def peer_installed(python: Path) -> bool:
    """True when `python` exists and imports trl at the peer's version."""
    if not python.exists():
        return False
    check = f"import sys, trl; sys.exit(trl.__version__ != {PEER_TRL_VERSION!r})"
    return subprocess.run([str(python), "-c", check], check=False, capture_output=True).returncode == 0


def pip_install(python: Path, requirements: list[str]) -> None:
    cmd = [str(python), "-m", "pip", "install", "--progress-bar", "off", *requirements]
    log(f"$ {' '.join(cmd)}")
    # pip's chatter goes to stderr so that stdout stays the benchmark's own.
    subprocess.run(cmd, check=True, stdout=sys.stderr)


def ensure_peer_venv() -> Path:
    """Create `.venv-peer/` and install the peer into it unless it is already there."""
    python = venv_python()
    if peer_installed(python):
        return python
    if not python.exists():
        base = shutil.which("python3") or sys.executable
        log(f"creating {VENV_DIR} with {base}")
        subprocess.run([base, "-m", "venv", str(VENV_DIR)], check=True)
    # torch first and on its own: its spec decides CPU vs CUDA build, and the rest must not
    # pull a different one.
    pip_install(python, [os.environ.get("TORCH_SPEC", DEFAULT_TORCH_SPEC)])
    pip_install(python, PEER_PACKAGES)
    if not peer_installed(python):
        sys.exit(f"error: trl {PEER_TRL_VERSION} is still not importable from {python}")
    return python


def reexec_in(python: Path, argv: list[str]) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(str(python), [str(python), str(Path(__file__).resolve()), *argv])


def log(msg: str) -> None:
    print(f"[peer_trl112] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# 2. Tokenizer, models, prompts (inside the peer venv)
# --------------------------------------------------------------------------------------------


def training_sentences(n: int, seed: int) -> list[str]:
    """Simple generated English-ish text, enough for a few hundred BPE merges."""
    import random

    rng = random.Random(seed)
    subjects = ["the cat", "a robot", "my friend", "the teacher", "an old man", "the river", "every child"]
    verbs = ["likes", "sees", "builds", "follows", "remembers", "paints", "answers", "carries", "counts"]
    objects = [
        "a red apple",
        "the small boat",
        "seven stones",
        "the bright moon",
        "a quiet song",
        "the long road",
        "three green bottles",
        "a strange question",
        "the morning train",
    ]
    tails = ["today", "in the garden", "after dinner", "with great care", "near the window", "again"]
    return [
        f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} {rng.choice(tails)}. "
        f"It was {rng.randint(0, 9999)} times."
        for _ in range(n)
    ]


def build_tiny_tokenizer(seed: int, vocab_size: int = 512):
    """A byte-level BPE trained in-process; pad and EOS are distinct special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD_TOKEN, EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(training_sentences(4000, seed), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD_TOKEN, eos_token=EOS_TOKEN)


def load_tokenizer(path: str | None, seed: int):
    """The tiny BPE, or `path`'s tokenizer with a pad token that is not EOS.

    PPOTrainer finds the end of a response by its first pad token, so pad must differ from EOS.
    A pretrained tokenizer whose pad is EOS (SmolLM2, most Llama/Qwen-family ones) gets another
    special token it already has as pad (its unk or another special token), so the vocabulary and
    the embedding stay as they are; only a tokenizer without one gets a new token (and the
    models' embeddings are resized to it in `build_models`).
    """
    if path is None:
        tokenizer = build_tiny_tokenizer(seed)
    else:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path)
        if tokenizer.eos_token is None:
            tokenizer.add_special_tokens({"eos_token": EOS_TOKEN})
        if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
            spare = [t for t in [tokenizer.unk_token, *tokenizer.all_special_tokens] if t and t != tokenizer.eos_token]
            tokenizer.pad_token = spare[0] if spare else None
            if tokenizer.pad_token is None:
                tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    tokenizer.padding_side = "left"  # prompts are left-padded for generate()
    return tokenizer


def model_config(tokenizer, hidden: int, layers: int, max_len: int, **extra):
    """The shared `qwen3_5_text` shape (`_shapes.py`) with this tokenizer's vocabulary and ids."""
    return _shapes.qwen3_5_text_config(
        vocab_size=len(tokenizer),
        hidden=hidden,
        layers=layers,
        max_len=max_len,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **extra,
    )


def build_models(tokenizer, args: argparse.Namespace, dtype: str = "fp32"):
    """Policy (causal LM), reward and value models (sequence classifiers with a random score head).

    Random-init of the `_shapes.py` shape, or all three from `--model`'s weights: the reward and
    value models as `AutoModelForSequenceClassification` copies of that base, as PPOTrainer's
    users run it.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
    if args.model:
        policy = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch_dtype)
        reward, value = (
            AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=1, dtype=torch_dtype)
            for _ in range(2)
        )
        for model in (policy, reward, value):
            if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
                model.resize_token_embeddings(len(tokenizer))
            model.config.pad_token_id = tokenizer.pad_token_id  # the classifiers score the last non-pad token
        return policy, reward, value
    max_len = args.prompt_len + args.response_len
    config = model_config(tokenizer, args.hidden, args.layers, max_len)
    policy = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    # The value model gets its own weights (PPOTrainer trains it in full), drawn after the RM's.
    scorer_config = model_config(tokenizer, args.hidden, args.layers, max_len, num_labels=1)
    reward = AutoModelForSequenceClassification.from_config(scorer_config, dtype=torch_dtype)
    value = AutoModelForSequenceClassification.from_config(scorer_config, dtype=torch_dtype)
    return policy, reward, value


def record_generated_widths(policy) -> list[int]:
    """Wrap the policy class's `generate` to record how many new tokens each call produced.

    PPOTrainer generates without `min_new_tokens`, so a pretrained model may stop a batch early
    when every row sampled EOS; the width shows whether the peer did the same work as ours.
    """
    widths: list[int] = []
    cls = type(policy)
    original = cls.generate

    def generate(self, *a, **kw):
        out = original(self, *a, **kw)
        sequences = out if hasattr(out, "shape") else out.sequences
        prompt = kw.get("input_ids", a[0] if a else None)
        widths.append(sequences.shape[1] - prompt.shape[1])
        return out

    cls.generate = generate
    return widths


def build_prompts(tokenizer, n: int, prompt_len: int, seed: int):
    """`n` prompts of exactly `prompt_len` random non-special token ids, as PPOTrainer reads them."""
    import torch
    from datasets import Dataset

    special = set(tokenizer.all_special_ids)
    allowed = torch.tensor([i for i in range(len(tokenizer)) if i not in special])
    gen = torch.Generator().manual_seed(seed)
    picks = torch.randint(len(allowed), (n, prompt_len), generator=gen)
    return Dataset.from_dict({"input_ids": allowed[picks].tolist()})


# --------------------------------------------------------------------------------------------
# 3. Trainer, timing, memory
# --------------------------------------------------------------------------------------------


def ppo_config(args: argparse.Namespace, device: str, output_dir: str):
    from peft import LoraConfig
    from trl.experimental.ppo import PPOConfig

    # The rollout batch is per_device_train_batch_size * gradient_accumulation_steps; each of the
    # num_mini_batches minibatches of it is one optimizer step (one micro-batch: the whole minibatch).
    config = PPOConfig(
        output_dir=output_dir,
        per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=1,
        num_mini_batches=args.mini_batches,
        num_ppo_epochs=args.ppo_epochs,
        local_rollout_forward_batch_size=args.batch,
        response_length=args.response_len,
        total_episodes=args.batch * (args.steps + args.warmup),
        stop_token="eos",
        missing_eos_penalty=None,
        temperature=1.0,
        num_sample_generations=0,
        bf16=False,  # PPOConfig turns bf16 on by default; --dtype bf16 sets the weights' dtype instead
        fp16=False,
        gradient_checkpointing=False,
        report_to=[],
        save_strategy="no",
        eval_strategy="no",
        dataloader_num_workers=0,
        use_cpu=device == "cpu",
        seed=args.seed,
    )
    lora = LoraConfig(
        r=args.lora_r,
        lora_alpha=2 * args.lora_r,
        lora_dropout=0.0,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    return config, lora


def make_step_timer():
    """A TrainerCallback that records the wall time of every PPO step (one per batch)."""
    import torch
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.durations: list[float] = []
            self.metrics: list[dict] = []
            self._last = 0.0

        def _now(self) -> float:
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                torch.cuda.synchronize()
            return time.perf_counter()

        def on_train_begin(self, args, state, control, **kwargs):
            self._last = self._now()

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.metrics.append(dict(logs or {}))

        def on_step_end(self, args, state, control, **kwargs):
            now = self._now()
            self.durations.append(now - self._last)
            self._last = now
            last = self.metrics[-1] if self.metrics else {}
            kl, score = last.get("objective/kl", float("nan")), last.get("objective/scores", float("nan"))
            log(f"step {state.global_step}: {self.durations[-1]:.3f} s  kl={kl:.3g}  score={score:.3g}")

    return StepTimer()


def build_trainer(args: argparse.Namespace, device: str, output_dir: str, dtype: str = "fp32"):
    from transformers import PrinterCallback, ProgressCallback
    from trl.experimental.ppo import PPOTrainer

    tokenizer = load_tokenizer(args.tokenizer or args.model, args.seed)
    policy, reward, value = build_models(tokenizer, args, dtype)
    widths = record_generated_widths(policy)
    model_config_ = policy.config
    prompts = build_prompts(tokenizer, args.batch * (args.steps + args.warmup), args.prompt_len, args.seed)
    config, lora = ppo_config(args, device, output_dir)
    timer = make_step_timer()
    trainer = PPOTrainer(
        args=config,
        processing_class=tokenizer,
        model=policy,
        ref_model=None,  # with peft_config: the reference is the policy with its adapter off
        reward_model=reward,
        value_model=value,
        train_dataset=prompts,
        eval_dataset=prompts,  # unused (num_sample_generations=0), but PPOTrainer builds a loader
        peft_config=lora,
        callbacks=[timer],
    )
    # Our timer logs one line a step; the default progress bar/printer would dump every metric.
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    return trainer, timer, len(tokenizer), widths, model_config_


def choose_device(flag: str) -> str:
    if flag == "cpu":
        # PPOTrainer builds its own Accelerator, which would take a visible GPU anyway.
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        return "cpu"
    import torch

    if flag == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda but torch.cuda.is_available() is False")
    return "cuda" if torch.cuda.is_available() else "cpu"


def peak_memory_mib(device: str) -> tuple[float, str]:
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / 2**20, "cuda_allocated"
    import resource

    # ru_maxrss is in KiB on Linux. It covers this process since before the re-exec, whose
    # launcher part stayed tiny (argparse only); pip ran in child processes, not counted.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss"


def print_table(result: dict, step_times: list[float]) -> None:
    rows = [
        ("peer", result["peer"]),
        ("device", result["device"]),
        (
            "model",
            f"{result['model']} {result['hidden']}/{result['layers']} hidden/layers, vocab {result['vocab']}",
        ),
        ("batch x prompt/response", f"{result['batch']} x {result['prompt_len']}/{result['response_len']}"),
        (
            "LoRA r / PPO epochs / minibatches",
            f"{result['lora_r']} / {result['ppo_epochs']} / {result['mini_batches']}",
        ),
        ("dtype", result["dtype"]),
        ("timed steps (s)", " ".join(f"{t:.3f}" for t in step_times)),
        ("median s/step", f"{result['step_s']:.3f}"),
        ("new tokens per generate (median)", f"{result['generated_len']}"),
        (f"peak memory ({result['mem_kind']})", f"{result['peak_mem_mib']:.0f} MiB"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, val in rows:
        print(f"{key:<{width}}  {val}")


def run_benchmark(args: argparse.Namespace) -> dict:
    import tempfile

    device = choose_device(args.device)
    dtype = _shapes.resolve_dtype(args.dtype, device)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # we know PPOTrainer is experimental in 1.12
    import torch
    from transformers import set_seed

    if args.threads:
        torch.set_num_threads(args.threads)
    set_seed(args.seed)
    with tempfile.TemporaryDirectory(prefix="peer_trl112_") as output_dir:
        trainer, timer, vocab, widths, config = build_trainer(args, device, output_dir, dtype)
        trainer.train()
    step_times = timer.durations[args.warmup :]
    if len(step_times) != args.steps:
        raise RuntimeError(f"expected {args.steps} timed steps, recorded {len(step_times)}")
    mem, mem_kind = peak_memory_mib(device)
    result = {
        "peer": PEER_NAME,
        "step_s": round(statistics.median(step_times), 4),
        "steps": len(step_times),
        "peak_mem_mib": round(mem, 1),
        "mem_kind": mem_kind,
        **_shapes.shape_record(args, config),
        "generated_len": statistics.median(widths[args.warmup :]) if len(widths) > args.warmup else None,
        "device": device,
        "dtype": dtype,
        "thp_mem_alloc": os.environ.get("THP_MEM_ALLOC_ENABLE"),  # torch's huge-page CPU allocations
        "threads": torch.get_num_threads(),
        "vocab": vocab,
    }
    print_table(result, step_times)
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if not running_in_peer_venv():
        reexec_in(ensure_peer_venv(), argv)  # does not return
    result = run_benchmark(args)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
