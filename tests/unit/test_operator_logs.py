"""The logs of the operator replicas tests and the demo start: kept for reading, not piled up for ever."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dynamem.testing import operator


def test_the_newest_logs_are_kept_and_the_oldest_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(operator, "LOG_DIR", tmp_path)
    for i in range(operator.KEPT_LOGS + 10):
        old = tmp_path / f"dynamem-operator-{i:03d}.log"
        old.write_text("a round\n")
        os.utime(old, (1_000_000 + i, 1_000_000 + i))
    other = tmp_path / "notes.txt"
    other.write_text("not a log")
    fresh = operator.new_log()
    logs = sorted(tmp_path.glob("dynamem-operator-*.log"))
    assert len(logs) == operator.KEPT_LOGS and fresh in logs
    assert (tmp_path / "dynamem-operator-069.log").exists()  # the newest old one
    assert not (tmp_path / "dynamem-operator-010.log").exists()  # among the oldest
    assert other.exists()


def test_a_log_younger_than_an_hour_is_never_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs going on at once share the folder: one starting many replicas must not remove the log of a
    replica another run is about to read."""
    monkeypatch.setattr(operator, "LOG_DIR", tmp_path)
    for i in range(operator.KEPT_LOGS + 10):
        (tmp_path / f"dynamem-operator-{i:03d}.log").write_text("a round\n")
    operator.new_log()
    assert len(list(tmp_path.glob("dynamem-operator-*.log"))) == operator.KEPT_LOGS + 11
