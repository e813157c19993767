"""``dynamem run``: the operator process."""

from __future__ import annotations

import logging
import os
import socket
import sys
import uuid

import kopf

from dynamem.controller.gc_tuning import tune_for_large_heap
from dynamem.controller.handlers import register
from dynamem.controller.loop import OperatorState
from dynamem.controller.options import OptionError, parse_options
from dynamem.kube.credentials import credentials_problem


def configure_logging(level: str) -> None:
    """The operator's log: the balancer's decisions at INFO, not buried under the libraries' chatter.

    kopf logs each watch event's handler at INFO ("Handler ... succeeded", one line per event of every VM,
    VMI, pod and node): shown from ``--log-level DEBUG`` only; its failures are WARNING and ERROR."""
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    wanted = logging.getLevelNamesMapping()[level]
    for noisy in ("httpx", "httpcore", "kubernetes", "aiohttp"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, wanted))
    logging.getLogger("kopf.objects").setLevel(
        wanted if wanted <= logging.DEBUG else max(logging.WARNING, wanted)
    )


def main(argv: list[str]) -> int:
    try:
        options = parse_options(argv)
    except OptionError as exc:
        print(exc, file=sys.stderr)
        return 2
    problem = credentials_problem(options.kubeconfig)
    if problem is not None:
        print(f"dynamem run: {problem}", file=sys.stderr)
        return 2
    configure_logging(options.log_level)
    if options.kubeconfig:
        os.environ["KUBECONFIG"] = options.kubeconfig  # kopf's own login reads it too
    tune_for_large_heap()
    identity = f"{os.environ.get('POD_NAME') or socket.gethostname()}/{uuid.uuid4().hex[:8]}"
    state = OperatorState(options=options, identity=identity)
    registry = register(state)
    kopf.run(
        registry=registry,
        standalone=True,  # no kopf peering: a coordination.k8s.io Lease decides who balances
        identity=identity,  # type: ignore[arg-type]  # kopf's Identity is a NewType of str
        clusterwide=options.all_namespaces,
        namespaces=list(options.namespaces),
        liveness_endpoint=options.liveness,
    )
    return 0
