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
    logging.basicConfig(level=options.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("httpx", "httpcore", "kubernetes", "aiohttp"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
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
