"""PPO checkpoints: `checkpoints/checkpoint-<step>/ppo_state.pt`, written atomically, with every
process's RNG state so that a resumed run samples what the uninterrupted one would have."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from ...rundir import RunDir, atomic_directory
from .sharding import full_tensors, load_adapter_state, shard_optimizer_state

logger = logging.getLogger(__name__)

STATE_FILE = "ppo_state.pt"


class Checkpointer:
    """Saves and loads the trainer's state (a dict the trainer builds and applies) for one run."""

    def __init__(self, run: RunDir, accelerator, save_total_limit: int):
        self.run, self.accelerator, self.save_total_limit = run, accelerator, save_total_limit

    def save(self, step: int, state: dict) -> None:
        """Write `state` + every process's RNG state as checkpoint-<step>; the oldest beyond the limit go."""
        from accelerate.utils import gather_object

        rng = _rng_state()
        rng_states = gather_object([rng]) if self.accelerator.num_processes > 1 else [rng]
        if self.accelerator.is_main_process:
            target = self.run.checkpoint_dir(step)
            with atomic_directory(target) as tmp:
                torch.save({**state, "step": step, "rng": rng_states}, tmp / STATE_FILE)
                (tmp / "trainer_state.json").write_text(json.dumps({"global_step": step}) + "\n")
            self.run.prune_checkpoints(self.save_total_limit)
        self.accelerator.wait_for_everyone()

    def load(self, path: Path) -> dict:
        """The saved state (on the CPU), this process's RNG restored (the trainer trims the logs, `start_run`)."""
        # on the CPU: the RNG states must stay there, and the rest is copied onto the parameters' device
        state = torch.load(Path(path) / STATE_FILE, map_location="cpu", weights_only=False)
        self._restore_rng(state["rng"], path)
        return state

    def _restore_rng(self, states: list[dict], path: Path) -> None:
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        if len(states) != world:
            logger.warning(
                "%s was saved by %d process(es), resuming on %d: sampling continues from fresh per-process seeds",
                path,
                len(states),
                world,
            )
            return
        mine = states[rank]
        torch.set_rng_state(mine["torch"].cpu())
        if mine["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([rng.cpu() for rng in mine["cuda"]])  # CPU ByteTensors only


def training_state(model, critic, optimizer, scheduler) -> dict:
    """What trains, as a checkpoint holds it: the policy adapter, the critic, optimizer and schedule.

    Whole tensors, sharded or not (`sharding.full_tensors`, a collective: every rank calls this).
    """
    from peft import get_peft_model_state_dict

    from ..policy_final import POLICY

    return full_tensors(
        {
            "policy": get_peft_model_state_dict(model, adapter_name=POLICY),
            "critic": critic.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
        }
    )


def restore_training_state(state: dict, model, critic, optimizer, scheduler) -> None:
    """`training_state` put back (into this rank's shards when sharded); the policy adapter active again."""
    from ..policy_final import POLICY

    load_adapter_state(model, state["policy"], POLICY)
    critic.load_state_dict(state["critic"])
    model.set_adapter(POLICY)
    optimizer.load_state_dict(shard_optimizer_state(state["optimizer"], optimizer))
    scheduler.load_state_dict(state["scheduler"])


def _rng_state() -> dict:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
