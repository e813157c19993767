"""The ``dynamem`` command: one sub-command per concern, each in the module that owns it.

Each sub-command module exposes ``main(argv: list[str]) -> int`` and builds its own argparse parser. Only the
chosen module is imported, so ``dynamem simulate`` does not pay for kopf and the Kubernetes client.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "simulate": ("dynamem.sim.command", "play a scenario file through a balancing policy, without a cluster"),
    "run": ("dynamem.controller.command", "run the operator against the current cluster"),
    "kubevirt-sim": ("dynamem.kubevirt_sim.command", "play KubeVirt's controllers and a scenario's guests"),
    "demo": ("dynamem.demo", "the seed's workday on a local control plane, end to end"),
}


def usage() -> str:
    lines = ["usage: dynamem COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<14}{summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", "'dynamem COMMAND --help' tells a command's arguments."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:  # as argparse does when a required argument is missing: usage on stderr, exit 2
        print(usage(), file=sys.stderr)
        return 2
    if args[0] in {"-h", "--help"}:
        print(usage())
        return 0
    if args[0] in {"-V", "--version"}:
        from dynamem import __version__

        print(f"dynamem {__version__}")
        return 0
    entry = COMMANDS.get(args[0])
    if entry is None:
        print(f"dynamem: unknown command {args[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(entry[0])
    result: int = module.main(args[1:])
    return result


if __name__ == "__main__":
    sys.exit(main())
