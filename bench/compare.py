"""Every policy on every scenario in bench/scenarios, one table: is dynamem worth a migration?

Columns: unmet demand and buffer shortfall (GiB-steps, lower is better), changes (live migrations made),
refused (grows a policy planned that did not fit on the node: KubeVirt's target pod would not schedule),
over-capacity steps (the plan asked for more than the node has), and the gap to the oracle's unmet demand.
Goals for dynamem: zero over-capacity steps, the least unmet demand of the non-oracle policies on every
scenario, and fewer changes than proxmox. The last lines say which goals hold, scenario by scenario.
On the seed's workday the 4 changes are the seed's own (Finance and Engineering grow, then Finance shrinks and
Engineering grows again); proxmox makes fewer there only because its grows are refused.

Usage: python bench/compare.py [SCENARIO.yaml ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from dynamem.policy import POLICIES
from dynamem.sim.scenario import load_scenario
from dynamem.sim.simulate import Summary, simulate

HERE = Path(__file__).resolve().parent
ORDER = ["dynamem", "oracle", "static", "proxmox", "xen"]


def main(argv: list[str]) -> int:
    paths = [Path(p) for p in argv] or sorted((HERE / "scenarios").glob("*.yaml"))
    console = Console(width=150)
    table = Table(title="policies x scenarios (lower is better)", title_justify="left")
    for column in (
        "scenario",
        "policy",
        "unmet GiB-steps",
        "buffer shortfall",
        "changes",
        "refused",
        "over-cap",
        "gap",
    ):
        table.add_column(column, justify="left" if column in {"scenario", "policy"} else "right")
    verdicts: list[str] = []
    for path in paths:
        scenario = load_scenario(path)
        results: dict[str, Summary] = {
            name: simulate(scenario, name).summary for name in ORDER if name in POLICIES
        }
        oracle = results["oracle"].unmet_demand
        for name, s in results.items():
            table.add_row(
                path.stem,
                name,
                f"{s.unmet_demand:.2f}",
                f"{s.buffer_shortfall:.2f}",
                str(s.changes),
                str(s.refused_changes),
                str(s.over_capacity_steps),
                f"{s.unmet_demand - oracle:+.2f}",
            )
        table.add_section()
        mine = results["dynamem"]
        others = [s.unmet_demand for n, s in results.items() if n not in {"dynamem", "oracle"}]
        checks = {
            "zero over-capacity": mine.over_capacity_steps == 0,
            "least unmet demand": all(mine.unmet_demand <= o + 1e-9 for o in others),
            "fewer changes than proxmox": mine.changes < results["proxmox"].changes,
            "fewer changes+refused than proxmox": mine.changes
            < results["proxmox"].changes + results["proxmox"].refused_changes,
        }
        verdicts.append(
            f"{path.stem}: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in checks.items())
        )
    console.print(table)
    for line in verdicts:
        console.print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
