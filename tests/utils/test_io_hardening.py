"""atomic_folder, write errors that name the path (real EFBIG via RLIMIT_FSIZE), manifests."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from stetho.utils.artifact import DetectorError, verify_manifest
from stetho.utils.io import (
    MANIFEST_NAME,
    atomic_folder,
    atomic_write_text,
    clean_stale_temporaries,
    folder_files,
    sha256_file,
    write_manifest,
)


def test_atomic_folder_publishes_all_files_or_none(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    with atomic_folder(dest) as tmp:
        (tmp / "a.csv").write_text("1")
        (tmp / "b.csv").write_text("2")
        assert not dest.exists()
    assert sorted(p.name for p in dest.iterdir()) == ["a.csv", "b.csv"]
    with pytest.raises(RuntimeError, match="boom"), atomic_folder(dest) as tmp:
        (tmp / "c.csv").write_text("3")
        raise RuntimeError("boom")
    # the old set is untouched and no temporary folder is left
    assert sorted(p.name for p in dest.iterdir()) == ["a.csv", "b.csv"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with atomic_folder(dest) as tmp:
        (tmp / "c.csv").write_text("3")
    assert sorted(p.name for p in dest.iterdir()) == ["c.csv"]  # replaced as a set
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_folder_removes_leftovers_of_killed_runs_only(tmp_path: Path) -> None:
    (tmp_path / ".out.x1y2.tmp").mkdir()
    (tmp_path / ".out.x1y2.tmp" / "half.csv").write_text("")
    (tmp_path / ".out.csv.abc.tmp").write_text("")  # an atomic_write leftover of "out.csv"
    (tmp_path / ".other.z.tmp").mkdir()  # another output's: untouched
    removed = clean_stale_temporaries(tmp_path, "out")
    assert [p.name for p in removed] == [".out.x1y2.tmp"]
    assert (tmp_path / ".other.z.tmp").exists() and (tmp_path / ".out.csv.abc.tmp").exists()
    with atomic_folder(tmp_path / "out", replace=False) as tmp:
        (tmp / "x").write_text("")
    with pytest.raises(FileExistsError), atomic_folder(tmp_path / "out", replace=False):
        pass


def test_write_errors_name_the_path_on_a_full_disk(tmp_path: Path) -> None:
    """RLIMIT_FSIZE makes writes fail with EFBIG like a full disk; in a child process."""
    script = textwrap.dedent(
        f"""
        import resource, signal, sys
        from pathlib import Path
        import torch
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
        from stetho.utils.io import atomic_write_bytes, atomic_folder
        from stetho.training.checkpoint import write_checkpoint
        base = Path({str(tmp_path)!r})
        for name, write in [
            ("blob.bin", lambda p: atomic_write_bytes(p, b"x" * 100_000)),
            ("checkpoint.pt", lambda p: write_checkpoint(p, {{"w": torch.zeros(100_000)}})),
        ]:
            try:
                write(base / name)
            except OSError as err:
                print("ERR", name, err)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2, proc.stdout + proc.stderr
    for line, name in zip(lines, ["blob.bin", "checkpoint.pt"]):
        assert f"cannot write {tmp_path / name}" in line and "disk full?" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no temporary files left


def test_permission_error_names_the_path(tmp_path: Path) -> None:
    import os

    if os.geteuid() == 0:
        pytest.skip("root ignores file permissions")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(PermissionError, match=str(locked / "x.txt")):
        atomic_write_text(locked / "x.txt", "x")


def test_manifest_lists_every_file_and_detects_changes(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "w.safetensors").write_bytes(b"abc")
    write_manifest(tmp_path)
    doc = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert doc["files"] == {
        "config.json": sha256_file(tmp_path / "config.json"),
        "sub/w.safetensors": sha256_file(tmp_path / "sub" / "w.safetensors"),
    }
    assert folder_files(tmp_path) == ["config.json", "sub/w.safetensors"]
    assert verify_manifest(tmp_path) == ["config.json", "sub/w.safetensors"]
    (tmp_path / "sub" / "w.safetensors").write_bytes(b"abd")
    with pytest.raises(DetectorError, match=r"sub/w\.safetensors: SHA-256 differs"):
        verify_manifest(tmp_path)
    (tmp_path / "sub" / "w.safetensors").unlink()
    with pytest.raises(DetectorError, match=r"w\.safetensors: missing"):
        verify_manifest(tmp_path)
    doc["files"] = {"../outside": "0" * 64}
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(doc))
    with pytest.raises(DetectorError, match="invalid entry"):
        verify_manifest(tmp_path)
