"""Every stetho module imports on its own, in a fresh interpreter (no cycles, no import errors).

An import cycle only shows when one of its modules is imported first, so each module gets its own
interpreter: a subprocess that loads the heavy third-party libraries once (torch, numpy, …, never
stetho) and forks one child per module, which imports that module alone.
"""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import stetho

SRC = Path(stetho.__file__).resolve().parent.parent

SCRIPT = """
import importlib, os, sys, traceback
import numpy, scipy, torch, soundfile  # third-party only: no stetho module is loaded here
assert not any(m == "stetho" or m.startswith("stetho.") for m in sys.modules)
failed = []
for name in sys.argv[1:]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            importlib.import_module(name)
            code = 0
        except BaseException:
            os.write(w, traceback.format_exc().encode()[-2000:])
            code = 1
        os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        err = fh.read().decode()
    _, status = os.waitpid(pid, 0)
    if status:
        failed.append(f"{name}: {err.strip().splitlines()[-1] if err else status}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def _modules() -> list[str]:
    names = ["stetho"]
    names += [info.name for info in pkgutil.walk_packages(stetho.__path__, "stetho.")]
    # ``python -m stetho`` runs the CLI on import
    return sorted(n for n in names if not n.endswith(".__main__"))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_every_module_imports_alone_in_a_fresh_interpreter() -> None:
    modules = _modules()
    assert "stetho.training.loop" in modules and "stetho.cli.main" in modules
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, *modules],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]


def test_a_broken_module_is_reported(tmp_path: Path) -> None:
    """The check can fail: a two-module import cycle with a from-import is caught."""
    pkg = tmp_path / "cyclic"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from cyclic.b import B\nA = 1\n")
    (pkg / "b.py").write_text("from cyclic.a import A\nB = 2\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, "cyclic", "cyclic.a"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 1 and "cyclic.a" in proc.stdout
