"""Per-VM settings: quantities to exact bytes, defaults, and one clear error per bad field."""

from __future__ import annotations

import pytest

from dynamem.policy import GiB, MiB, VmLimits
from dynamem.settings import SettingsError, VmSettings, parse_bytes


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("1Gi", GiB, id="binary-suffix"),
        pytest.param("0.5Gi", 512 * MiB, id="fraction-exact"),  # 0.5 x 2^30 = 2^29
        pytest.param("2.4Gi", 2576980378, id="fraction-rounds-up"),  # 2.4 x 2^30 = 2576980377.6 -> ceil
        pytest.param("1G", 10**9, id="decimal-suffix"),
        pytest.param(4 * GiB, 4 * GiB, id="int-bytes"),
        pytest.param("1Mi", MiB, id="smallest"),
        pytest.param(" 512Mi ", 512 * MiB, id="spaces"),
    ],
)
def test_parse_bytes(value: object, expected: int) -> None:
    assert parse_bytes("vm", "startup", value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param(2048, "vm 'vm': field 'startup': 2048 is 2048 bytes, under 1Mi", id="bare-int"),
        pytest.param("512", "vm 'vm': field 'startup': '512' is 512 bytes, under 1Mi", id="bare-string"),
        pytest.param("0.5Ki", "vm 'vm': field 'startup': '0.5Ki' is 512 bytes, under 1Mi", id="tiny-unit"),
    ],
)
def test_a_quantity_without_its_unit_is_refused(value: object, message: str) -> None:
    # A bare number is bytes, as in Kubernetes; "startup: 2048" meant 2048Mi, and a 2 KiB VM is no VM.
    with pytest.raises(SettingsError, match="give a unit") as caught:
        parse_bytes("vm", "startup", value)
    assert str(caught.value).startswith(message)


def test_defaults_follow_the_seed() -> None:
    # minimum defaults to startup; buffer 20 %; priority medium = 50.
    settings = VmSettings.from_spec("ns/web", {"startup": "1Gi", "maximum": "4Gi"})
    assert settings == VmSettings(startup=GiB, minimum=GiB, maximum=4 * GiB, buffer=20, priority=50)
    assert settings.limits() == VmLimits(startup=GiB, minimum=GiB, maximum=4 * GiB, buffer=20, priority=50)


@pytest.mark.parametrize(
    ("priority", "weight"),
    [("low", 25), ("medium", 50), ("high", 75), ("HIGH", 75), (0, 0), (100, 100), (None, 50)],
)
def test_priority_names_and_numbers(priority: object, weight: int) -> None:
    spec = {"startup": "1Gi", "maximum": "4Gi", "priority": priority}
    assert VmSettings.from_spec("vm", spec).priority == weight


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        pytest.param(
            {"buffer": 120}, "buffer", "vm 'ns/web': field 'buffer': 120 is out of range 5..95", id="buf-high"
        ),
        pytest.param(
            {"buffer": 4}, "buffer", "vm 'ns/web': field 'buffer': 4 is out of range 5..95", id="buf-low"
        ),
        pytest.param(
            {"buffer": "20"},
            "buffer",
            "vm 'ns/web': field 'buffer': '20' is not an integer in 5..95",
            id="buf-str",
        ),
        pytest.param(
            {"priority": "urgent"},
            "priority",
            "vm 'ns/web': field 'priority': 'urgent' is not low, medium, high or an integer 0..100",
            id="prio-name",
        ),
        pytest.param(
            {"priority": 101},
            "priority",
            "vm 'ns/web': field 'priority': 101 is out of range 0..100",
            id="prio-101",
        ),
        pytest.param(
            {"priority": True},
            "priority",
            "vm 'ns/web': field 'priority': True is not an integer in 0..100",
            id="bool",
        ),
        pytest.param(
            {"startup": "1Gx"},
            "startup",
            "vm 'ns/web': field 'startup': '1Gx' is not a quantity (e.g. 1Gi, 512Mi)",
            id="malformed",
        ),
        pytest.param(
            {"maximum": "-4Gi"},
            "maximum",
            "vm 'ns/web': field 'maximum': '-4Gi' must be a positive quantity",
            id="neg",
        ),
        pytest.param(
            {"startup": 0},
            "startup",
            "vm 'ns/web': field 'startup': 0 must be a positive quantity",
            id="zero",
        ),
        pytest.param({"startup": None}, "startup", "vm 'ns/web': field 'startup': is missing", id="missing"),
        pytest.param(
            {"minimum": "2Gi"},
            "minimum",
            "vm 'ns/web': field 'minimum': '2Gi' is above startup 1Gi",
            id="min>startup",
        ),
        pytest.param(
            {"startup": "5Gi"},
            "startup",
            "vm 'ns/web': field 'startup': '5Gi' is above maximum 4Gi",
            id="startup>max",
        ),
    ],
)
def test_invalid_settings_name_vm_field_and_value(spec: dict[str, object], field: str, message: str) -> None:
    full: dict[str, object] = {"startup": "1Gi", "maximum": "4Gi", **spec}
    with pytest.raises(SettingsError) as caught:
        VmSettings.from_spec("ns/web", full)
    assert caught.value.vm == "ns/web"
    assert caught.value.field == field
    assert caught.value.value == full.get(field)
    assert str(caught.value) == message
    assert isinstance(caught.value, ValueError)
