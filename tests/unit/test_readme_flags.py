"""README's table of `dynamem run` flags names every flag the operator takes, and no other."""

from __future__ import annotations

import re

from dynamem.controller.options import build_parser
from dynamem.testing.controlplane import repo_root


def test_the_readme_flag_table_is_the_operators_flags() -> None:
    rows = [line for line in (repo_root() / "README.md").read_text().splitlines() if line.startswith("| `-")]
    documented = {flag for row in rows for flag in re.findall(r"`(--?[A-Za-z][-\w]*)", row.split(" | ")[0])}
    taken = {
        option
        for action in build_parser()._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }
    short = {"-A", "-n"}  # README names -A and -n; their long forms are --all-namespaces and --namespace
    assert documented - short == taken - {"--all-namespaces", "--namespace"}
