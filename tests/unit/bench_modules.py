"""The benchmarks under bench/ are scripts, not a package: load one by name to call its main()."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load_bench(name: str) -> ModuleType:
    """``bench/<name>.py`` as a module (``name`` may be a path below bench/: ``scenarios/generate``)."""
    spec = importlib.util.spec_from_file_location(Path(name).name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
