"""The operator: kopf handlers and the adapters that read the cluster and Prometheus and write VM memory."""
