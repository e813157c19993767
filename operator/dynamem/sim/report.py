"""Human output of a simulation: one table per step and a summary, drawn with rich.

The columns mirror Hyper-V Manager's memory view (assigned, demand, pressure, status) plus what KubeVirt users
need to see: what the guest shows (the policy's only input under the kubevirt model), the change each step
costs, the move it took (a live migration to another node) and the reason the policy gave for it. Under each
table: every node's launcher requests against its memory, and the migrations in flight or ended in the step.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from dynamem.policy import GiB, MiB, format_bytes
from dynamem.sim.simulate import Model, SimResult

__all__ = ["print_result"]

_STATUS_STYLE = {"OK": "green", "Low": "yellow", "Warning": "bold red", "Off": "dim"}


def _size(value: int | None) -> str:
    """Exact binary units when exact (3.5Gi), else two decimals of Gi or Mi (2.40Gi)."""
    if value is None:
        return "-"
    if value == 0:
        return "0"
    exact = format_bytes(value)
    if not exact.isdigit():
        return exact
    return f"{value / GiB:.2f}Gi" if value >= GiB else f"{value / MiB:.1f}Mi"


def print_result(result: SimResult, console: Console | None = None, *, steps: bool = True) -> None:
    """Print every step (unless ``steps`` is false) and the summary."""
    out = console or Console()
    minutes = result.scenario.step_seconds / 60
    kubevirt = result.model is Model.KUBEVIRT
    columns = [
        "vm",
        "node",
        "move",
        "demand",
        "observed",
        "assigned",
        "change",
        "pressure",
        "status",
        "reason",
    ]
    if not kubevirt:
        columns.remove("move")
        columns.remove("observed")
    for step in result.steps if steps else ():
        table = Table(
            title=f"step {step.step} (t = {step.step * minutes:g} min), policy {result.policy}, "
            f"model {result.model.value}",
            title_justify="left",
        )
        for column in columns:
            table.add_column(
                column, justify="right" if column in {"demand", "observed", "assigned", "change"} else "left"
            )
        previous = result.steps[step.step - 1].vms if step.step > 0 else {}  # steps are numbered 0..n-1
        for name, vm in step.vms.items():
            before = previous.get(name)
            change = ""
            if vm.changed and before is not None:
                delta = vm.assigned - before.assigned
                change = ("+" if delta > 0 else "-") + format_bytes(abs(delta))
            move = ""
            if vm.moved_from is not None:
                move = f"{vm.moved_from} -> {vm.node}"
            elif vm.migrating_to is not None:
                move = f"-> {vm.migrating_to} (in flight)"
            cells = {
                "vm": name,
                "node": vm.node,
                "move": move,
                "demand": _size(vm.demand),
                "observed": _size(vm.observed) if vm.status != "Off" else "-",
                "assigned": _size(vm.assigned) if vm.status != "Off" else "-",
                "change": change,
                "pressure": "" if vm.pressure is None else str(vm.pressure),
                "status": f"[{_STATUS_STYLE.get(vm.status, '')}]{vm.status}[/]",
                "reason": vm.reason,
            }
            table.add_row(*(cells[c] for c in columns))
        out.print(table)
        for name, node in step.nodes.items():
            if kubevirt:
                out.print(
                    f"  node {name}: requests {format_bytes(node.requested)} of {format_bytes(node.memory)} "
                    f"(peak {format_bytes(node.peak_requested)}), guests {format_bytes(node.assigned)}, "
                    f"used {_size(node.used)}"
                )
            else:
                out.print(
                    f"  node {name}: {format_bytes(node.assigned)} of {format_bytes(node.memory)} assigned"
                )
        for m in step.migrations:
            if m.state.value != "running":
                continue  # ended ones are in the events
            out.print(
                f"  migration {m.vm}: {m.source} -> {m.target or '?'}, {format_bytes(m.size_from)} -> "
                f"{format_bytes(m.size_to)}, {m.state.value}: {m.reason}"
            )
        for event in step.events:
            out.print(f"  [dim]{event}[/]")
    summary = result.summary
    title = f"summary: {result.scenario.source}, policy {result.policy}, model {result.model.value}"
    if result.interval_s is not None and result.interval_s < result.scenario.step_seconds:
        title += f", a round every {result.interval_s:g}s"
    table = Table(
        title=title,
        title_justify="left",
    )
    table.add_column("score")
    table.add_column("value", justify="right")
    table.add_row("unmet demand (GiB-steps)", f"{summary.unmet_demand:.3f}")
    table.add_row("buffer shortfall (GiB-steps)", f"{summary.buffer_shortfall:.3f}")
    table.add_row("changes", str(summary.changes))
    table.add_row("over-capacity steps", str(summary.over_capacity_steps))
    table.add_row("refused starts", str(summary.refused_starts))
    table.add_row("demand of VMs that could not start (GiB-steps)", f"{summary.unstarted_demand:.3f}")
    if kubevirt:
        table.add_row("live migrations", str(summary.migrations))
        table.add_row("GiB migrated", f"{summary.migrated_bytes / GiB:.1f}")
        table.add_row("failed changes", str(summary.failed_changes))
        table.add_row("refused changes (RestartRequired)", str(summary.refused_changes))
    else:
        table.add_row("refused grows", str(summary.refused_changes))
    out.print(table)
