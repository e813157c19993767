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

__all__ = ["ArgumentParser", "Typed", "typed_number"]

_DASH_THEN_NUMBER = re.compile(r"^-\.?\d")


class ArgumentParser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` whose negative values may carry a unit (``-5s``, ``-1Gi``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # CPython's argparse tells values from options by this pattern (_ActionsContainer.__init__,
        # _parse_optional); before 3.14 its own accepts plain numbers only (-5, -.5, and -1_000 from 3.12).
        # A private name: tests/unit/controller/test_options_limits.py ("-5s") fails if it ever changes.
        self._negative_number_matcher = _DASH_THEN_NUMBER


class Typed(float):
    """A flag's number that shows as the user wrote it (``-5s``, ``0``), so a range error quotes the flag's
    value, not ``-5.0``; everywhere else it is the float it stands for."""

    text: str

    def __new__(cls, value: float, text: str) -> Typed:
        number = super().__new__(cls, value)
        number.text = text
        return number

    def __repr__(self) -> str:  # what the commands' flag errors show ({value!r})
        return self.text

    def __str__(self) -> str:  # in any other text a number: f"{interval}s" stays "60.0s"
        return float.__repr__(self)

    def __reduce__(self) -> tuple[type[Typed], tuple[float, str]]:  # copy, deepcopy, pickle, asdict
        return (Typed, (float(self), self.text))


def typed_number(text: str) -> float:
    """argparse ``type`` of a plain number flag: the float, shown as typed (:class:`Typed`)."""
    try:
        return Typed(float(text), text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
