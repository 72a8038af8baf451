"""Per-utterance waveform normalisation against Wav2Vec2's feature extractor."""

from __future__ import annotations

import numpy as np
import torch

from stetho.frontend.waveform import WaveformNorm


def test_matches_wav2vec2_zero_mean_unit_var_norm() -> None:
    from transformers import Wav2Vec2FeatureExtractor

    rng = np.random.default_rng(0)
    batch = (0.2 * rng.standard_normal((3, 4000)) + np.array([[0.5], [-0.1], [0.0]])).astype(
        np.float32
    )
    ref = np.stack(Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm(list(batch), None))
    out = WaveformNorm()(torch.from_numpy(batch)).numpy()
    assert np.abs(out - ref).max() < 1e-5
    np.testing.assert_allclose(out.mean(axis=1), 0.0, atol=1e-6)
    np.testing.assert_allclose(out.std(axis=1), 1.0, atol=1e-4)


def test_rows_independent_and_silence_safe() -> None:
    norm = WaveformNorm()
    x = torch.randn(2, 1000)
    x[1] = 0.0
    out = norm(x)
    torch.testing.assert_close(out[0], norm(x[:1])[0])
    assert torch.isfinite(out).all() and torch.all(out[1] == 0)
    # Population variance (divide by N), not the unbiased estimate: std over the row is exactly 1.
    torch.testing.assert_close(out[0].pow(2).mean(), torch.tensor(1.0), atol=1e-5, rtol=0)
