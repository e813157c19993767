"""The benchmarks under bench/ are scripts, not a package: load one by name to call its main()."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load_bench(name: str) -> ModuleType:
    """``bench/<name>.py`` as a module (``name`` may be a path below bench/: ``scenarios/generate``),
    registered under its file's name as an import would, so that what a bench hands to its worker processes
    (a function of its own, by name) can be found there."""
    spec = importlib.util.spec_from_file_location(Path(name).name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
