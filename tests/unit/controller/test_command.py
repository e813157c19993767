"""`dynamem run` refuses to start without usable credentials, with one clear line and exit code 2."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from dynamem.controller.command import configure_logging, credentials_problem, main


def test_missing_kubeconfig_file_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    problem = credentials_problem("/nonexistent/kubeconfig")
    assert problem == "--kubeconfig '/nonexistent/kubeconfig': no such file"


def test_usable_kubeconfig_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    assert credentials_problem(str(path)) is None


def test_main_exits_2_before_touching_a_cluster(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-A", "--kubeconfig", "/nonexistent/kubeconfig"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dynamem run: --kubeconfig '/nonexistent/kubeconfig'")


def test_bad_flag_value_exits_2_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-A", "--dead-band", "12XB"]) == 2
    assert (
        capsys.readouterr().err.strip()
        == "dynamem run: --dead-band '12XB': is not a quantity (e.g. 1Gi, 512Mi)"
    )


def test_kopfs_per_event_handler_lines_show_from_debug_only() -> None:
    """A round's decisions are the INFO lines that matter; kopf's "Handler ... succeeded" per watch event
    buried them (130 of 138 lines of a three-minute run); its failures are WARNING and ERROR, still shown."""
    kopf_objects = logging.getLogger("kopf.objects")
    try:
        configure_logging("INFO")
        assert kopf_objects.level == logging.WARNING
        assert logging.getLogger("httpx").level == logging.WARNING
        configure_logging("DEBUG")
        assert kopf_objects.level == logging.DEBUG
        configure_logging("ERROR")
        assert kopf_objects.level == logging.ERROR
    finally:
        kopf_objects.setLevel(logging.NOTSET)
        logging.getLogger("httpx").setLevel(logging.NOTSET)
