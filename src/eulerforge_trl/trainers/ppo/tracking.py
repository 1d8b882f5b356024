"""Where PPO's numbers go: metrics.jsonl and `training.report_to`'s trackers, through accelerate's
trackers as the TRL stages log through transformers' (TensorBoard under `<output_dir>/tensorboard`)."""

from __future__ import annotations

from accelerate import Accelerator

from ...config.schema import Preset
from ...distributed import renew_cpu_fsdp_plugin
from ...errors import PresetError
from ...rundir import RunDir, append_metrics
from ...runtime import use_cpu
from ..common import as_list


def build_accelerator(preset: Preset, run: RunDir) -> Accelerator:
    """The run's Accelerator, with `training.report_to`'s trackers; a name accelerate does not know is a
    preset error (one it knows but this machine lacks the preset's own checks refused: `config.rules`)."""
    from accelerate.utils import LoggerType, ProjectConfiguration

    log_with = as_list(preset.training.report_to)
    known = set(LoggerType.list()) - {"all"}
    unknown = [name for name in log_with if name not in known and name != "all"]
    if unknown:
        raise PresetError(f"training.report_to: unknown logger {unknown[0]!r}; choose from {', '.join(sorted(known))}")
    project = ProjectConfiguration(project_dir=str(run.root), logging_dir=str(run.tensorboard))
    renew_cpu_fsdp_plugin()  # sharded CPU processes: this trainer's own plugin (a pipeline runs several)
    return Accelerator(cpu=use_cpu(), log_with=log_with or None, project_config=project)


class MetricsLog:
    """One metrics.jsonl line per call and the same numbers to every tracker (`train/<name>`),
    from the main process only."""

    def __init__(self, accelerator: Accelerator, run: RunDir, preset: Preset):
        self.accelerator, self.run, self.preset = accelerator, run, preset

    def start(self) -> None:
        if self.accelerator.log_with:
            from omegaconf import OmegaConf

            flat = _flatten(OmegaConf.to_container(OmegaConf.structured(self.preset)))
            self.accelerator.init_trackers("ppo", config=flat)

    def __call__(self, metrics: dict) -> None:
        if not self.accelerator.is_main_process:
            return
        append_metrics(self.run.metrics, metrics)
        if self.accelerator.log_with:
            values = {f"train/{k}": v for k, v in metrics.items() if k != "step"}
            self.accelerator.log(values, step=metrics["step"])

    def finish(self) -> None:
        for tracker in self.accelerator.trackers:  # not end_training(): it also ends the process group
            tracker.finish()


def _flatten(tree: dict, prefix: str = "") -> dict:
    """{"training": {"lr": 1e-4}} -> {"training.lr": 1e-4}; lists and None as text (tracker configs take scalars)."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return flat
