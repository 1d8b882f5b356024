"""GGUF -> an ordinary fp32 `save_pretrained` directory, by transformers' GGUF reader (needs `gguf`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def gguf_installed() -> bool:
    """Whether transformers can read GGUF files (checked before a 93 MB download, not after)."""
    return importlib.util.find_spec("gguf") is not None


def convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Dequantise a GGUF file with transformers and save it as an ordinary fp32 model directory.

    A GGUF-loaded model refuses `save_pretrained`, so its weights are copied into a plain model
    built from the same config minus `quantization_config`. The tokenizer is saved exactly as the
    GGUF defines it (no added tokens, pad left as the file sets it), so token ids match the weights.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    del gguf_model
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
