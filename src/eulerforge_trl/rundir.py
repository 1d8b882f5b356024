"""The output directory every stage writes, and the atomic writes that keep it intact.

The one place that knows the layout (`RunDir`), how a metrics line is written (`append_metrics`)
and what a checkpoint is called (`checkpoint-<step>`, read back by `checkpoint_step`). It sits
below the trainers, which write here, and the pipeline, which reads here.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

FINAL_MARKER = "eulerforge_final.json"
RUN_RECORD = "eulerforge_run.json"  # which stage, on which base, trains in this directory
CHECKPOINT_PREFIX = "checkpoint-"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunDir:
    """Paths inside `<output_dir>`; the same layout for every stage."""

    root: Path

    @property
    def final(self) -> Path:  # what the next stage loads
        return self.root / "final"

    @property
    def checkpoints(self) -> Path:  # resumable checkpoints (checkpoint-<step>/)
        return self.root / "checkpoints"

    @property
    def metrics(self) -> Path:  # one JSON object per logging step
        return self.root / "metrics.jsonl"

    @property
    def preset(self) -> Path:
        return self.root / "preset.yml"

    @property
    def trl_config(self) -> Path:  # the TRL config a TRL stage built (`trainers.trl_config`); not PPO's
        return self.root / "trl_config.json"

    @property
    def record(self) -> Path:  # {"stage", "base"}: written as training starts (`start_run`)
        return self.root / RUN_RECORD

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def samples(self) -> Path:
        return self.root / "samples.jsonl"

    @property
    def eval_samples(self) -> Path:  # PPO: generations on held-out prompts, before and after training
        return self.root / "eval_samples.jsonl"

    @property
    def plot(self) -> Path:
        return self.root / "training_curves.png"

    def final_is_complete(self) -> bool:
        return (self.final / FINAL_MARKER).is_file()

    def final_info(self) -> dict:
        """What the final marker records (stage, base, steps, ...); {} without a complete `final/`."""
        return _read_json(self.final / FINAL_MARKER)

    def recorded_run(self) -> dict | None:
        """`{"stage", "base"}` of the run this directory holds, None when it holds none.

        From the run record; a directory written without one (by an earlier version) is read from its
        preset.yml, else from its final marker.
        """
        record = _read_json(self.record)
        if record.get("stage"):
            return record
        if self.preset.is_file():
            record = run_record_of(self.preset.read_text(encoding="utf-8"))
            if record:
                return record
        info = self.final_info()
        return {"stage": info["stage"], "base": base_name(str(info.get("base", "")))} if info.get("stage") else None

    def checkpoint_dir(self, step: int) -> Path:
        """Where the checkpoint of `step` goes (transformers' name, so one resume logic serves every stage)."""
        return self.checkpoints / f"{CHECKPOINT_PREFIX}{step}"

    def checkpoints_newest_first(self) -> list[Path]:
        """Every `checkpoint-<step>` directory, the newest first (ordered as transformers' Trainer orders them)."""
        from transformers.trainer_utils import sort_checkpoints

        return [Path(p) for p in reversed(sort_checkpoints(str(self.checkpoints)))]

    def prune_checkpoints(self, keep: int) -> None:
        """Delete all but the newest `keep` checkpoints (`keep` <= 0 keeps them all), as transformers' Trainer does."""
        from transformers.trainer_utils import rotate_checkpoints

        rotate_checkpoints(str(self.checkpoints), keep)

    def last_loadable_checkpoint(self) -> Path | None:
        """The newest checkpoint whose files all load; each broken one is skipped with a warning.

        A checkpoint can be cut short (disk full, a copy interrupted) after it was written: the run
        goes on from the one before it instead of crashing or starting over.
        """
        for path in self.checkpoints_newest_first():
            problem = checkpoint_problem(path)
            if problem is None:
                return path
            logger.warning("checkpoint %s cannot be loaded (%s): falling back to an older one", path, problem)
        return None


def checkpoint_step(path: Path | str) -> int | None:
    """The step of a `checkpoint-<step>` directory (`.../checkpoint-40` -> 40), None for any other name."""
    name = Path(path).name
    step = name.removeprefix(CHECKPOINT_PREFIX)
    return int(step) if name.startswith(CHECKPOINT_PREFIX) and step.isdigit() else None


def checkpoint_problem(path: Path) -> str | None:
    """Why the files of a checkpoint directory do not load, or None when they all do."""
    import torch
    from safetensors.torch import load_file

    state = path / "trainer_state.json"
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return f"{state.name}: {err}"
    for file in sorted(path.rglob("*")):
        try:
            if file.suffix == ".safetensors":
                load_file(file)
            elif file.suffix in (".pt", ".pth", ".bin"):
                torch.load(file, map_location="cpu", weights_only=False)
        except Exception as err:  # noqa: BLE001 - any failure to read means the checkpoint is unusable
            return f"{file.relative_to(path)}: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
    return None


@contextmanager
def atomic_directory(target: Path):
    """Yield a temporary directory that replaces `target` only once the block succeeds.

    A crash inside the block leaves the previous `target` untouched (and no half-written one).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    os.chmod(tmp, default_mode(0o777))  # mkdtemp makes 0700; final/ must be as readable as a plain mkdir
    try:
        yield tmp
        _plain_modes(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def _plain_modes(directory: Path) -> None:
    """Every file and folder under `directory` as readable as `open`/`mkdir` would have made it.

    Some writers create their files with `mkstemp` (safetensors' `save_file` in transformers'
    `save_pretrained`: 0600), which would leave a `final/` or an exported model unreadable to the
    other users of a shared machine while its other files are 0644.
    """
    for path in directory.rglob("*"):
        if not path.is_symlink():
            os.chmod(path, default_mode(0o777 if path.is_dir() else 0o666))


def write_final_marker(final_dir: Path, **info) -> None:
    """The last file written into a final directory: its presence means the stage completed."""
    (Path(final_dir) / FINAL_MARKER).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(tmp, default_mode(0o666))  # mkstemp makes 0600
    os.replace(tmp, path)


def default_mode(mode: int) -> int:
    """`mode` as the umask leaves it: what `mkdir`/`open` would have given a new file."""
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


def trim_metrics(path: Path, after_step: int, at_step: int | None = None) -> None:
    """Keep the lines a run going on from `after_step` does not write again.

    Those logged before `after_step` stay, and of those logged at it the first `at_step` (all when
    None): what was written before checkpoint-<after_step> was saved, not what came after it (a
    last evaluation, a summary), which a resumed run writes again. A run from step 0 keeps nothing:
    it starts the file fresh, step-0 lines included.
    """
    path = Path(path)
    if not path.is_file():
        return
    if after_step <= 0:
        at_step = 0
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        step = json.loads(line).get("step", 0)
        if step == after_step and at_step is not None:
            if at_step <= 0:
                continue
            at_step -= 1
        if step <= after_step:
            kept.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def base_name(model_name: str) -> str:
    """`model_name` as a run record keeps it: a local directory made absolute (as
    `models.loading.resolved_model_name` makes it), a built-in or hub name as it is."""
    path = Path(model_name).expanduser()
    return str(path.resolve()) if model_name and path.is_dir() else model_name


def run_record_of(preset_yaml: str) -> dict | None:
    """`{"stage": training.type, "base": model_name}` of a resolved preset's YAML, None when it has neither."""
    import yaml

    try:
        tree = yaml.safe_load(preset_yaml)
    except yaml.YAMLError:
        return None
    training = tree.get("training") if isinstance(tree, dict) else None
    stage = training.get("type") if isinstance(training, dict) else None
    if not isinstance(stage, str):
        return None
    return {"stage": stage, "base": base_name(str(tree.get("model_name") or ""))}


def start_run(
    run: RunDir,
    preset_yaml: str,
    step: int,
    metric_lines_at_step: int | None = None,
    eval_lines_at_step: int | None = None,
) -> None:
    """What a run changes in its directory, once its data and models have loaded and just before its
    first step (main process only): preset.yml becomes this run's, the run record names its stage and
    base, and metrics.jsonl, samples.jsonl and eval_samples.jsonl keep what was logged up to `step`,
    the step it starts from (see `trim_metrics`; 0 starts them fresh). A run that fails before this
    leaves an earlier run's files as they were. `metric_lines_at_step` / `eval_lines_at_step`: how
    many lines of metrics.jsonl / eval_samples.jsonl at `step` the checkpoint had seen (None: all of them).
    """
    run.root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run.preset, preset_yaml)
    record = run_record_of(preset_yaml)
    if record is not None:
        atomic_write_text(run.record, json.dumps(record, indent=2) + "\n")
    trim_metrics(run.metrics, step, metric_lines_at_step)
    trim_metrics(run.samples, step)
    trim_metrics(run.eval_samples, step, eval_lines_at_step)


def append_metrics(path: Path, record: dict) -> None:
    """Append one metrics line (a JSON object with "step") to metrics.jsonl; main process only."""
    append_jsonl(path, [record])


def append_jsonl(path: Path, records, ensure_ascii: bool = True) -> None:
    """Append one JSON object per line (samples keep non-ASCII text readable with ensure_ascii=False).

    A NaN or infinite number is written as `null`: JSON has no NaN, and a bare `NaN` breaks every
    strict reader (`jq`, JavaScript, pandas' `lines=True` with the default engine).
    """
    with Path(path).open("a", encoding="utf-8") as handle:
        handle.writelines(json_line(record, ensure_ascii) for record in records)


def json_line(record, ensure_ascii: bool = True) -> str:
    """One line of JSON for `record`, with NaN and infinities as `null`."""
    return json.dumps(finite_json(record), ensure_ascii=ensure_ascii, allow_nan=False) + "\n"


def finite_json(value):
    """`value` with every NaN or infinite float (in nested dicts and lists too) replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(item) for item in value]
    return value


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_metrics(path: Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
