"""The process a run lives in: torch's CPU allocator setting, and the process group.

The process group is set up once per run: GPUs when there are any, else several CPU processes.
accelerate joins CPU processes started by `accelerate launch`/torchrun into a gloo group only when
asked for the CPU explicitly; without that each rank would silently train alone.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from contextlib import contextmanager

HUGE_PAGES_ENV = "THP_MEM_ALLOC_ENABLE"


def enable_cpu_huge_pages(warn: bool = True) -> bool:
    """Ask torch's CPU allocator to back tensors of 2 MB and more with transparent huge pages.

    Call it before `import torch` (or set THP_MEM_ALLOC_ENABLE=1 yourself): torch reads the
    variable once, when it makes its first tensor. The `eulerforge` command, `python -m
    eulerforge_trl.train` and `python -m eulerforge_trl.pipeline` call it first thing; importing
    the package does not.

    Why: torch returns large CPU tensors to the OS when they are freed, so every PPO pass
    page-faults its activations and logits in again, 4 KB at a time; huge pages cut those faults
    about fivefold and shorten the PPO step (`benchmarks/ab.py` measures it). A value the user set
    (0 turns it off) is left alone. Linux only; no effect where transparent huge pages are `never`,
    nor on GPU memory.

    Args:
        warn: warn when torch is already imported (the CLI's entry points, also called in-process
            by tests and notebooks, do not).

    Returns:
        Whether the variable is now "1" (False when the user set another value).

    Example:
        >>> import eulerforge_trl
        >>> eulerforge_trl.enable_cpu_huge_pages()   # first cell, before anything imports torch
        True
    """
    if warn and "torch" in sys.modules and HUGE_PAGES_ENV not in os.environ:
        warnings.warn(
            "enable_cpu_huge_pages() was called after torch was imported: it may have no effect "
            "(call it before importing torch, or set THP_MEM_ALLOC_ENABLE=1 before starting Python)",
            stacklevel=2,
        )
    os.environ.setdefault(HUGE_PAGES_ENV, "1")
    return os.environ[HUGE_PAGES_ENV] == "1"


def use_cpu() -> bool:
    import torch

    return not torch.cuda.is_available()


# Notes from the libraries we call that a user of ours cannot act on: (logger or warning category,
# the start of the message, on the CPU only).
# - transformers deprecated `is_gradient_checkpointing`; peft and TRL still read it on every model
#   they wrap (a FutureWarning per stage, from their code, not the user's).
# - peft, saving an adapter, looks on the hub for its base's config (to see whether the vocabulary
#   grew); a built-in base (`tiny-qwen3.5`, `smollm2-135m-instruct`: a bare name, no owner/ and no
#   path) is on no hub, so the lookup fails and peft says so twice. A hub id or a path keeps the note.
# - transformers' hub kernels fall back to PyTorch where the fast package does not run: on a CPU
#   no package does (flash-linear-attention and causal-conv1d are CUDA kernels). On a GPU the note
#   stays: installing the package (`eulerforge-trl[fla]`) is what it asks for.
_DEPRECATIONS = (r"`is_gradient_checkpointing` is deprecated",)
_BUILTIN_BASE_LOOKUPS = (
    r"Unable to fetch remote file due to the following error .* the file config\.json in [^/\s]+\.$",
    r"Could not find a config file in [^/\s]+ - will assume that the vocabulary was not modified",
)
_FALLBACK_LOGGER = "transformers.integrations.hub_kernels"
_FALLBACK_NOTE = "is falling back to its reference PyTorch implementation"


class _CPUFallbackFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return _FALLBACK_NOTE not in record.getMessage()


@contextmanager
def library_notes_silenced():
    """Within the block, the libraries' notes a user cannot act on (listed above) are not printed;
    every other warning is. Entered around a stage's training, `evaluate` and `export`; on leaving,
    the warning filters and loggers are as they were."""
    fallback_logger = logging.getLogger(_FALLBACK_LOGGER)
    fallback_filter = _CPUFallbackFilter() if use_cpu() else None
    with warnings.catch_warnings():
        for message in _DEPRECATIONS:
            warnings.filterwarnings("ignore", message=message, category=FutureWarning)
        for message in _BUILTIN_BASE_LOOKUPS:
            warnings.filterwarnings("ignore", message=message, category=UserWarning)
        if fallback_filter is not None:
            fallback_logger.addFilter(fallback_filter)
        try:
            yield
        finally:
            if fallback_filter is not None:
                fallback_logger.removeFilter(fallback_filter)


def process_state():
    """The shared accelerate `PartialState` (the first call decides the backend for the process).

    CPU processes launched with an FSDP2 config are made to shard here (`distributed.shard_cpu_processes`).
    """
    from accelerate import PartialState

    from .distributed import requested_sharding, shard_cpu_processes

    state = PartialState(cpu=use_cpu())
    if use_cpu() and requested_sharding() == "fsdp2":
        shard_cpu_processes()
    return state


def whole_tensor(tensor):
    """The whole tensor: a DTensor shard gathered from every rank (a collective: all ranks call it)."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor
