"""Run one stage: output directory, preset.yml, seeding, resume, dispatch, plot.

The CLI and the notebook API both end here, so they behave the same.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Preset, load_preset
from ..config.shipped import resolve_preset_path
from ..distributed import check_sharding
from ..rundir import RunDir, read_metrics
from ..runtime import library_notes_silenced, process_state, use_cpu
from ..stages import STAGES
from .existing_run import check_same_run, finished_note
from .inputs import check_earlier_stages, step_cap_note
from .plots import plot_training_curves

logger = logging.getLogger(__name__)

_RM_CHECKPOINT_KEY = "training.reward_model.checkpoint_path"
_REWARD_FUNCS_KEY = "training.reward_funcs"


@dataclass
class StageResult:
    """What a stage produced: where its files are and its last metrics."""

    stage: str
    output_dir: Path
    final_dir: Path
    metrics: dict = field(default_factory=dict)
    # the line saying the stage was finished already and nothing ran (None: it trained now)
    finished_before: str | None = None

    @property
    def history(self) -> list[dict]:
        """Every line of the stage's metrics.jsonl."""
        return read_metrics(self.output_dir / "metrics.jsonl")


def run_stage(preset: Preset | str | Path, overrides=None, output_dir=None, resume: bool = True) -> StageResult:
    """Train the stage named by `preset.training.type` and write `<output_dir>/final/`.

    Args:
        preset: a Preset, or the path of a YAML preset.
        overrides: `["key=value", ...]` or a dict applied on top.
        output_dir: overrides the preset's `output_dir`.
        resume: continue from the newest checkpoint in `<output_dir>/checkpoints` if there is one.

    Example:
        >>> result = run_stage("presets/tiny_sft.yml", ["training.max_steps=20"], "outputs/sft")
        >>> result.final_dir
        PosixPath('outputs/sft/final')
    """
    # a Preset object goes through load_preset too: its cross-key rules run whoever built it
    preset_path = resolve_preset_path(preset) if isinstance(preset, (str, Path)) else None
    return run_loaded_stage(load_preset(preset, overrides, output_dir), resume, preset_path)


def run_loaded_stage(preset: Preset, resume: bool = True, preset_path: Path | None = None) -> StageResult:
    """`run_stage` for a preset `load_preset` returned (checked: not loaded again); `preset_path`, the
    file it came from, names that file in the hints about earlier stages."""
    stage = preset.training.type
    run = RunDir(Path(preset.output_dir))
    check_same_run(preset, run)  # another stage's or base's run there is refused before anything loads
    note = finished_note(preset, run, resume)
    if note is not None:  # nothing to do: no model loads, no file changes
        if process_state().is_main_process:
            print(note, flush=True)
        return StageResult(stage, run.root, run.final, _last_values(run), finished_before=note)
    check_earlier_stages(preset, preset_path)  # before torch loads: a missing sft/rm final/ says so at once
    training_rows = check_inputs(preset)  # before anything in the output directory is touched
    from transformers import set_seed

    from ..models.loading import attention_implementation, stage_chat_template

    check_sharding(stage, on_cpu=use_cpu())  # an FSDP/DeepSpeed launch this stage cannot honour refuses
    state = process_state()
    resume_from = run.last_loadable_checkpoint() if resume else None
    if state.is_main_process:
        # preset.yml and metrics.jsonl change only once training starts (`rundir.start_run`, called by
        # the trainers): a run that fails before its first step leaves an earlier run's files as they were
        run.root.mkdir(parents=True, exist_ok=True)
        if resume_from:
            logger.warning("resuming %s from %s", stage, resume_from)
        note = step_cap_note(preset, training_rows, state.num_processes)
        if note:
            logger.warning("%s", note)
    state.wait_for_everyone()
    set_seed(preset.training.seed)
    runner = STAGES[stage].load_runner()  # imported now: torch/transformers/TRL load only when a stage runs
    # every model and tokenizer the runner loads; the libraries' notes a user cannot act on are left out (runtime)
    with (
        attention_implementation(preset.attn_implementation),
        stage_chat_template(preset.chat_template),
        library_notes_silenced(),
    ):
        metrics = runner(preset, run, str(resume_from) if resume_from else None)
    if state.is_main_process:
        plot_training_curves(run.metrics, run.plot, stage)
    return StageResult(stage=stage, output_dir=run.root, final_dir=run.final, metrics=metrics)


def _last_values(run: RunDir) -> dict:
    """Every metric's last logged value (what a finished run's result reports without training)."""
    values: dict = {}
    for record in read_metrics(run.metrics):
        values.update(record)
    return values


def check_inputs(preset: Preset) -> int:
    """Fail on bad data files, model paths, RM checkpoints, reward functions and output paths before
    any file is written. Returns the number of rows in `data.path`."""
    _check_output_dir(Path(preset.output_dir))
    from ..models.locate import check_model_name

    check_model_name(preset.model_name)  # first, before torch loads: a mistyped name answers in a second
    if preset.generation.backend == "vllm":
        from ..generation.vllm_engine import require_vllm

        require_vllm()  # one line naming the install command, for every stage that samples with it
    from ..data.jsonl import read_data
    from ..errors import ModelError
    from ..models.fingerprint import check_same_shapes
    from ..models.loading import architecture_of, load_tokenizer
    from ..models.reward_files import HEAD_FILE, is_reward_dir, read_reward_meta

    if is_reward_dir(preset.model_name):
        raise ModelError(
            f"model_name {preset.model_name}: a reward model (the rm stage's final/, with {HEAD_FILE}), not a "
            f"language model to train: start from the sft stage's final/, and give an RM as {_RM_CHECKPOINT_KEY}"
        )
    # read as the stage reads them (data.split, data.subset, data.columns)
    files = {"data.path": read_data(preset.data)}
    if preset.data.eval_path:
        files["data.eval_path"] = read_data(preset.data, key="data.eval_path")
    if any(isinstance(rows[0]["prompt"], list) for rows in files.values()):  # message lists (read as checked)
        from ..data.render import require_chat_template

        tokenizer = load_tokenizer(preset.model_name, preset.chat_template)
        for key, rows in files.items():
            require_chat_template(tokenizer, rows, preset.model_name, key)
    stage = STAGES[preset.training.type]
    checkpoint = preset.training.reward_model.checkpoint_path
    # a stage that takes the rm stage's final/ must run on the base that RM was trained on, unless
    # the RM is loaded as a model of its own (`separate`)
    if checkpoint and _RM_CHECKPOINT_KEY in stage.inputs:
        meta = read_reward_meta(checkpoint)
        if not preset.training.reward_model.separate:
            check_same_shapes(meta, architecture_of(preset.model_name), checkpoint)
    if preset.training.reward_funcs and _REWARD_FUNCS_KEY in stage.reads:
        from ..rewards.sources import load_functions

        load_functions(list(preset.training.reward_funcs), preset.training.reward_weights)  # each one imports
    return len(files["data.path"])


def _check_output_dir(out: Path) -> None:
    """The output directory (or the nearest of its parents that exists) must be a directory."""
    from ..errors import PresetError

    for path in (out, *out.parents):
        if path.exists():
            if not path.is_dir():
                raise PresetError(f"--output-dir / output_dir {out}: {path} exists and is not a directory")
            return
