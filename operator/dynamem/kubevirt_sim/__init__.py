"""A stand-in for KubeVirt's virt-controller, virt-handler and their metrics, against a real API server."""
