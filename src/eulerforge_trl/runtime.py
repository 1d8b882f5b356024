"""The process group, set up once per run: GPUs when there are any, else several CPU processes.

accelerate joins CPU processes started by `accelerate launch`/torchrun into a gloo group only when
asked for the CPU explicitly; without that each rank would silently train alone.
"""

from __future__ import annotations


def use_cpu() -> bool:
    import torch

    return not torch.cuda.is_available()


def process_state():
    """The shared accelerate `PartialState` (the first call decides the backend for the process)."""
    from accelerate import PartialState

    return PartialState(cpu=use_cpu())


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
        digest.update(param.detach().float().cpu().contiguous().numpy().tobytes())
    Path(directory).mkdir(parents=True, exist_ok=True)
    (Path(directory) / f"rank{process_state().process_index}.txt").write_text(digest.hexdigest() + "\n")
