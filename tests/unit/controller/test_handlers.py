"""kopf's settings as dynamem sets them."""

from __future__ import annotations

import copy

import kopf
import pytest

from dynamem.controller.handlers import NoDiffBase, register

from .builders_k8s import make_vmi_body


def test_no_diff_base_is_built_or_kept_for_any_object(monkeypatch: pytest.MonkeyPatch) -> None:
    """kopf builds a diff-base on every watch event: a deep copy of the whole object, for on.create/update
    handlers dynamem does not have. None is built, read or stored."""
    body = kopf.Body(kopf.RawBody(**make_vmi_body("finance")))  # type: ignore[typeddict-item]
    copies = 0
    real = copy.deepcopy

    def counted(value: object, memo: object = None) -> object:
        nonlocal copies
        copies += 1
        return real(value)

    monkeypatch.setattr(copy, "deepcopy", counted)
    storage = NoDiffBase()
    essence = storage.build(body=body, extra_fields=["status.nodeName"])
    assert storage.fetch(body=body) is None
    storage.store(body=body, patch=kopf.Patch(), essence=essence)
    assert essence == {} and copies == 0
    # kopf's own storage deep-copies the object for the same call
    kopf.AnnotationsDiffBaseStorage(prefix="dynamem.io").build(body=body)
    assert copies > 0


def test_kopf_scans_only_the_api_groups_dynamem_watches(monkeypatch: pytest.MonkeyPatch) -> None:
    """A handler without an API group has kopf scan every group at startup, and one aggregated API that
    answers 503 (metrics-server down) then ends kopf's resource observer and the operator, on every restart.
    The groups are computed as kopf's observer does (``_core/reactor/observation.py``,
    ``resource_observer``) and scanned with such an API present: the scan never asks it."""
    import asyncio
    import logging
    from typing import Any

    from kopf._cogs.clients import errors, scanning

    from dynamem.controller.loop import OperatorState
    from dynamem.controller.options import parse_options

    registry = register(OperatorState(options=parse_options(["-A"]), identity="test"))
    groups = {h.selector.group for h in registry._watching.get_all_handlers() if h.selector is not None}
    assert None not in groups and {"", "kubevirt.io", "dynamem.io"} <= groups

    asked: list[str] = []

    async def get(url: str, **_: Any) -> dict[str, Any]:
        asked.append(url)
        if url == "/api":
            return {"versions": ["v1"]}
        if url == "/apis":
            return {
                "groups": [
                    {"name": name, "versions": [{"version": v}], "preferredVersion": {"version": v}}
                    for name, v in (("kubevirt.io", "v1"), ("metrics.k8s.io", "v1beta1"))
                ]
            }
        if "metrics.k8s.io" in url:
            raise errors.APIServerError({"code": 503, "message": "unavailable"}, status=503, headers={})
        return {"resources": []}

    monkeypatch.setattr(scanning.api, "get", get)
    asyncio.run(
        scanning.scan_resources(groups=groups, settings=kopf.OperatorSettings(), logger=logging.getLogger())
    )
    assert "/apis/kubevirt.io/v1" in asked and not any("metrics.k8s.io" in url for url in asked)
