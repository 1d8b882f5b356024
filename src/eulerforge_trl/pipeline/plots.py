"""A PNG of a stage's training curves, drawn from its metrics.jsonl."""

from __future__ import annotations

from pathlib import Path

from ..rundir import read_metrics
from ..stages import STAGES


def plot_training_curves(metrics_path: Path, png_path: Path, stage: str) -> Path | None:
    """Draw one panel per curve of the stage (`Stage.curves`) that was logged; returns the PNG path or None."""
    records = read_metrics(metrics_path)
    series = {}
    for key in STAGES[stage].curves if stage in STAGES else ():
        points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
        if points:
            series[key] = points
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(series), figsize=(4 * len(series), 3.2), squeeze=False)
    for ax, (key, points) in zip(axes[0], series.items()):
        steps, values = zip(*points)
        ax.plot(steps, values, marker="." if len(points) < 40 else None)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{stage} — {Path(metrics_path).parent.name}")
    fig.tight_layout()
    fig.savefig(png_path, dpi=90)
    plt.close(fig)
    return Path(png_path)
