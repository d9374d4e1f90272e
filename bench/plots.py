"""The leaderboard's figures, drawn from plain data so that they are reproducible.

Each figure is a PNG with a JSON of the data it was drawn from beside it (``x.png``,
``x.json``).  :func:`write_figure` redraws the PNG only when the data changed (or the PNG is
missing), so regenerating the leaderboard leaves unchanged figures byte for byte alone, and
``bench leaderboard --check`` compares the data, which is exact on every machine, not pixels,
which depend on the matplotlib and font versions.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from bench.results import write_atomic


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def data_text(data: dict) -> str:
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


def is_current(png: Path, data: dict) -> bool:
    sidecar = png.with_suffix(".json")
    return png.is_file() and sidecar.is_file() and sidecar.read_text() == data_text(data)


def write_figure(png: Path, kind: str, data: dict) -> bool:
    """Draw ``data`` (a figure of ``kind``: "cost" or "cd") into ``png`` unless it is current;
    True when it was (re)drawn."""
    if is_current(png, data):
        return False
    fig = {"cost": draw_cost, "cd": draw_cd}[kind](data)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    _pyplot().close(fig)
    write_atomic(png, buffer.getvalue())
    write_atomic(png.with_suffix(".json"), data_text(data).encode())
    return True


def draw_cost(data: dict):
    """NDCG@10 against fit time and against parameters, one point per method (mean of seeds,
    error bars one standard deviation), generative methods and the others in two colours."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), sharey=True)
    for ax, key, label in zip(axes, ("fit_seconds", "params"), ("fit time, seconds (log scale)", "parameters (log scale)")):
        for p in data["points"]:
            color = "tab:orange" if p["generative"] else "tab:blue"
            (x, dx), (y, dy) = p[key], p["ndcg@10"]
            ax.errorbar([x], [y], xerr=[dx or 0.0], yerr=[dy or 0.0], fmt="o", color=color, ms=4, capsize=2, lw=0.8)
            ax.annotate(p["method"], (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
        positive = all(p[key][0] > 0 for p in data["points"])
        ax.set_xscale("log" if positive else "linear")  # a zero (pop's fit time may round to it) has no place on a log axis
        ax.set_xlabel(label if positive else label.replace(" (log scale)", ""))
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel("NDCG@10 (mean ± sd over seeds)")
    handles = [plt.Line2D([], [], marker="o", ls="", color=c, label=t) for c, t in (("tab:blue", "scores the catalog"),
                                                                                   ("tab:orange", "generative (ranked lists)"))]  # fmt: skip
    axes[1].legend(handles=handles, fontsize=7, loc="lower right")
    fig.suptitle(f"{data['table']}: quality against cost", fontsize=10)
    fig.tight_layout()
    return fig


def draw_cd(data: dict):
    """A critical-difference diagram (Demšar 2006): methods on an axis of average ranks (1 =
    best, on the left), a bar of length CD, and thick lines joining methods whose average ranks
    differ by less than CD."""
    from bench.across import cliques

    plt = _pyplot()
    avg = data["avg_ranks"]
    k = len(avg)
    order = sorted(avg, key=lambda m: (avg[m], m))
    left, right = order[: (k + 1) // 2], order[(k + 1) // 2 :]
    height = 1.6 + 0.28 * max(len(left), len(right))
    fig, ax = plt.subplots(figsize=(8, height))
    ax.set_xlim(0.3, k + 0.7)
    ax.set_ylim(height, 0)
    ax.axis("off")
    axis_y = 0.9
    ax.plot([1, k], [axis_y, axis_y], color="k", lw=1)
    for r in range(1, k + 1):
        ax.plot([r, r], [axis_y - 0.08, axis_y], color="k", lw=1)
        ax.text(r, axis_y - 0.12, str(r), ha="center", va="bottom", fontsize=8)
    ax.plot([1, 1 + data["cd"]], [0.35, 0.35], color="k", lw=2)
    ax.text(1 + data["cd"] / 2, 0.3, f"CD = {data['cd']:.2f}", ha="center", va="bottom", fontsize=8)
    for i, m in enumerate(left):
        y = axis_y + 0.45 + 0.28 * i
        ax.plot([avg[m], avg[m], 0.5], [axis_y, y, y], color="0.3", lw=0.8)
        ax.text(0.45, y, f"{m} ({avg[m]:.2f})", ha="right", va="center", fontsize=8)
    for i, m in enumerate(reversed(right)):
        y = axis_y + 0.45 + 0.28 * i
        ax.plot([avg[m], avg[m], k + 0.5], [axis_y, y, y], color="0.3", lw=0.8)
        ax.text(k + 0.55, y, f"{m} ({avg[m]:.2f})", ha="left", va="center", fontsize=8)
    for j, group in enumerate(cliques(avg, data["cd"])):
        y = axis_y + 0.15 + 0.07 * j
        ax.plot([avg[group[0]] - 0.03, avg[group[-1]] + 0.03], [y, y], color="k", lw=3)
    fig.suptitle(f"{data['title']}: Friedman p = {data['p_value']:.3g} over {len(data['datasets'])} datasets; "
                 f"Nemenyi CD at alpha {data['alpha']}", fontsize=9)  # fmt: skip
    fig.subplots_adjust(left=0.22, right=0.78, top=0.88, bottom=0.02)
    return fig
