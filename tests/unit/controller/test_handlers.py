"""kopf's settings as dynamem sets them."""

from __future__ import annotations

import copy

import kopf
import pytest

from dynamem.controller.handlers import NoDiffBase

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
