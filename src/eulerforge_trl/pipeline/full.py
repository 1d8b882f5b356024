"""The whole pipeline in one command: SFT -> RM -> PPO (or SFT -> DPO, SFT -> KTO, SFT -> RM -> RLOO, ...: the
chains of the stage table), each `final/` feeding the next.

    python -m eulerforge_trl.pipeline presets/tiny_pipeline.yml --output-dir outputs/tiny

A pipeline preset names one stage preset per stage (paths relative to the pipeline file; a bare name
not found there is the shipped preset of that name). Every stage's preset, its `--set` overrides and
its data are checked before the first stage trains. A rerun skips the stages that are finished
(`pipeline.existing_run`, the rule `eulerforge train` follows) and resumes the interrupted one from
its checkpoint.
Which stages may run together, in which order, and which `final/` feeds which key all come from
the stage table (`eulerforge_trl.stages`).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field, fields, make_dataclass
from pathlib import Path

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..config import Preset, load_preset
from ..errors import DataError, PresetError
from ..rundir import RunDir, read_metrics
from ..stages import STAGES, pipeline_chains
from .existing_run import check_same_run, finished_note
from .run_stage import StageResult, run_loaded_stage

# `stages:` holds one optional key per stage of the table: the stage preset it runs, relative to
# the pipeline file, else a shipped preset by name (a stage left out does not run).
PipelineStages = make_dataclass(
    "PipelineStages",
    [(name, str | None, field(default=None)) for name in STAGES],
    namespace={"__doc__": "The stage preset of each stage the pipeline runs, relative to the pipeline file."},
)


@dataclass
class PipelinePreset:
    """A pipeline preset: `stages: {sft: a.yml, rm: b.yml, ppo: c.yml}` and nothing else."""

    stages: PipelineStages = field(default_factory=PipelineStages)


@dataclass
class PipelineResult:
    """Each stage's result and where the pipeline wrote."""

    output_dir: Path
    stages: dict[str, StageResult] = field(default_factory=dict)

    def summary(self) -> str:
        return pipeline_summary(self.output_dir, list(self.stages))


def read_pipeline_preset(path: str | Path) -> dict[str, Path]:
    """{stage: preset path}, in the order they run, from a pipeline preset read onto `PipelinePreset`.

    Args:
        path: a pipeline YAML file, or the name of a shipped one (`tiny_pipeline`).

    Raises:
        PresetError: one line with the file (and line): an unknown key (with the closest valid
            one), or stages that do not form a chain (`eulerforge_trl.stages.pipeline_chains`).

    Example:
        >>> read_pipeline_preset("presets/tiny_pipeline.yml")["rm"]
        PosixPath('presets/tiny_rm.yml')
    """
    from ..config.loading import UniqueKeyLoader, _line_of_key, _omegaconf_message
    from ..config.shipped import resolve_preset_path

    path_given, path = path, resolve_preset_path(path)
    text = path.read_text(encoding="utf-8")
    chains = pipeline_chains()
    try:
        data = yaml.load(text, Loader=UniqueKeyLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        reason = getattr(err, "problem", None)
        where = _at(path, mark.line + 1 if mark else None)
        raise PresetError(f"{where}: not valid YAML" + (f" ({reason})" if reason else "")) from None
    if data is None:
        data = {}
    if isinstance(data, dict) and "stages" not in data and data.keys() & {f.name for f in fields(Preset)}:
        stage = (data.get("training") or {}).get("type") if isinstance(data.get("training"), dict) else None
        raise PresetError(
            f"{path}: a stage preset" + (f" (training.type {stage})" if stage else "") + ", not a pipeline "
            f"preset (stages: ...): run it with `eulerforge train {path_given}`"
        )
    if not isinstance(data, dict) or not isinstance(data.get("stages", {}), dict):
        example = ", ".join(f"{name}: ..." for name in max(chains, key=len))
        line = _line_of_key(text, "stages") if isinstance(data, dict) else None
        raise PresetError(f"{_at(path, line)}: a pipeline preset holds only `stages: {{{example}}}`")
    try:
        preset: PipelinePreset = OmegaConf.to_object(
            OmegaConf.merge(OmegaConf.structured(PipelinePreset), OmegaConf.create(data))
        )
    except OmegaConfBaseException as err:
        raise PresetError(_omegaconf_message(err, str(path), text)) from None
    chosen = {name for name in STAGES if getattr(preset.stages, name) is not None}
    chain = next((c for c in chains if set(c) == chosen), None)
    if chain is None:
        options = " | ".join(", ".join(c) for c in chains)
        raise PresetError(
            f"{_at(path, _line_of_key(text, 'stages'))}: stages must be one of {options} (each stage takes the "
            f"final/ of the one before it); got {', '.join(n for n in STAGES if n in chosen) or 'none'}"
        )
    return {name: _stage_preset_path(path.parent, getattr(preset.stages, name)) for name in chain}


def _stage_preset_path(folder: Path, name: str) -> Path:
    """`name` beside the pipeline file when that file exists, else (for a bare name) the shipped preset
    of that name, as `--preset NAME` finds it; else the path beside it, whose loading says it is missing.

    A copy of a shipped pipeline preset in `./presets/` still finds `tiny_sft.yml` that way.
    """
    from ..config.shipped import SHIPPED_DIR, SUFFIX

    beside = folder / name
    if beside.is_file() or len(Path(name).parts) != 1:
        return beside
    shipped = (SHIPPED_DIR / candidate for candidate in (name, name + SUFFIX))
    return next((candidate for candidate in shipped if candidate.is_file()), beside)


def _at(path: Path, line: int | None) -> str:
    return f"{path}:{line}" if line else str(path)


def run_pipeline(
    pipeline_preset: str | Path,
    output_dir: str | Path = "outputs/pipeline",
    overrides: list[str] | None = None,
    resume: bool = True,
) -> PipelineResult:
    """Run every stage in order; `overrides` are `STAGE.key=value` (e.g. `ppo.training.max_steps=5`).

    Example:
        >>> result = run_pipeline("presets/tiny_pipeline.yml", "outputs/tiny")
        >>> print(result.summary())
    """
    stage_presets = read_pipeline_preset(pipeline_preset)
    out = Path(output_dir)
    plan = plan_pipeline(stage_presets, _split_overrides(overrides or [], stage_presets), out, resume)
    result = PipelineResult(output_dir=out)
    for stage, (preset, skip) in plan.items():
        run = RunDir(Path(preset.output_dir))
        if skip:
            print(f"[pipeline] {stage}: {run.final} is complete, skipping", flush=True)
            result.stages[stage] = StageResult(stage, run.root, run.final)
        else:
            print(f"[pipeline] {stage}: training into {run.root}", flush=True)
            result.stages[stage] = run_loaded_stage(preset, resume=resume)  # loaded and checked by the plan
    return result


def plan_pipeline(
    stage_presets: dict[str, Path], per_stage: dict[str, list[str]], out: Path, resume: bool = True
) -> dict[str, tuple[Preset, bool]]:
    """{stage: (its loaded preset, whether it is finished and skipped)}, every one checked before
    anything trains.

    Each stage's preset is loaded with the earlier stages' `final/` wired in (they need not exist yet)
    and its `--set` overrides, as the stage itself loads it; a stage that will train has its data
    read as it reads it (`data.path`, `data.eval_path`).

    Raises:
        PresetError, DataError: one line; the first problem of the first stage that has one.
    """
    from ..data.jsonl import read_data

    plan: dict[str, tuple[Preset, bool]] = {}
    finals: dict[str, str] = {}
    for stage, preset_path in stage_presets.items():
        run = RunDir(out / STAGES[stage].pipeline_dir)
        # an optional input whose stage is not in the chain keeps the preset's own value
        wiring = [f"{key}={finals[source]}" for key, source in STAGES[stage].inputs.items() if source in finals]
        preset = load_preset(preset_path, wiring + per_stage[stage], output_dir=str(run.root))
        if preset.training.type != stage:
            raise PresetError(
                f"{preset_path}: training.type is {preset.training.type}, but it is listed as stages.{stage}"
            )
        _check_unwired_inputs(stage, preset, preset_path, finals)
        check_same_run(preset, run)
        skip = finished_note(preset, run, resume) is not None  # as `eulerforge train` finds a finished run
        if not skip:
            try:
                for key in ("data.path", "data.eval_path") if preset.data.eval_path else ("data.path",):
                    read_data(preset.data, key=key)
            except DataError as err:
                raise DataError(f"{stage} stage ({preset_path}): {err}") from None
        plan[stage] = (preset, skip)
        finals[stage] = str(run.final)
    return plan


def _check_unwired_inputs(stage: str, preset: Preset, preset_path: Path, finals: dict[str, str]) -> None:
    """An optional input whose stage is not in the chain (PPO's or GRPO's RM without an rm stage) needs
    the preset's own value or a reward function: never the random head kept for debugging."""
    for key, source in STAGES[stage].inputs.items():
        if source in finals or key not in STAGES[stage].optional_inputs:
            continue
        if not operator.attrgetter(key)(preset) and not preset.training.reward_funcs:
            raise PresetError(
                f"{preset_path}: stages.{stage} runs without the {source} stage, so its preset needs "
                f"training.reward_funcs (a reward function) or {key}; or add stages.{source}"
            )


def pipeline_summary(out: Path, stages: list[str]) -> str:
    """A few lines a person reads at the end of `make demo`."""
    lines = [f"pipeline summary ({out})"]
    width = max(map(len, STAGES))
    for stage in stages:
        run = RunDir(Path(out) / STAGES[stage].pipeline_dir)
        text = STAGES[stage].summary(read_metrics(run.metrics))
        plot = f"; plot {run.plot}" if run.plot.is_file() else ""
        lines.append(f"  {stage:>{width}}: {text}{plot}")
    return "\n".join(lines)


def _split_overrides(overrides: list[str], stage_presets: dict) -> dict[str, list[str]]:
    per_stage: dict[str, list[str]] = {s: [] for s in stage_presets}
    for item in overrides:
        stage, _, rest = item.partition(".")
        if stage not in per_stage or not rest:
            raise PresetError(
                f"--set {item}: pipeline overrides start with a stage name ({', '.join(per_stage)}), "
                f"e.g. --set {list(per_stage)[-1]}.training.max_steps=10"
            )
        per_stage[stage].append(rest)
    return per_stage
