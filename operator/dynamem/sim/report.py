"""Human output of a simulation: one table per step and a summary, drawn with rich.

The columns mirror Hyper-V Manager's memory view (assigned, demand, pressure, status) plus what KubeVirt users
need to see: the change each step costs (a live migration) and the reason the policy gave for it.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from dynamem.policy import GiB, MiB, format_bytes
from dynamem.sim.simulate import SimResult

__all__ = ["print_result"]

_STATUS_STYLE = {"OK": "green", "Low": "yellow", "Warning": "bold red", "Off": "dim"}


def _size(value: int | None) -> str:
    """Exact binary units when exact (3.5Gi), else two decimals of Gi or Mi (2.40Gi)."""
    if value is None:
        return "-"
    exact = format_bytes(value)
    if not exact.isdigit():
        return exact
    return f"{value / GiB:.2f}Gi" if value >= GiB else f"{value / MiB:.1f}Mi"


def print_result(result: SimResult, console: Console | None = None, *, steps: bool = True) -> None:
    """Print every step (unless ``steps`` is false) and the summary."""
    out = console or Console()
    minutes = result.scenario.step_seconds / 60
    for step in result.steps if steps else ():
        table = Table(
            title=f"step {step.step} (t = {step.step * minutes:g} min), policy {result.policy}",
            title_justify="left",
        )
        for column in ("vm", "node", "demand", "assigned", "change", "pressure", "status", "reason"):
            table.add_column(
                column, justify="right" if column in {"demand", "assigned", "change"} else "left"
            )
        previous = result.steps[step.step - 1].vms if step.step > 0 else {}  # steps are numbered 0..n-1
        for name, vm in step.vms.items():
            before = previous.get(name)
            change = ""
            if vm.changed and before is not None:
                delta = vm.assigned - before.assigned
                change = ("+" if delta > 0 else "-") + format_bytes(abs(delta))
            table.add_row(
                name,
                vm.node,
                _size(vm.demand),
                _size(vm.assigned) if vm.status != "Off" else "-",
                change,
                "" if vm.pressure is None else str(vm.pressure),
                f"[{_STATUS_STYLE.get(vm.status, '')}]{vm.status}[/]",
                vm.reason,
            )
        out.print(table)
        for name, node in step.nodes.items():
            out.print(f"  node {name}: {format_bytes(node.assigned)} of {format_bytes(node.memory)} assigned")
        for event in step.events:
            out.print(f"  [dim]{event}[/]")
    summary = result.summary
    table = Table(title=f"summary: {result.scenario.source}, policy {result.policy}", title_justify="left")
    table.add_column("score")
    table.add_column("value", justify="right")
    table.add_row("unmet demand (GiB-steps)", f"{summary.unmet_demand:.3f}")
    table.add_row("buffer shortfall (GiB-steps)", f"{summary.buffer_shortfall:.3f}")
    table.add_row("changes (live migrations)", str(summary.changes))
    table.add_row("over-capacity steps", str(summary.over_capacity_steps))
    table.add_row("refused starts", str(summary.refused_starts))
    table.add_row("refused grows", str(summary.refused_changes))
    out.print(table)
