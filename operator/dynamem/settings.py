"""Per-VM Dynamic Memory settings, validated once at the edge.

The seed (Hyper-V Dynamic Memory) gives every VM five knobs: Startup RAM, Minimum RAM, Maximum RAM, a memory
buffer and a memory priority. They arrive as a custom resource's spec or as a scenario file's row, with
Kubernetes quantity strings ("1Gi", "0.5Gi") or plain integers. This module turns them into integers of bytes,
checks them and raises one :class:`SettingsError` that names the VM, the field and the bad value, so a user
sees "vm 'ns/web': field 'buffer': 120 is out of range 5..95" instead of a stack trace.

Quantities are parsed with the Kubernetes client's own parser (``kubernetes.utils.parse_quantity``), which
gives exact Decimals. A quantity that is not a whole number of bytes (``2.4Gi`` is 2576980377.6 bytes) is
rounded *up* to the next byte: for demand that is the conservative side, and every later step (targets,
alignment) works in integers. A number without a unit is bytes, as in Kubernetes; one under 1Mi is refused
as a unit left out ("startup: 2048" would be a 2 KiB VM). This is the only place in dynamem that imports the
Kubernetes client for settings; the policy underneath sees plain ints (see
:class:`dynamem.policy.model.VmLimits`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation

import pydantic
from kubernetes.utils import parse_quantity

from dynamem.policy.model import VmLimits, format_bytes

__all__ = [
    "BUFFER_RANGE",
    "DEFAULT_BUFFER",
    "DEFAULT_PRIORITY",
    "PRIORITY_NAMES",
    "SMALLEST_QUANTITY",
    "SettingsError",
    "VmSettings",
    "format_bytes",
    "is_zero_quantity",
    "parse_bytes",
]

BUFFER_RANGE = (5, 95)
DEFAULT_BUFFER = 20
PRIORITY_NAMES: Mapping[str, int] = {"low": 25, "medium": 50, "high": 75}
DEFAULT_PRIORITY = PRIORITY_NAMES["medium"]
SMALLEST_QUANTITY = 1 << 20
"""Bytes below which a quantity is taken for a missing unit: no memory size, demand or rate is that small."""


class SettingsError(ValueError):
    """One invalid setting of one VM: says which VM, which field and what was wrong with which value."""

    def __init__(self, vm: str, field: str, value: object, problem: str) -> None:
        self.vm = vm
        self.field = field
        self.value = value
        self.problem = problem
        shown = "" if value is None else f"{value!r} " if isinstance(value, str) else f"{value} "
        super().__init__(f"vm {vm!r}: field {field!r}: {shown}{problem}")


def is_zero_quantity(value: object) -> bool:
    """0, "0" or a zero quantity such as "0Mi" (:func:`parse_bytes` wants a positive quantity)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return value == 0
    if isinstance(value, str):
        try:
            return bool(parse_quantity(value.strip()) == 0)  # type: ignore[no-untyped-call]
        except (ValueError, ArithmeticError, TypeError):
            return False
    return False


def parse_bytes(vm: str, field: str, value: object) -> int:
    """A Kubernetes quantity or an int as a whole number of bytes, at least 1Mi (fractions round up)."""
    if isinstance(value, bool) or value is None:
        raise SettingsError(vm, field, value, "is not a quantity" if value is not None else "is missing")
    exact: Decimal
    if isinstance(value, int):
        exact = Decimal(value)
    elif isinstance(value, (str, float, Decimal)):
        try:
            exact = parse_quantity(value.strip() if isinstance(value, str) else value)  # type: ignore[no-untyped-call]
        except (ValueError, InvalidOperation, TypeError):
            raise SettingsError(vm, field, value, "is not a quantity (e.g. 1Gi, 512Mi)") from None
    else:
        raise SettingsError(vm, field, value, "is not a quantity (e.g. 1Gi, 512Mi)")
    if not exact.is_finite() or exact <= 0:
        raise SettingsError(vm, field, value, "must be a positive quantity")
    if exact < SMALLEST_QUANTITY:
        # A bare number is bytes (Kubernetes' reading): "startup: 2048" is 2 KiB, almost surely meant as Mi.
        count = math.ceil(exact)
        shown = f"is {count} byte{'' if count == 1 else 's'}, under 1Mi: give a unit (e.g. 1Gi, 512Mi)"
        raise SettingsError(vm, field, value, shown)
    return math.ceil(exact)


def _percent(vm: str, field: str, value: object, default: int, low: int, high: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise SettingsError(vm, field, value, f"is not an integer in {low}..{high}")
    if not low <= value <= high:
        raise SettingsError(vm, field, value, f"is out of range {low}..{high}")
    return value


def _priority(vm: str, value: object) -> int:
    if value is None:
        return DEFAULT_PRIORITY
    if isinstance(value, str):
        named = PRIORITY_NAMES.get(value.strip().lower())
        if named is None:
            raise SettingsError(vm, "priority", value, "is not low, medium, high or an integer 0..100")
        return named
    return _percent(vm, "priority", value, DEFAULT_PRIORITY, 0, 100)


class VmSettings(pydantic.BaseModel, frozen=True):
    """A VM's validated settings, bytes and percents. Build it with :meth:`from_spec`."""

    startup: int = pydantic.Field(gt=0, description="memory the VM boots with, bytes")
    minimum: int = pydantic.Field(gt=0, description="memory it may shrink to, bytes (default: startup)")
    maximum: int = pydantic.Field(gt=0, description="memory it may grow to, bytes")
    buffer: int = pydantic.Field(
        default=DEFAULT_BUFFER, ge=BUFFER_RANGE[0], le=BUFFER_RANGE[1], description="share to keep free, %"
    )
    priority: int = pydantic.Field(
        default=DEFAULT_PRIORITY, ge=0, le=100, description="weight under shortage"
    )

    @classmethod
    def from_spec(cls, vm: str, spec: Mapping[str, object]) -> VmSettings:
        """Validate a CR spec or scenario row; keys other than the five settings are ignored."""
        startup = parse_bytes(vm, "startup", spec.get("startup"))
        maximum = parse_bytes(vm, "maximum", spec.get("maximum"))
        raw_minimum = spec.get("minimum")
        minimum = startup if raw_minimum is None else parse_bytes(vm, "minimum", raw_minimum)
        if minimum > startup:
            raise SettingsError(vm, "minimum", raw_minimum, f"is above startup {format_bytes(startup)}")
        if startup > maximum:
            raise SettingsError(
                vm, "startup", spec.get("startup"), f"is above maximum {format_bytes(maximum)}"
            )
        buffer = _percent(vm, "buffer", spec.get("buffer"), DEFAULT_BUFFER, *BUFFER_RANGE)
        priority = _priority(vm, spec.get("priority"))
        return cls(startup=startup, minimum=minimum, maximum=maximum, buffer=buffer, priority=priority)

    def limits(self) -> VmLimits:
        """The same settings as the policy's plain dataclass."""
        return VmLimits(
            startup=self.startup,
            minimum=self.minimum,
            maximum=self.maximum,
            buffer=self.buffer,
            priority=self.priority,
        )
