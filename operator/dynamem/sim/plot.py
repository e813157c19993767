"""Charts like the seed's: per node, each VM's assigned memory stacked over time, with its demand.

Each step is a stacked bar (one colour per VM, the same on every node, assigned memory of the VMs running on
that node at the step's end); a black tick inside each VM's segment marks its true demand (a hatched red
overhang when demand exceeds the assignment), and a dashed line shows the node's memory. Under the kubevirt
model VMs move: a VM appears on the panel of the node it runs on, a triangle marks the step it arrived by a
live migration, and a grey hatched bar on top shows the requests of migration target pods on the node
(memory held for VMs still running elsewhere). Matplotlib runs headless (Agg) so the simulator works on
servers and in CI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dynamem.policy import GiB
from dynamem.sim.simulate import SimResult

__all__ = ["PlotUnavailable", "chart_problem", "plot_result", "pyplot"]


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


def chart_problem(path: str | Path) -> str | None:
    """Why a chart cannot be written to ``path``, or None: told before a run, not after it (a demo's
    minutes, or a simulation's table, would be lost to a name matplotlib has no format for)."""
    pyplot()
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    target = Path(path)
    suffix = target.suffix.lower().lstrip(".")
    if suffix not in formats:
        named = f"'.{suffix}' is no chart format" if suffix else "no format named"
        return f"{named} (e.g. .png, .svg, .pdf)"
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        return f"no such directory {str(parent)!r}"
    return None


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
    all_names = [vm.name for vm in scenario.vms]
    for ax, node in zip(axes_list, nodes, strict=True):
        names = [
            name
            for name in all_names
            if any(s.vms[name].node == node.name and s.vms[name].status != "Off" for s in result.steps)
        ] or [vm.name for vm in scenario.vms if vm.node == node.name]
        bottom = [0.0] * len(steps)
        for name in names:
            k = all_names.index(name)
            color = cmap(((2 * k) % 20 + (2 * k) // 20 % 2) / 20)
            here = [s.vms[name].node == node.name and s.vms[name].status != "Off" for s in result.steps]
            assigned = [
                s.vms[name].assigned / GiB if h else 0.0 for s, h in zip(result.steps, here, strict=True)
            ]
            demand = [
                (s.vms[name].demand or 0) / GiB if h else 0.0 for s, h in zip(result.steps, here, strict=True)
            ]
            ax.bar(steps, assigned, bottom=bottom, width=0.85, color=color, label=name, edgecolor="white")
            arrived = [
                (x, b + a / 2)
                for x, s, b, a in zip(steps, result.steps, bottom, assigned, strict=True)
                if s.vms[name].moved_from is not None and s.vms[name].node == node.name
            ]
            if arrived:
                ax.scatter(
                    [x - 0.3 for x, _ in arrived], [y for _, y in arrived], marker=">", color="black", s=18
                )
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
        incoming = [
            sum(
                m.size_to + scenario.overhead
                for m in s.migrations
                if m.target == node.name and m.state.value == "running"
            )
            / GiB
            for s in result.steps
        ]
        if any(incoming):
            ax.bar(
                steps, incoming, bottom=bottom, width=0.85, color="none", edgecolor="grey", hatch="..",
                label="migration targets",
            )  # fmt: skip
            bottom = [b + i for b, i in zip(bottom, incoming, strict=True)]
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
            f"{node.name}: memory by VM (bars), demand (ticks); {result.policy}, {result.model.value}",
            fontsize="medium",
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
