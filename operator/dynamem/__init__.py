"""dynamem: Hyper-V style Dynamic Memory for KubeVirt virtual machines.

Layers, from the bottom up (checked by import-linter, see pyproject.toml):

- ``dynamem.policy``: the pure balancing core. Plain data in, an allocation plan out; no I/O.
- ``dynamem.settings``: per-VM settings (startup, minimum, maximum, buffer, priority), checked by pydantic.
- ``dynamem.sim``: the scenario simulator and the peer comparison, driving the policy without a cluster.
- ``dynamem.controller``: the kopf operator: reads the cluster and Prometheus, writes VM memory.
- ``dynamem.kubevirt_sim``: a stand-in for KubeVirt's controllers and metrics, for tests and the demo.
- ``dynamem.testing``: a real local control plane (etcd + kube-apiserver + Prometheus) for tests and the demo.
"""

__version__ = "0.1.0"
