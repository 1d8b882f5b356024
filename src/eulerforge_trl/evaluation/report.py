"""The evaluation summary as a printed table and as a bar chart."""

from __future__ import annotations

from pathlib import Path

COLUMNS = ("reward_mean", "judge_mean", "win_rate_vs_first", "kl_to_first", "response_length")
PANELS = ("reward_mean", "judge_mean", "win_rate_vs_first", "kl_to_first")


def format_table(summary: dict[str, dict], win_rate_by: str | None = "judge") -> str:
    """One row per model, "-" where a number is missing, and a line on what the columns mean."""
    width = max(len("model"), *(len(name) for name in summary))
    lines = ["  ".join(["model".ljust(width), *(c.rjust(max(len(c), 8)) for c in COLUMNS)])]
    for name, row in summary.items():
        cells = [(f"{row[c]:.3f}" if row.get(c) is not None else "-").rjust(max(len(c), 8)) for c in COLUMNS]
        lines.append("  ".join([name.ljust(width), *cells]))
    first = next(iter(summary))
    by = {"judge": "the judge's score", "reward": "the RM's score"}.get(win_rate_by or "", "no score given")
    lines.append(
        f"win_rate_vs_first: share of prompts where the model beats {first} by {by} (ties count half); "
        "kl_to_first: KL(model || first) per response; response_length in tokens"
    )
    return "\n".join(lines)


def plot_summary(summary: dict[str, dict], png_path: Path) -> Path:
    """Bars per model for each metric that has numbers (RM reward, judge, win rate, KL); returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [m for m in PANELS if any(row.get(m) is not None for row in summary.values())] or ["response_length"]
    labels = [_short(name, i) for i, name in enumerate(summary)]
    figure = Figure(figsize=(max(4.0, 0.9 * len(labels) + 2) * len(panels), 3.6))
    FigureCanvasAgg(figure)  # no pyplot: no global backend or figure state
    colors = [f"C{i % 10}" for i in range(len(labels))]
    for k, metric in enumerate(panels):
        ax = figure.add_subplot(1, len(panels), k + 1)
        values = [row.get(metric) for row in summary.values()]
        ax.bar(range(len(labels)), [v if v is not None else 0.0 for v in values], color=colors)
        for x, v in enumerate(values):
            ax.annotate("-" if v is None else f"{v:.2f}", (x, v or 0.0), ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
        ax.set_title(metric)
        ax.axhline(0.0, color="black", linewidth=0.6)
        ax.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(png_path, dpi=90)
    return Path(png_path)


def _short(name: str, index: int) -> str:
    """A model's directory, shortened to its last two parts for an axis label ("03_ppo/final")."""
    parts = Path(name).parts
    return f"{index}: {'/'.join(parts[-2:]) if len(parts) >= 2 else name}"
