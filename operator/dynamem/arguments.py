"""argparse that takes ``-5s`` or ``-1Gi`` as a flag's value, so the flag's own check says what is wrong.

argparse reads a word that starts with ``-`` as another option unless it is a plain negative number, so
``--interval -5s`` ended in "expected one argument", naming neither the value nor the problem. No option of
dynamem's commands starts with a dash and a digit, so here such a word is always a value, and
``--interval -5s`` gets "--interval -5s: must be greater than 0" from the range check after parsing.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

__all__ = ["ArgumentParser"]

_DASH_THEN_NUMBER = re.compile(r"^-\.?\d")


class ArgumentParser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` whose negative values may carry a unit (``-5s``, ``-1Gi``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # CPython's argparse tells values from options by this pattern (_ActionsContainer.__init__,
        # _parse_optional); before 3.14 its own accepts plain numbers only (-5, -.5, and -1_000 from 3.12).
        # A private name: tests/unit/controller/test_options_limits.py ("-5s") fails if it ever changes.
        self._negative_number_matcher = _DASH_THEN_NUMBER
