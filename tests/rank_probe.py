"""What each rank of a launched run ends with, for the multi-process tests: `eulerforge_trl.train`
with the trainers' `train` wrapped from the outside, so the library holds no hook for the tests.

    accelerate launch --config_file CONFIG tests/rank_probe.py TRAIN_ARGV...

With $EULERFORGE_RANK_DIGEST_DIR set, at the end of training every rank writes there
- `rank<i>.txt`: a hash of its trainable weights, gathered whole (data-parallel ranks must agree);
- `rank<i>.json`: how many parameter elements it stores (`held`) of how many the model has
  (`total`), trainable ones apart, and its resident memory (`rss_mb`, `peak_rss_mb`).

The TRL stages train through transformers' `Trainer.train`, PPO through `PPOTrainer.train`; both
are wrapped by `install()` (`tests/multiprocess_stages.py` and `benchmarks/fsdp_memory.py` call it
too, before running several trainings in one process).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import resource
import sys
from pathlib import Path

RANK_DIGEST_ENV = "EULERFORGE_RANK_DIGEST_DIR"


def install() -> None:
    """Wrap `Trainer.train` and `PPOTrainer.train`: after training, each rank writes its records."""
    from eulerforge_trl.runtime import enable_cpu_huge_pages

    enable_cpu_huge_pages(warn=False)  # as the CLI's entry points do, before torch loads
    from transformers import Trainer

    from eulerforge_trl.trainers.ppo.trainer import PPOTrainer

    def ppo_trainable(trainer):
        names = {id(p): n for n, p in trainer.model.named_parameters()}
        names.update({id(p): f"critic_head.{n}" for n, p in trainer.critic.head.named_parameters()})
        return [(names[id(p)], p) for p in trainer.policy_params + trainer.critic_params]

    def trl_trainable(trainer):
        return [(n, p) for n, p in trainer.model.named_parameters() if p.requires_grad]

    for cls, trainable in ((Trainer, trl_trainable), (PPOTrainer, ppo_trainable)):
        if getattr(cls.train, "rank_probe", False):
            continue
        cls.train = _recording(cls.train, trainable)


def _recording(train, trainable):
    @functools.wraps(train)
    def wrapper(trainer, *args, **kwargs):
        result = train(trainer, *args, **kwargs)
        directory = os.environ.get(RANK_DIGEST_ENV)
        if directory:  # every rank: gathering a sharded weight is a collective
            write_rank_digest(Path(directory), trainable(trainer))
            write_rank_holdings(Path(directory), trainer.model)
        return result

    wrapper.rank_probe = True
    return wrapper


def write_rank_digest(directory: Path, named_parameters) -> None:
    """`rank<i>.txt`: a sha256 of the (name, whole tensor) pairs, in name order."""
    from eulerforge_trl.runtime import process_state, whole_tensor

    digest = hashlib.sha256()
    for name, param in sorted(named_parameters, key=lambda item: item[0]):
        digest.update(name.encode())
        digest.update(whole_tensor(param.detach()).float().cpu().contiguous().numpy().tobytes())
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"rank{process_state().process_index}.txt").write_text(digest.hexdigest() + "\n")


def write_rank_holdings(directory: Path, model) -> None:
    """`rank<i>.json`: the parameter elements this rank stores, of the model's, and its memory.

    Under FSDP2 a parameter is a DTensor whose local shard is what this process stores; under
    DeepSpeed ZeRO-3 the partition is `param.ds_tensor` (`param.ds_numel` the whole); a plain tensor
    is stored whole. The sharding tests read these files: each rank must hold about 1/N.
    """
    from eulerforge_trl.runtime import process_state

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
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"rank{process_state().process_index}.json").write_text(json.dumps(counts) + "\n")


def rss_mb() -> float:
    """The process's resident memory now, in MiB (Linux's /proc/self/status; 0 elsewhere)."""
    status = Path("/proc/self/status")
    if not status.is_file():
        return 0.0
    line = next((x for x in status.read_text().splitlines() if x.startswith("VmRSS:")), "VmRSS: 0 kB")
    return int(line.split()[1]) / 1024


def peak_rss_mb() -> float:
    """The process's peak resident memory so far, in MiB (Linux reports `ru_maxrss` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str]) -> int:
    install()
    from eulerforge_trl.train import main as train

    return train(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
