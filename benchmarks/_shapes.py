"""What the PPO benchmarks share: the model shape and the command-line flags that set it.

`ppo_step.py` (our trainer, in `.venv`) and `peer_trl112.py` (TRL 1.12, in `.venv-peer`) run
in different venvs, so this module imports only the standard library and, inside
`qwen3_5_text_config`, transformers. Both build the model from `qwen3_5_text_config`, so a
given `--hidden/--layers` is the same architecture on both sides; `compare.py` forwards the
same flags to both.
"""

from __future__ import annotations

import argparse
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# The tokenizer our package ships (byte-level BPE, 512 ids, pad != EOS). compare.py hands it to
# the peer too, so both sides have the same vocabulary.
TINY_TOKENIZER_DIR = REPO_ROOT / "src" / "eulerforge_trl" / "models" / "tiny_tokenizer"

# Flags that describe the work of one PPO step; compare.py forwards them to both benchmarks.
SHAPE_FLAGS = (
    "hidden",
    "layers",
    "batch",
    "prompt_len",
    "response_len",
    "lora_r",
    "ppo_epochs",
    "mini_batches",
)
# Flags that set how the run is measured (also forwarded to both).
RUN_FLAGS = ("steps", "warmup", "seed", "threads", "device", "dtype")
# `--model`: a pretrained model instead of the random one. compare.py resolves a built-in name to
# its directory in our venv and forwards the directory (the peer's venv has no eulerforge_trl).
MODEL_FLAG = "model"


def add_shape_args(p: argparse.ArgumentParser) -> None:
    """The flags both benchmarks take, with the same defaults."""
    p.add_argument(
        "--model",
        default=None,
        help="a pretrained model: a local directory, or (ours, compare.py) a built-in name such as "
        "smollm2-135m-instruct; its architecture and tokenizer replace --hidden/--layers and the tiny "
        "tokenizer (default: a random qwen3_5_text of --hidden/--layers)",
    )
    p.add_argument("--hidden", type=int, default=64, help="hidden size (a multiple of 4)")
    p.add_argument("--layers", type=int, default=2, help="decoder layers (linear/full attention alternate)")
    p.add_argument("--batch", type=int, default=8, help="prompts per PPO step")
    p.add_argument("--prompt-len", type=int, default=16, help="tokens per prompt")
    p.add_argument("--response-len", type=int, default=32, help="new tokens sampled per prompt")
    p.add_argument("--lora-r", type=int, default=8, help="LoRA rank of the policy adapter (alpha = 2r)")
    p.add_argument("--ppo-epochs", type=int, default=4, help="optimisation epochs per PPO step")
    p.add_argument("--mini-batches", type=int, default=1, help="minibatches per PPO epoch (must divide --batch)")
    p.add_argument("--steps", type=int, default=5, help="timed PPO steps")
    p.add_argument("--warmup", type=int, default=1, help="PPO steps run first and not timed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave as is)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: cuda if there")
    p.add_argument(
        "--dtype",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="weights of the frozen base (LoRA stays fp32); auto: bf16 on cuda, fp32 on cpu",
    )


def check_shape_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """`p.error` on values no benchmark can run."""
    if args.hidden % 4 or args.hidden < 8:
        p.error(f"--hidden must be a multiple of 4 and at least 8, got {args.hidden}")
    for name in ("layers", "batch", "prompt_len", "response_len", "lora_r", "ppo_epochs", "mini_batches", "steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.batch % args.mini_batches:
        p.error(f"--mini-batches ({args.mini_batches}) must divide --batch ({args.batch})")
    if args.warmup < 0:
        p.error(f"--warmup must be >= 0, got {args.warmup}")
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be >= 1, got {args.threads}")


def forwarded_argv(args: argparse.Namespace) -> list[str]:
    """`args`' shape and run flags as a command line for either benchmark."""
    argv: list[str] = []
    for name in (MODEL_FLAG, *SHAPE_FLAGS, *RUN_FLAGS):
        value = getattr(args, name)
        if value is not None:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    return argv


def resolve_dtype(flag: str, device: str) -> str:
    """'fp32' or 'bf16' for a --dtype flag on `device`."""
    if flag == "auto":
        return "bf16" if device == "cuda" else "fp32"
    return flag


def qwen3_5_text_config(
    *, vocab_size: int, hidden: int, layers: int, max_len: int, pad_token_id: int, eos_token_id: int, **extra
):
    """A small `qwen3_5_text` config: `layer_types` alternate Gated DeltaNet and full attention.

    4 attention heads of hidden/4 (2 KV heads), DeltaNet with 2 key and 4 value heads of
    hidden/4, MLP 4*hidden, untied LM head. `extra` goes to the config (e.g. num_labels=1).
    """
    from transformers import Qwen3_5TextConfig

    head_dim = hidden // 4
    return Qwen3_5TextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=head_dim,
        linear_num_key_heads=2,
        linear_num_value_heads=4,
        linear_key_head_dim=head_dim,
        linear_value_head_dim=head_dim,
        layer_types=["linear_attention" if i % 2 == 0 else "full_attention" for i in range(layers)],
        max_position_embeddings=max(256, max_len),
        tie_word_embeddings=False,
        pad_token_id=pad_token_id,
        eos_token_id=eos_token_id,
        bos_token_id=None,
        **extra,
    )


SHAPE_KEYS = ("hidden", "layers", "batch", "prompt_len", "response_len", "lora_r", "ppo_epochs", "mini_batches")


def shape_record(args, model_config=None) -> dict:
    """The shape flags as they go into a result's JSON line (the same keys for ours and the peer).

    With `--model`, `model` names it and `hidden`/`layers` are the pretrained model's (from its
    `model_config`), not the flags'.
    """
    record = {"model": getattr(args, MODEL_FLAG, None) or "random qwen3_5_text"}
    record.update({key: getattr(args, key) for key in SHAPE_KEYS})
    if model_config is not None:
        text = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
        record.update(hidden=text.hidden_size, layers=text.num_hidden_layers)
    return record
