"""Decoding in worker processes gives the same waveforms, in input order, with error records."""

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


@pytest.mark.parametrize("workers", [0, 2])
def test_order_values_and_errors(tmp_path: Path, workers: int) -> None:
    paths = _write(tmp_path, 7)
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF not really audio")
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    files = [*paths[:3], bad, *paths[3:], empty]
    got = list(decode_files(files, 32000, num_workers=workers))
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
