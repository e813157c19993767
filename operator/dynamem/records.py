"""Immutable records that are quick to make: what a round makes ten thousand of, every round.

``@frozen_record`` is ``@dataclass(frozen=True, slots=True)`` to the type checker (assigning a field is
an error under mypy, as for a frozen dataclass), and at run time a slotted dataclass with the same equality
and hash. A frozen dataclass sets each field in ``__init__`` through ``object.__setattr__``, about three
times the cost of a plain assignment: for the records made per VM and round (a VM's join, its policy input,
its cluster input, its decision) at 10,000 VMs that was a sixth of the live operator's round at rest (py-spy).
Nothing assigns their fields: mypy strict refuses it in the package; the tests and benches, which mypy does
not check, make them and never assign (nor use ``setattr``); :func:`dataclasses.replace` makes changed copies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar, dataclass_transform

__all__ = ["frozen_record"]

T = TypeVar("T")


@dataclass_transform(frozen_default=True)
def frozen_record(cls: type[T]) -> type[T]:
    """A slotted dataclass, frozen to the type checker; equal and hashed by its fields like a frozen one."""
    return dataclass(slots=True, unsafe_hash=True)(cls)
