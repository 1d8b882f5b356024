"""The `vllm` rollout engine: vLLM in the training process (colocated, no server), with its own copy
of the weights, as TRL's GRPO runs it with `vllm_mode="colocate"`.

The engine starts from the policy as it is (base + policy LoRA merged) and, after every optimizer
step, gets the policy's merged weights again: base weight + LoRA delta computed out of place, so
the base in the trainer, which is also the reference (adapters off), is never touched (merging and
unmerging in bf16 would leave rounding in it). vLLM's own LoRA path is not used: its CPU kernels
are slow (FACTS.md) and it is reported not to change Qwen3.5's generations (vllm-project/vllm#49354).

The weights reach the engine through vLLM's in-place `reload_weights` (a worker method on GPUs and
on the CPU build alike; the model's `load_weights`, TRL's way, fails on the CPU build, whose linear
layers repack their weights after loading). vLLM returns token ids (and the log-prob of each
sampled token, kept only to log the gap to the trainer's); every log-prob PPO trains on is the
trainer's own.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import traceback
from pathlib import Path

import torch

from ..errors import UserError
from .merged import base_model, merged_weights
from .rollout import Rollout, build_rollout

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    "generation.backend=vllm needs vLLM: on a CPU machine `make install-vllm` (vLLM's CPU build), "
    "on a GPU machine pip install 'eulerforge-trl[vllm]'; or set generation.backend=hf"
)
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


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
    backend, or its own refusal: see `_engine_error`).
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


def _engine_error(err: Exception) -> UserError | None:
    """vLLM refusing to start its engine on this model or these settings (a pydantic ValidationError
    of its config, or a ValueError raised inside vLLM: an architecture it cannot run, a length the
    model does not allow) as one line; None for anything else (a bug keeps its traceback)."""
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
    hint = "" if torch.cuda.is_available() else " (vLLM's CPU build runs Llama-family models)"
    return UserError(
        f"generation.backend=vllm: vLLM cannot start on this model: {reason}{hint}; set generation.backend=hf"
    )


class VLLMSampler:
    """Samples with a colocated vLLM engine that follows the training model's `adapter` weights."""

    name = "vllm"
    own_weights = True  # the engine's copy: the training model is not sampled

    def __init__(
        self,
        model,
        tokenizer,
        *,
        adapter: str | None,
        max_new_tokens: int,
        temperature: float,
        stop_ids,
        pad_token_id: int,
        seed: int,
        max_model_len: int,
        gpu_memory_utilization: float,
        dtype: str,
        enforce_eager: bool,
        max_batch: int = 64,
        distributed: bool = False,
    ):
        vllm = require_vllm()
        require_architecture(base_model(model))
        self.model, self.adapter = model, adapter
        self.stop_ids, self.pad_token_id = list(stop_ids), pad_token_id
        # the engine's process is this one: the weights are pushed in memory, and a script without a
        # `__main__` guard still works (vLLM would otherwise spawn its engine core)
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        self.workdir = Path(tempfile.mkdtemp(prefix="eulerforge-vllm-"))
        try:
            _write_engine_model(model, tokenizer, self.workdir, merged_weights(self.model, self.adapter))
            engine_dtype = DTYPES.get(dtype) or str(next(model.parameters()).dtype).removeprefix("torch.")
            self.llm = vllm.LLM(
                model=str(self.workdir),
                tokenizer=str(self.workdir),
                dtype=engine_dtype,
                seed=seed,
                max_model_len=max_model_len,
                gpu_memory_utilization=gpu_memory_utilization,
                enforce_eager=enforce_eager,
                max_num_seqs=max_batch,
                **_cpu_kv_cache(base_model(model).config, engine_dtype, max_batch, max_model_len),
                enable_prefix_caching=False,  # weights change every step: a cached prefix would be stale
                logprobs_mode="processed_logprobs",  # after the temperature, as the trainer computes them
                # several training processes: one engine in each, on the launcher's process group
                # (TRL's colocate mode does the same), each seeded apart by the caller
                **({"distributed_executor_backend": "external_launcher"} if distributed else {}),
            )
        except Exception as err:
            shutil.rmtree(self.workdir, ignore_errors=True)
            refused = _engine_error(err)
            if refused is not None:
                raise refused from None
            raise
        self.params = vllm.SamplingParams(
            n=1,
            temperature=temperature,
            top_p=1.0,
            top_k=0,
            max_tokens=max_new_tokens,
            stop_token_ids=self.stop_ids,
            ignore_eos=True,  # stop exactly where hf stops: at `stop_ids`, not at the config's own EOS
            logprobs=0,  # the sampled token's log-prob only
            detokenize=False,
        )

    @torch.no_grad()
    def sample(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> Rollout:
        """[B, P] left-padded prompts -> a `Rollout` on the prompts' device."""
        prompts = [{"prompt_token_ids": ids[mask.bool()].tolist()} for ids, mask in zip(prompt_ids, prompt_mask)]
        outputs = self.llm.generate(prompts, self.params, use_tqdm=False)
        width = max(1, max(len(o.outputs[0].token_ids) for o in outputs))
        response = torch.full((len(outputs), width), self.pad_token_id, dtype=torch.long)
        logprobs = torch.zeros(len(outputs), width)
        for row, output in enumerate(outputs):
            completion = output.outputs[0]
            ids = list(completion.token_ids)
            response[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            for col, (token, entry) in enumerate(zip(ids, completion.logprobs or [])):
                logprobs[row, col] = entry[token].logprob
        device = prompt_ids.device
        return build_rollout(
            prompt_ids, prompt_mask, response.to(device), self.stop_ids, self.pad_token_id, logprobs.to(device)
        )

    @torch.no_grad()
    def sync_weights(self) -> None:
        """Push the policy's current merged weights into the engine (after each optimizer step)."""
        weights = merged_weights(self.model, self.adapter)
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(weights.items())})
        self.llm.reset_prefix_cache()

    def close(self) -> None:
        """Free the engine and its weights directory."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            del llm
            import gc

            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        shutil.rmtree(self.workdir, ignore_errors=True)


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


def _write_engine_model(model, tokenizer, directory: Path, weights: dict[str, torch.Tensor]) -> None:
    """A model directory vLLM can start from: config, tokenizer and the current merged weights."""
    from safetensors.torch import save_file

    base = base_model(model)
    base.config.save_pretrained(directory)
    if base.generation_config is not None:
        base.generation_config.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(directory / "model.safetensors"))
