"""The process a run lives in: torch's CPU allocator setting, and the process group.

The process group is set up once per run: GPUs when there are any, else several CPU processes.
accelerate joins CPU processes started by `accelerate launch`/torchrun into a gloo group only when
asked for the CPU explicitly; without that each rank would silently train alone.
"""

from __future__ import annotations

import os
import sys
import warnings

HUGE_PAGES_ENV = "THP_MEM_ALLOC_ENABLE"


def enable_cpu_huge_pages(warn: bool = True) -> bool:
    """Ask torch's CPU allocator to back tensors of 2 MB and more with transparent huge pages.

    Call it before `import torch` (or set THP_MEM_ALLOC_ENABLE=1 yourself): torch reads the
    variable once, when it makes its first tensor. The `eulerforge` command, `python -m
    eulerforge_trl.train` and `python -m eulerforge_trl.pipeline` call it first thing; importing
    the package does not.

    Why: torch returns large CPU tensors to the OS when they are freed, so every PPO pass
    page-faults its activations and logits in again, 4 KB at a time. On SmolLM2-135M (fp32, 2
    cores) a short PPO benchmark took 2.7M page faults, 0.54M with huge pages, and the PPO step
    0.89x the time (benchmarks/RESULTS.md, `ab.py`). A value the user set (0 turns it off) is left
    alone. Linux only; no effect where transparent huge pages are `never`, nor on GPU memory.

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


RANK_DIGEST_ENV = "EULERFORGE_RANK_DIGEST_DIR"


def write_rank_digest(named_parameters) -> None:
    """If $EULERFORGE_RANK_DIGEST_DIR is set, each rank writes a hash of its trainable weights there.

    Data-parallel ranks must end with identical weights; the multi-process tests compare these files.
    """
    import hashlib
    import os
    from pathlib import Path

    directory = os.environ.get(RANK_DIGEST_ENV)
    if not directory:
        return
    digest = hashlib.sha256()
    for name, param in sorted(named_parameters, key=lambda item: item[0]):
        digest.update(name.encode())
        digest.update(whole_tensor(param.detach()).float().cpu().contiguous().numpy().tobytes())
    Path(directory).mkdir(parents=True, exist_ok=True)
    (Path(directory) / f"rank{process_state().process_index}.txt").write_text(digest.hexdigest() + "\n")


def write_rank_holdings(model) -> None:
    """If $EULERFORGE_RANK_DIGEST_DIR is set, each rank writes `rank<i>.json`: how many parameter
    elements it stores (`held`) of how many the model has (`total`), trainable ones apart, and its
    peak resident memory so far (`peak_rss_mb`).

    Under FSDP2 a parameter is a DTensor whose local shard is what this process stores; under
    DeepSpeed ZeRO-3 the partition is `param.ds_tensor` (`param.ds_numel` the whole); a plain tensor
    is stored whole. The sharding tests read these files: each rank must hold about 1/N.
    """
    import json
    import os
    from pathlib import Path

    directory = os.environ.get(RANK_DIGEST_ENV)
    if not directory:
        return
    counts = {"held": 0, "total": 0, "trainable_held": 0, "trainable_total": 0, "sharded_tensors": 0}
    for param in model.parameters():  # shared (tied) weights once
        if hasattr(param, "ds_tensor"):
            held, total = param.ds_tensor.numel(), param.ds_numel
        else:
            held = param.to_local().numel() if hasattr(param, "to_local") else param.numel()
            total = param.numel()
        counts["held"] += held
        counts["total"] += total
        counts["sharded_tensors"] += int(hasattr(param, "ds_tensor") or hasattr(param, "to_local"))
        if param.requires_grad:
            counts["trainable_held"] += held
            counts["trainable_total"] += total
    counts["peak_rss_mb"] = peak_rss_mb()  # this process's memory high-water mark up to the end of training
    counts["rss_mb"] = rss_mb()  # what it holds at the end of training
    Path(directory).mkdir(parents=True, exist_ok=True)
    (Path(directory) / f"rank{process_state().process_index}.json").write_text(json.dumps(counts) + "\n")


def rss_mb() -> float:
    """The process's resident memory now, in MiB (Linux's /proc/self/status; 0 elsewhere)."""
    from pathlib import Path

    status = Path("/proc/self/status")
    if not status.is_file():
        return 0.0
    line = next((x for x in status.read_text().splitlines() if x.startswith("VmRSS:")), "VmRSS: 0 kB")
    return int(line.split()[1]) / 1024


def peak_rss_mb() -> float:
    """The process's peak resident memory so far, in MiB (Linux reports `ru_maxrss` in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def whole_tensor(tensor):
    """The whole tensor: a DTensor shard gathered from every rank (a collective: all ranks call it)."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor
