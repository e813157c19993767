"""``dynamem run``: the operator process."""

from __future__ import annotations

import logging
import os
import random
import socket
import sys
import uuid

import kopf

from dynamem.controller.handlers import OperatorState, register
from dynamem.controller.options import OptionError, parse_options


def main(argv: list[str]) -> int:
    try:
        options = parse_options(argv)
    except OptionError as exc:
        print(exc, file=sys.stderr)
        return 2
    logging.basicConfig(level=options.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("httpx", "httpcore", "kubernetes", "aiohttp"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    if options.kubeconfig:
        os.environ["KUBECONFIG"] = options.kubeconfig  # kopf's own login reads it too
    identity = f"{os.environ.get('POD_NAME') or socket.gethostname()}/{uuid.uuid4().hex[:8]}"
    priority = options.priority if options.priority is not None else random.randint(1, 32767)
    state = OperatorState(options=options, identity=identity, priority=priority)
    registry = register(state)
    kopf.run(
        registry=registry,
        standalone=options.standalone,
        priority=priority,
        peering_name=None if options.standalone else options.peering,
        identity=identity,  # type: ignore[arg-type]  # kopf's Identity is a NewType of str
        clusterwide=options.all_namespaces,
        namespaces=list(options.namespaces),
        liveness_endpoint=options.liveness,
    )
    return 0
