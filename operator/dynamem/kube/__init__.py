"""Kubernetes and KubeVirt plumbing shared by the operator and the simulator: object views, API access."""
