"""A real local control plane (etcd, kube-apiserver, Prometheus) for tests, `make cluster` and the demo."""
