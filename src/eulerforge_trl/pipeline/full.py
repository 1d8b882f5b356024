"""The whole pipeline in one command: SFT -> RM -> PPO (or SFT -> DPO), each `final/` feeding the next.

    python -m eulerforge_trl.pipeline presets/tiny_pipeline.yml --output-dir outputs/tiny

A pipeline preset names one stage preset per stage (paths relative to the pipeline file). A rerun
skips the stages whose `final/` is complete and resumes the interrupted one from its checkpoint.
Which stages may run together, in which order, and which `final/` feeds which key all come from
the stage table (`eulerforge_trl.stages`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..config import load_preset
from ..errors import PresetError
from ..rundir import RunDir, read_metrics
from ..stages import STAGES, pipeline_chains
from .stages import StageResult, run_stage


@dataclass
class PipelineResult:
    """Each stage's result and where the pipeline wrote."""

    output_dir: Path
    stages: dict[str, StageResult] = field(default_factory=dict)

    def summary(self) -> str:
        return pipeline_summary(self.output_dir, list(self.stages))


def read_pipeline_preset(path: str | Path) -> dict[str, Path]:
    """{stage: preset path} from a pipeline YAML: `stages: {sft: a.yml, rm: b.yml, ppo: c.yml}`."""
    path = Path(path)
    if not path.is_file():
        raise PresetError(f"pipeline preset not found: {path}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    stages = data.get("stages") if isinstance(data, dict) else None
    unknown = set(data) - {"stages"} if isinstance(data, dict) else set()
    chains = pipeline_chains()
    if not isinstance(stages, dict) or unknown:
        example = ", ".join(f"{name}: ..." for name in max(chains, key=len))
        raise PresetError(f"{path}: a pipeline preset holds only `stages: {{{example}}}`")
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise PresetError(f"{path}: stages.{bad[0]}: unknown stage; choose from {', '.join(STAGES)}")
    chain = next((c for c in chains if set(c) == set(stages)), None)
    if chain is None:
        options = " | ".join(", ".join(c) for c in chains)
        raise PresetError(
            f"{path}: stages must be one of {options} (each stage takes the final/ of the one before it); "
            f"got {', '.join(n for n in STAGES if n in stages) or 'none'}"
        )
    return {s: (path.parent / stages[s]) for s in chain}


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
    per_stage = _split_overrides(overrides or [], stage_presets)
    out = Path(output_dir)
    result = PipelineResult(output_dir=out)
    finals: dict[str, str] = {}
    for stage, preset_path in stage_presets.items():
        run = RunDir(out / STAGES[stage].pipeline_dir)
        wiring = [f"{key}={finals[source]}" for key, source in STAGES[stage].inputs.items()]
        preset = load_preset(preset_path, wiring + per_stage[stage], output_dir=str(run.root))
        if preset.training.type != stage:
            raise PresetError(
                f"{preset_path}: training.type is {preset.training.type}, but it is listed as stages.{stage}"
            )
        if resume and run.final_is_complete():
            print(f"[pipeline] {stage}: {run.final} is complete, skipping", flush=True)
            result.stages[stage] = StageResult(stage, run.root, run.final)
        else:
            print(f"[pipeline] {stage}: training into {run.root}", flush=True)
            result.stages[stage] = run_stage(preset, resume=resume)
        finals[stage] = str(run.final)
    return result


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
