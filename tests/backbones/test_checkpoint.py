"""Checkpoint resolution (path / URL / cache, SHA-256, offline) and safe loading."""

from __future__ import annotations

import argparse
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from stetho.backbones.checkpoint import (
    CheckpointError,
    cache_dir,
    load_checkpoint,
    resolve_checkpoint,
    unwrap_state_dict,
)


@pytest.fixture()
def weights_file(tmp_path: Path) -> Path:
    path = tmp_path / "served" / "tiny.pt"
    path.parent.mkdir()
    torch.save({"w": torch.arange(6.0).reshape(2, 3)}, path)
    return path


@pytest.fixture()
def server(weights_file: Path) -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP server serving ``weights_file``'s folder; yields (base URL, request log)."""
    log: list[str] = []
    root = str(weights_file.parent)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=root, **kwargs)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            log.append(self.path)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", log
    finally:
        httpd.shutdown()
        httpd.server_close()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_local_path_is_used_as_is(weights_file: Path) -> None:
    assert resolve_checkpoint(weights_file) == weights_file
    assert resolve_checkpoint(str(weights_file), sha256=_sha(weights_file)) == weights_file


def test_local_path_with_wrong_sha_is_refused(weights_file: Path) -> None:
    with pytest.raises(CheckpointError, match="SHA-256"):
        resolve_checkpoint(weights_file, sha256="0" * 64)


def test_url_downloads_once_into_the_cache(
    server: tuple[str, list[str]],
    weights_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base, log = server
    cache = tmp_path / "cache"
    monkeypatch.setenv("STETHO_CACHE", str(cache))
    assert cache_dir() == cache
    got = resolve_checkpoint(f"{base}/tiny.pt", sha256=_sha(weights_file))
    assert got == cache / "tiny.pt" and got.read_bytes() == weights_file.read_bytes()
    assert len(log) == 1
    again = resolve_checkpoint(f"{base}/tiny.pt", sha256=_sha(weights_file))
    assert again == got and len(log) == 1  # served from the cache, no second request
    # a bare file name now resolves from the cache
    assert resolve_checkpoint("tiny.pt") == got


def test_url_with_wrong_sha_fails_and_leaves_no_file(
    server: tuple[str, list[str]], tmp_path: Path
) -> None:
    base, _ = server
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        resolve_checkpoint(f"{base}/tiny.pt", sha256="f" * 64, cache=tmp_path / "c")
    assert not (tmp_path / "c" / "tiny.pt").exists()


def test_offline_error_says_which_file_to_place_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STETHO_OFFLINE", "1")
    with pytest.raises(CheckpointError) as err:
        resolve_checkpoint("https://example.invalid/models/BEATs_iter3.pt", cache=tmp_path)
    message = str(err.value)
    assert "BEATs_iter3.pt" in message and str(tmp_path) in message


def test_missing_name_lists_the_cache_location(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found") as err:
        resolve_checkpoint("no_such_model.pt", cache=tmp_path)
    assert str(tmp_path / "no_such_model.pt") in str(err.value)


def test_weights_only_refuses_pickled_objects_unless_trusted(tmp_path: Path) -> None:
    path = tmp_path / "pickled.pt"
    torch.save({"cfg": argparse.Namespace(a=1), "model": {"w": torch.ones(1)}}, path)
    with pytest.raises(CheckpointError, match="trust"):
        load_checkpoint(path)
    obj = load_checkpoint(path, trust=True)
    assert obj["cfg"].a == 1


def test_safetensors_and_wrappers(tmp_path: Path) -> None:
    sd = {"a": torch.zeros(2), "b": torch.ones(3)}
    path = tmp_path / "w.safetensors"
    save_file(sd, str(path))
    loaded = load_checkpoint(path)
    assert set(loaded) == {"a", "b"} and torch.equal(loaded["b"], sd["b"])
    assert unwrap_state_dict({"model": sd}) is sd
    assert unwrap_state_dict({"state_dict": sd}) is sd
    assert unwrap_state_dict(sd) is sd
    with pytest.raises(CheckpointError, match="state dict"):
        unwrap_state_dict({"cfg": {"x": 1}})


def test_corrupt_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"bad\.pt"):
        load_checkpoint(bad)


@pytest.mark.parametrize("content", [b"hello\n", b"index,mid,display_name\n0,/m/09x0r,Speech\n"])
def test_non_checkpoint_files_are_named_without_the_trust_hint(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "labels.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint") as err:
        load_checkpoint(path)
    assert "labels.pt" in str(err.value) and "trust" not in str(err.value)
