"""Charts like the seed's: per node, each VM's assigned memory stacked over time, with its demand.

Each step is a stacked bar (one colour per VM, assigned memory); a black tick inside each VM's segment marks
its demand (a hatched overhang when demand exceeds the assignment), and a dashed line shows the node's memory.
Matplotlib runs headless (Agg) so the simulator works on servers and in CI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dynamem.policy import GiB
from dynamem.sim.simulate import SimResult

__all__ = ["PlotUnavailable", "plot_result", "pyplot"]


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed (it is the optional extra ``dynamem[plot]``)."""


def pyplot() -> Any:
    """matplotlib's pyplot on the headless Agg backend, or a clear error naming the extra to install."""
    try:
        import matplotlib
    except ImportError:
        raise PlotUnavailable("charts need matplotlib: pip install 'dynamem[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_result(result: SimResult, path: str | Path) -> None:
    """Write a PNG with one panel per node."""
    plt = pyplot()

    scenario = result.scenario
    nodes = scenario.nodes
    steps = [s.step for s in result.steps]
    minutes = scenario.step_seconds / 60
    cmap = plt.get_cmap("tab20")
    fig, axes = plt.subplots(len(nodes), 1, figsize=(max(8.0, 0.12 * len(steps) + 6), 3.6 * len(nodes)))
    axes_list = list(axes) if len(nodes) > 1 else [axes]
    for ax, node in zip(axes_list, nodes, strict=True):
        names = [vm.name for vm in scenario.vms if vm.node == node.name]
        bottom = [0.0] * len(steps)
        for k, name in enumerate(names):
            color = cmap(((2 * k) % 20 + (2 * k) // 20 % 2) / 20)
            assigned = [s.vms[name].assigned / GiB for s in result.steps]
            demand = [
                (s.vms[name].demand or 0) / GiB if s.vms[name].status != "Off" else 0.0 for s in result.steps
            ]
            ax.bar(steps, assigned, bottom=bottom, width=0.85, color=color, label=name, edgecolor="white")
            short = [max(0.0, d - a) for d, a in zip(demand, assigned, strict=True)]
            tops = [b + a for b, a in zip(bottom, assigned, strict=True)]
            if any(short):
                ax.bar(steps, short, bottom=tops, width=0.85, color="none", edgecolor="red", hatch="///")
            marks = [
                b + min(d, a) if a > 0 else float("nan")
                for b, d, a in zip(bottom, demand, assigned, strict=True)
            ]
            ax.hlines(
                marks, [x - 0.42 for x in steps], [x + 0.42 for x in steps], colors="black", linewidth=1.2
            )
            bottom = tops
        ax.axhline(node.memory / GiB, color="black", linestyle="--", linewidth=1)
        ax.text(
            steps[-1] + 0.42,
            node.memory / GiB,
            f"{node.name}: {node.memory / GiB:g} GiB",
            ha="right",
            va="bottom",
        )
        ax.set_ylabel("GiB")
        ax.set_title(
            f"{node.name}: assigned memory by VM (bars), demand (black ticks), policy {result.policy}"
        )
        if len(steps) <= 12:
            ax.set_xticks(steps, [f"{s * minutes:g} min" for s in steps])
        else:
            ax.set_xlabel(f"step ({minutes:g} min each)")
        ax.legend(
            loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", ncol=max(1, len(names) // 12)
        )
        ax.set_ylim(0, max(node.memory / GiB, max(bottom)) * 1.15)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
