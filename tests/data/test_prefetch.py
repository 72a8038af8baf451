"""Decoding in worker threads or processes gives the same waveforms, in input order, with error records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stetho.data import load_audio
from stetho.data.prefetch import decode_files


def _write(folder: Path, n: int) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / f"clip_{i:02d}.wav"
        sf.write(p, (rng.standard_normal(1600 + 37 * i) * 0.1).astype(np.float32), 16000)
        paths.append(p)
    return paths


@pytest.mark.parametrize(("workers", "executor"), [(0, "thread"), (2, "thread"), (2, "process")])
def test_order_values_and_errors(tmp_path: Path, workers: int, executor: str) -> None:
    paths = _write(tmp_path, 7)
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF not really audio")
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    files = [*paths[:3], bad, *paths[3:], empty]
    got = list(decode_files(files, 32000, num_workers=workers, executor=executor))  # type: ignore[arg-type]
    assert [i for i, _, _ in got] == list(range(len(files)))
    for (_i, wave, err), path in zip(got, files):
        if path in (bad, empty):
            assert wave is None and err is not None and path.name in err
            continue
        assert err is None and wave is not None and wave.dtype == np.float32
        ref, _ = load_audio(path, sr=32000)
        np.testing.assert_array_equal(wave, ref)  # same decoder and resampler: identical


def test_custom_loader_and_validation(tmp_path: Path) -> None:
    paths = _write(tmp_path, 3)
    got = list(decode_files(paths, 8000, loader=lambda p, sr: np.full(sr // 100, 0.5)))
    assert all(w is not None and w.shape == (80,) for _, w, _ in got)
    with pytest.raises(ValueError, match="expected"):
        list(decode_files(paths, 8000, loader=lambda p, sr: np.zeros((2, 5))))
    with pytest.raises(ValueError, match="num_workers"):
        list(decode_files(paths, 8000, num_workers=-1))
    with pytest.raises(ValueError, match="executor"):
        list(decode_files(paths, 8000, num_workers=1, executor="gpu"))  # type: ignore[arg-type]


def test_threads_decode_ahead_but_not_everything(tmp_path: Path) -> None:
    """At most ``workers × prefetch`` files are decoded ahead of the consumer; stopping early
    leaves the rest undecoded."""
    import threading

    paths = _write(tmp_path, 40)
    calls: list[Path] = []
    lock = threading.Lock()

    def loader(path: Path, sr: int) -> np.ndarray:
        with lock:
            calls.append(path)
        return np.ones(10, np.float32)

    gen = decode_files(paths, 8000, num_workers=2, prefetch=3, loader=loader)
    first = next(gen)
    assert first[0] == 0
    with lock:
        assert len(calls) <= 2 * 3 + 1
    gen.close()
    with lock:
        seen = len(calls)
    assert seen < len(paths)


def test_thread_worker_errors_propagate(tmp_path: Path) -> None:
    paths = _write(tmp_path, 5)

    def loader(path: Path, sr: int) -> np.ndarray:
        if path == paths[3]:
            raise RuntimeError(f"decoder crashed on {path.name}")
        return np.ones(10, np.float32)

    got = decode_files(paths, 8000, num_workers=2, loader=loader)
    assert [next(got)[0] for _ in range(3)] == [0, 1, 2]
    with pytest.raises(RuntimeError, match="clip_03"):
        next(got)
