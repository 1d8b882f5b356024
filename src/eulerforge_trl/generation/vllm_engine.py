"""A colocated vLLM engine holding the policy's merged weights: what PPO's `vllm` sampler and GRPO's
`generation.backend: vllm` both sample from.

Start: vLLM starts from a temporary directory holding only the model's config and tokenizer, with
`load_format="dummy"` (random weights, nothing read from disk), and the policy's merged weights are
pushed right after. So no copy of the weights is written to disk, and the engine starts the same
way whatever `model_name` is (a model directory, a built-in name such as `smollm2-135m-instruct`,
an adapter-only `final/`): vLLM never reads `model_name`.

Push: each LoRA layer's merged weight is base + delta computed out of place, one tensor at a time,
and streamed into vLLM's in-place `reload_weights` (a worker method on GPUs and on the CPU build
alike; the model's own `load_weights`, TRL's way, fails on the CPU build, whose linear layers
repack their weights after loading). The trainer's base, which is also the reference (adapters
off), is never touched; at most one layer's merged tensors are alive at once (vLLM buffers a
layer's tensors until it has all of them). A name vLLM does not know fails inside vLLM; a weight
vLLM expects and does not get is only logged by vLLM ("Following weights were not loaded"), which
keeps its old tensor: here that is an error.
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
import traceback
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path

import torch

from ..errors import UserError
from .merged import base_model, iter_merged_weights, untied_config, untied_keys

INSTALL_HINT = (
    "generation.backend=vllm needs vLLM: on a CPU machine `make install-vllm` (vLLM's CPU build), "
    "on a GPU machine pip install 'eulerforge-trl[vllm]'; or set generation.backend=hf"
)
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
# TRL's colocated engine uses the same: vLLM's memory profiler is misled by its high default
MAX_NUM_BATCHED_TOKENS = 4096
# where vLLM reports a partial load (vllm/v1/worker/gpu_model_runner.py, GPU and CPU runners alike)
RUNNER_LOGGER = "vllm.v1.worker.gpu_model_runner"
NOT_LOADED = "Following weights were not loaded"
LAYERWISE_LOGGER = "vllm.model_executor.model_loader.reload.layerwise"


def require_vllm():
    """The `vllm` module, or one line saying how to install it (exit 2)."""
    try:
        import vllm
    except ImportError as err:
        raise UserError(f"{INSTALL_HINT} ({err})") from None
    return vllm


def require_architecture(model) -> None:
    """Refuse, before the engine starts, a model whose architecture this vLLM cannot load.

    vLLM inspects a registered architecture by importing its module (in a subprocess); where that
    fails, say Qwen3.5 on the CPU build, whose module imports torchvision, the engine stops with a
    long pydantic traceback. The same inspection here, asked of vLLM's own registry (its result is
    cached, so the engine's start repeats nothing), turns that into one line. The architecture is
    the config's (what vLLM reads from config.json), else the model's class (a model built in
    memory, whose config names none). One vLLM does not register is left to vLLM (its Transformers
    backend, or its own refusal: see `engine_error`).
    """
    try:
        from vllm import ModelRegistry

        registered = ModelRegistry.models
    except (ImportError, AttributeError):  # another vLLM layout: the engine's start says it
        return
    for arch in getattr(model.config, "architectures", None) or [type(model).__name__]:
        entry = registered.get(arch)
        if entry is None:
            continue
        try:
            entry.inspect_model_cls()
        except Exception as err:  # noqa: BLE001 - vLLM's model module does not import here: any reason
            raise UserError(_unsupported(arch, _last_line(err))) from None


def _unsupported(arch: str, reason: str) -> str:
    where = "this vLLM build" if torch.cuda.is_available() else "vLLM's CPU build (it runs Llama-family models)"
    return (
        f"generation.backend=vllm: the model's architecture {arch} cannot run on {where}: {reason}; "
        "set generation.backend=hf"
    )


def _last_line(err: BaseException) -> str:
    """The root cause's last line: vLLM's inspection error carries the subprocess's traceback."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


def engine_error(err: Exception, gpu_memory_utilization: float | None = None) -> UserError | None:
    """vLLM refusing to start its engine on this model or these settings (a pydantic ValidationError
    of its config, or a ValueError raised inside vLLM: an architecture it cannot run, a length the
    model does not allow, a KV cache that does not fit) as one line; None for anything else (a bug
    keeps its traceback)."""
    if not isinstance(err, ValueError):
        return None
    try:
        from pydantic import ValidationError
    except ImportError:
        ValidationError = ()  # noqa: N806 - nothing is one
    if isinstance(err, ValidationError):
        messages = [str(e.get("msg", "")).removeprefix("Value error, ") for e in err.errors()]
        reason = next((m for m in messages if m), _last_line(err))
    else:
        frames = traceback.extract_tb(err.__traceback__)
        if not frames or f"{os.sep}vllm{os.sep}" not in frames[-1].filename:
            return None
        reason = _last_line(err)
    share = "" if gpu_memory_utilization is None else f" ({gpu_memory_utilization})"
    if "KV cache" in reason or "cache blocks" in reason or "auto-fit max_model_len" in reason:
        return UserError(
            f"generation.vllm_gpu_memory_utilization{share}: vLLM's KV cache does not fit in the share of GPU "
            f"memory the engine claims: {reason}; raise generation.vllm_gpu_memory_utilization (or shorten "
            "data.max_prompt_length and the completions)"
        )
    if "Decrease GPU memory utilization" in reason:
        return UserError(
            f"generation.vllm_gpu_memory_utilization{share}: the GPU has less free memory than the engine claims: "
            f"{reason}; lower generation.vllm_gpu_memory_utilization"
        )
    hint = "" if torch.cuda.is_available() else " (vLLM's CPU build runs Llama-family models)"
    return UserError(
        f"generation.backend=vllm: vLLM cannot start on this model: {reason}{hint}; set generation.backend=hf"
    )


# ------------------------------------------------------------------------------------ weights


@contextmanager
def _partial_loads():
    """The weight names vLLM reports it did not load during the block (vLLM only logs them).

    vLLM's layerwise reload also warns, layer by layer, "Failed to load weights" for a layer that got
    none: a rotary cache (never in a checkpoint), a tied head (the embedding, pushed under its own
    name), or a layer the runner's report names anyway; those lines are dropped while the block runs.
    """
    reports: list[str] = []

    class Report(logging.Handler):
        def emit(self, record):
            if str(record.msg).startswith(NOT_LOADED):
                reports.append(record.getMessage())

    def quiet(record) -> bool:
        return not str(record.msg).endswith("Failed to load weights")

    runner, layerwise = logging.getLogger(RUNNER_LOGGER), logging.getLogger(LAYERWISE_LOGGER)
    handler, level = Report(level=logging.WARNING), runner.level
    runner.addHandler(handler)
    if not runner.isEnabledFor(logging.WARNING):  # the report must be emitted even if vLLM's logging is quieter
        runner.setLevel(logging.WARNING)
    layerwise.addFilter(quiet)
    try:
        yield reports
    finally:
        runner.removeHandler(handler)
        runner.setLevel(level)
        layerwise.removeFilter(quiet)


def push_weights(llm, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
    """Stream `weights` (name, tensor) into the engine's model in place; every weight the engine's model
    has must be among them (else RuntimeError: vLLM would sample its old values of those)."""
    with _partial_loads() as reports:
        llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(weights)})
    if reports:
        raise RuntimeError(
            f"the weight push into vLLM was partial, the engine kept its old values of the rest: {reports[0]}"
        )
    llm.reset_prefix_cache()


# ------------------------------------------------------------------------------------ engine


class ColocatedEngine:
    """vLLM in this process, sampling `adapter`'s merged weights of `model` (`push` after each update).

    Args:
        max_num_seqs: sequences the engine runs at once (the rollout batch).
        dtype: `generation.vllm_dtype` (auto = the training weights' dtype).
        distributed: several training processes, one engine in each on the launcher's process group
            (TRL's colocate mode does the same), each seeded apart by the caller.
    """

    def __init__(
        self,
        model,
        tokenizer,
        *,
        adapter: str | None,
        seed: int,
        max_model_len: int,
        max_num_seqs: int,
        gpu_memory_utilization: float,
        dtype: str,
        enforce_eager: bool,
        distributed: bool = False,
    ):
        vllm = require_vllm()
        base = base_model(model)
        require_architecture(base)
        self.model, self.adapter = model, adapter
        # the engine's process is this one: the weights are pushed in memory (a generator cannot be sent
        # to another process), and a script without a `__main__` guard still works
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        engine_dtype = DTYPES.get(dtype) or str(next(model.parameters()).dtype).removeprefix("torch.")
        with tempfile.TemporaryDirectory(prefix="eulerforge-vllm-") as workdir:
            write_engine_model(model, tokenizer, Path(workdir), untied=bool(untied_keys(model, adapter)))
            try:
                self.llm = vllm.LLM(
                    model=workdir,
                    tokenizer=workdir,
                    load_format="dummy",  # the weights come from the push below, not from disk
                    dtype=engine_dtype,
                    seed=seed,
                    max_model_len=max_model_len,
                    max_num_batched_tokens=max(MAX_NUM_BATCHED_TOKENS, max_model_len),
                    gpu_memory_utilization=gpu_memory_utilization,
                    enforce_eager=enforce_eager,
                    max_num_seqs=max_num_seqs,
                    **_cpu_kv_cache(base.config, engine_dtype, max_num_seqs, max_model_len),
                    enable_prefix_caching=False,  # weights change every step: a cached prefix would be stale
                    logprobs_mode="processed_logprobs",  # after the temperature, as the trainer computes them
                    **({"distributed_executor_backend": "external_launcher"} if distributed else {}),
                )
            except Exception as err:
                refused = engine_error(err, None if not torch.cuda.is_available() else gpu_memory_utilization)
                if refused is not None:
                    raise refused from None
                raise
        self.push(first=True)

    @torch.no_grad()
    def push(self, first: bool = False) -> None:
        """The policy's current merged weights into the engine (after each optimizer step)."""
        push_weights(self.llm, iter_merged_weights(self.model, self.adapter, tied_head=first))

    def close(self) -> None:
        """Free the engine."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            del llm
            import gc

            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def _cpu_kv_cache(config, dtype: str, max_batch: int, max_model_len: int) -> dict:
    """On vLLM's CPU build: an explicit KV cache for `max_batch` full-length sequences (x2 for block
    rounding, at least 64 MiB). Left to itself it claims `gpu_memory_utilization` of the machine's RAM
    minus the whole process's size, which the training process (model, optimizer) easily exceeds."""
    if torch.cuda.is_available():
        return {}
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    per_token = (
        2 * config.num_hidden_layers * kv_heads * head_dim * torch.empty(0, dtype=getattr(torch, dtype)).element_size()
    )
    return {"kv_cache_memory_bytes": max(64 << 20, 2 * per_token * max_batch * max_model_len)}


def write_engine_model(model, tokenizer, directory: Path, untied: bool = False) -> None:
    """A model directory vLLM can start from with dummy weights: the config and the tokenizer.

    `untied`: a LoRA breaks the tie of the head to the embedding (`untied_keys`), so the engine's
    config says the two are separate weights (vLLM then gives the head a tensor of its own, which
    the push fills).
    """
    base = base_model(model)
    config = untied_config(base.config) if untied else copy.deepcopy(base.config)
    if not getattr(config, "architectures", None):  # a model built in memory: vLLM would guess the bare `*Model`
        config.architectures = [type(base).__name__]
    config.save_pretrained(directory)
    if base.generation_config is not None:
        base.generation_config.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
