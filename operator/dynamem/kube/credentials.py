"""Whether a process has cluster credentials at all, asked before it starts anything, for a clear message."""

from __future__ import annotations

import os

from kubernetes import config

__all__ = ["credentials_problem"]


def credentials_problem(kubeconfig: str | None) -> str | None:
    """Why no cluster credentials can be loaded, or None: in a pod, its service account's; else the
    kubeconfig (``kubeconfig``, else ``$KUBECONFIG`` or ``~/.kube/config``)."""
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        return None  # in a pod: the service account's token
    if kubeconfig is not None and not os.path.isfile(kubeconfig):
        return f"--kubeconfig {kubeconfig!r}: no such file"
    try:
        config.load_kube_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    except (config.ConfigException, OSError, ValueError) as exc:
        where = f"--kubeconfig {kubeconfig!r}" if kubeconfig else "$KUBECONFIG / ~/.kube/config"
        return f"{where}: no usable cluster credentials ({exc})"
    return None
