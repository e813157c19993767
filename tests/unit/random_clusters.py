"""Random small clusters for the property tests (hypothesis): nodes, VMs and their demand, KubeVirt's
migration limits and the policy's cadence, and the policy to play them with."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st

from dynamem.sim.scenario import Scenario, parse_scenario


@st.composite
def clusters(draw: st.DrawFn, policies: Sequence[str]) -> tuple[Scenario, str]:
    """A scenario of 1 to 4 nodes and 1 to 6 VMs over 2 to 6 steps, and one of ``policies``."""
    node_count = draw(st.integers(1, 4))
    nodes = {f"n{i}": f"{draw(st.integers(4, 32)) * 512}Mi" for i in range(node_count)}
    steps = draw(st.integers(2, 6))
    vms: list[dict[str, object]] = []
    demand: dict[str, list[str | None]] = {}
    for i in range(draw(st.integers(1, 6))):
        startup = draw(st.integers(2, 8)) * 512
        maximum = startup * draw(st.integers(1, 4))
        node = f"n{draw(st.integers(0, node_count - 1))}"
        vms.append({"name": f"v{i}", "node": node, "startup": f"{startup}Mi", "maximum": f"{maximum}Mi"})
        demand[f"v{i}"] = [
            draw(st.one_of(st.none(), st.integers(1, 12 * 1024).map(lambda m: f"{m}Mi")))
            for _ in range(steps)
        ]
    migration = {
        "bandwidth": f"{draw(st.sampled_from([1, 8, 64, 1024, 4096]))}Mi",
        "per_cluster": draw(st.integers(1, 5)),
        "outbound_per_node": draw(st.integers(1, 3)),
        "pending_timeout": f"{draw(st.sampled_from([10, 60, 300, 1200]))}s",
    }
    step = draw(st.sampled_from([60, 300, 900]))
    interval = draw(st.one_of(st.none(), st.sampled_from([10, 30, 60, 120, 300]).filter(lambda i: i <= step)))
    data: dict[str, object] = {
        "step": f"{step}s",
        "nodes": [{"name": n, "memory": m} for n, m in nodes.items()],
        "vms": vms,
        "demand": demand,
        "overhead": f"{draw(st.integers(0, 300))}Mi" if draw(st.booleans()) else 0,
        "migration": migration,
        **({} if interval is None else {"interval": f"{interval}s"}),
    }
    return parse_scenario(data, "random.yaml"), draw(st.sampled_from(list(policies)))
