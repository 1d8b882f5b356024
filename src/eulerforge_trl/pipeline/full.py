"""The whole pipeline in one command: SFT -> RM -> PPO (or SFT -> DPO), each `final/` feeding the next.

    python -m eulerforge_trl.pipeline presets/tiny_pipeline.yml --output-dir outputs/tiny

A pipeline preset names one stage preset per stage (paths relative to the pipeline file). A rerun
skips the stages whose `final/` is complete and resumes the interrupted one from its checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..config import load_preset
from ..errors import PresetError
from ..rundir import RunDir, read_metrics
from .stages import StageResult, run_stage

STAGE_ORDER = ("sft", "rm", "ppo", "dpo")
STAGE_DIRS = {"sft": "01_sft", "rm": "02_rm", "ppo": "03_ppo", "dpo": "02_dpo"}


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
    if not isinstance(stages, dict) or unknown:
        raise PresetError(f"{path}: a pipeline preset holds only `stages: {{sft: ..., rm: ..., ppo: ...}}`")
    bad = [s for s in stages if s not in STAGE_ORDER]
    if bad:
        raise PresetError(f"{path}: stages.{bad[0]}: unknown stage; choose from {', '.join(STAGE_ORDER)}")
    chosen = [s for s in STAGE_ORDER if s in stages]
    if chosen not in (["sft", "rm", "ppo"], ["sft", "dpo"], ["sft"], ["sft", "rm"]):
        raise PresetError(f"{path}: stages must be sft, rm, ppo (or sft, dpo); got {', '.join(chosen)}")
    return {s: (path.parent / stages[s]) for s in chosen}


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
        run = RunDir(out / STAGE_DIRS[stage])
        wiring = []
        if stage != "sft":
            wiring.append(f"model_name={finals['sft']}")
        if stage == "ppo" and "rm" in finals:
            wiring.append(f"training.reward_model.checkpoint_path={finals['rm']}")
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
    for stage in stages:
        run = RunDir(Path(out) / STAGE_DIRS[stage])
        records = read_metrics(run.metrics)
        if stage in ("sft", "dpo"):
            losses = [r["loss"] for r in records if "loss" in r]
            evals = [r["eval_loss"] for r in records if "eval_loss" in r]
            text = f"loss {losses[0]:.3f} -> {losses[-1]:.3f}" if losses else "no loss logged"
            if evals:
                text += f", eval_loss {evals[-1]:.3f}"
            if stage == "dpo":
                margins = [r["rewards/margins"] for r in records if "rewards/margins" in r]
                if margins:
                    text += f", preference margin {margins[0]:.3f} -> {margins[-1]:.3f}"
        elif stage == "rm":
            final = [r for r in records if r.get("final_eval")]
            text = (
                f"held-out accuracy {final[-1]['eval_accuracy']:.3f}, margin {final[-1]['eval_margin']:.2f}"
                if final
                else "no evaluation"
            )
        else:
            rewards = [r["reward_mean"] for r in records if "reward_mean" in r]
            kls = [r["kl_divergence"] for r in records if "kl_divergence" in r]
            if rewards:
                k = max(1, len(rewards) // 10)
                first, last = sum(rewards[:k]) / k, sum(rewards[-k:]) / k
                text = f"reward_mean {first:.3f} (first 10%) -> {last:.3f} (last 10%), kl_divergence last {kls[-1]:.3f}"
                held_out = [r["eval_reward_mean"] for r in records if "eval_reward_mean" in r]
                if len(held_out) >= 2:
                    text += f"; held-out prompts: reward {held_out[0]:.3f} -> {held_out[-1]:.3f}"
            else:
                text = "no steps logged"
        plot = f"; plot {run.plot}" if run.plot.is_file() else ""
        lines.append(f"  {stage:>3}: {text}{plot}")
    return "\n".join(lines)


def _split_overrides(overrides: list[str], stage_presets: dict) -> dict[str, list[str]]:
    per_stage: dict[str, list[str]] = {s: [] for s in stage_presets}
    for item in overrides:
        stage, _, rest = item.partition(".")
        if stage not in per_stage or not rest:
            raise PresetError(
                f"--set {item}: pipeline overrides start with a stage name ({', '.join(per_stage)}), "
                f"e.g. --set ppo.training.max_steps=10"
            )
        per_stage[stage].append(rest)
    return per_stage


def add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("preset", help="pipeline YAML (stages: {sft: ..., rm: ..., ppo: ...})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="STAGE.KEY=VALUE")
    parser.add_argument("--output-dir", default="outputs/pipeline")
    parser.add_argument("--no-resume", action="store_true", help="retrain every stage from scratch")


def run_pipeline_command(args: argparse.Namespace) -> int:
    result = run_pipeline(args.preset, args.output_dir, args.overrides, resume=not args.no_resume)
    from ..runtime import process_state

    if process_state().is_main_process:
        print(result.summary())
    return 0


def main(argv: list[str] | None = None) -> int:
    from ..train import guarded

    parser = argparse.ArgumentParser(prog="python -m eulerforge_trl.pipeline", description=__doc__.splitlines()[0])
    add_pipeline_arguments(parser)
    return guarded(run_pipeline_command, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
