"""What an output directory already holds decides what a stage may do there, before anything loads.

- Another stage's run, or the same stage on another base (`RunDir.recorded_run`), is refused in one
  line naming both: resuming from its checkpoints would load another model's weights and optimizer.
- A finished run of this stage (its `final/` complete, at the step the preset asks for) is left as
  it is: `eulerforge train` says so and exits 0, and the pipeline skips it. A higher
  `training.max_steps` goes on from its last checkpoint; `--no-resume` trains it again.

`run_stage` and the pipeline's plan both ask here, so every stage behaves the same.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..config.schema import Preset
from ..errors import PresetError
from ..rundir import RunDir, base_name, checkpoint_step


def check_same_run(preset: Preset, run: RunDir) -> None:
    """Refuse an output directory that holds another stage's run or this stage's on another base.

    Raises:
        PresetError: e.g. "--output-dir outputs/tiny/01_sft holds an sft run on model_name tiny-qwen3.5,
            not this dpo run on model_name outputs/tiny/01_sft/final: give another --output-dir, ...".
    """
    recorded = run.recorded_run()
    if recorded is None:
        return
    stage, base = preset.training.type, base_name(preset.model_name)
    theirs, their_base = recorded["stage"], recorded.get("base") or "?"
    if theirs == stage and _same_base(their_base, base):
        return
    raise PresetError(
        f"--output-dir {run.root} holds {_a(theirs)} {theirs} run on model_name {their_base}, not this {stage} run "
        f"on model_name {preset.model_name}: give another --output-dir, or move that run away (nothing was changed)"
    )


def finished_note(preset: Preset, run: RunDir, resume: bool = True) -> str | None:
    """One line when the stage has nothing left to do in `run` (see the module doc), else None.

    Finished: `final/` is complete and holds at least `training.max_steps` steps; with
    `training.max_steps <= 0` (epochs), the finished run trained by epochs too, at least as many.
    """
    if not resume or not run.final_is_complete():
        return None
    t = preset.training
    info = run.final_info()
    steps = info.get("steps")
    if steps is None:  # a final/ whose marker has no step count: its newest checkpoint's
        newest = run.checkpoints_newest_first()
        steps = checkpoint_step(newest[0]) if newest else None
    if t.max_steps > 0:
        if steps is not None and steps < t.max_steps:
            return None
        target = f"training.max_steps={t.max_steps}"
    else:
        earlier = _recorded_training(run)
        if earlier.get("max_steps", -1) > 0 or earlier.get("epochs", t.epochs) < t.epochs:
            return None
        target = f"training.epochs={t.epochs:g}"
    at = f"step {steps}" if steps is not None else "its last step"
    return (
        f"{t.type}: {run.root} is finished ({run.final} at {at}, {target}): nothing to do, no file changed "
        "(--no-resume trains it again; a higher training.max_steps goes on from its last checkpoint)"
    )


def _recorded_training(run: RunDir) -> dict:
    """`training.max_steps` and `training.epochs` of the run's preset.yml ({} when unreadable)."""
    import yaml

    try:
        tree = yaml.safe_load(run.preset.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    training = tree.get("training") if isinstance(tree, dict) else None
    if not isinstance(training, dict):
        return {}
    return {k: training[k] for k in ("max_steps", "epochs") if isinstance(training.get(k), (int, float))}


def _same_base(recorded: str, base: str) -> bool:
    """The same name, or the same directory; a recorded directory that no longer exists (the outputs
    folder moved) cannot be told apart and counts as the same."""
    if recorded == base:
        return True
    if os.path.isabs(recorded) and not Path(recorded).exists():
        return True
    try:
        return Path(recorded).is_dir() and Path(base).is_dir() and Path(recorded).samefile(base)
    except OSError:
        return False


def _a(stage: str) -> str:
    return "an" if stage[0] in "aeiosr" else "a"  # an sft, an rm, a ppo, a grpo, a dpo (as read aloud)
