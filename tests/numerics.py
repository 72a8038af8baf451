"""Round-off bounds for float32 spectral front-ends, derived from the signal's conditioning.

A float32 front-end and a float64 reference of the same maths differ by round-off that depends on
the CPU (MKL picks FFT/BLAS kernels by instruction set), so tests compare against a float64
reference with a per-element tolerance instead of golden values from one machine.

Model (standard results for floating-point FFTs and sums): the float32 output of an FFT of a
frame ``y`` differs from the exact DFT by an error whose size per bin is about
``eps32 · sqrt(log2 n_fft) · ||y||_2`` (errors of the ``log2 n_fft`` butterfly stages add up like
a random walk; Higham, *Accuracy and Stability of Numerical Algorithms*, §24.1). The float32
framing steps before it (DC removal, pre-emphasis, windowing) add a few ``eps32`` per sample,
i.e. at most ``eps32 · c · ||y||_2`` per bin. A bin's power ``|X|²`` then moves by at most
``2|X|e + e²`` and a mel band's energy ``M = Σ w_k |X_k|²`` by ``Σ w_k (2|X_k|e + e²)``, so its
logarithm moves by that over ``M``: large for bands that hold little energy next to a loud
frame (the float32 noise floor), tiny for the bands that carry the signal.
"""

from __future__ import annotations

import math

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)


def per_bin_error(frames: np.ndarray, n_fft: int, safety: float = 4.0) -> np.ndarray:
    """Bound ``e`` (T,) of the float32 round-off of every FFT bin of each frame.

    Args:
        frames: ``(T, n)`` windowed float64 frames, as the FFT sees them.
        n_fft: FFT size.
        safety: Multiplier for the framing steps and the spread of the random-walk estimate.
    """
    norm = np.linalg.norm(frames, axis=-1)  # (T,)
    return safety * EPS32 * (math.sqrt(math.log2(n_fft)) + 2.0) * norm


def log_band_interval(
    spectrum: np.ndarray, fb: np.ndarray, err: np.ndarray, floor: float
) -> tuple[np.ndarray, np.ndarray]:
    """Interval ``[lo, hi]`` (T, M) that ``ln(max(M, floor))`` of every mel band lies in.

    Args:
        spectrum: ``(T, K)`` float64 magnitudes ``|X_k|`` of the reference.
        fb: ``(K, M)`` filter-bank weights (non-negative).
        err: ``(T,)`` per-bin error bound of each frame (:func:`per_bin_error`).
        floor: The floor applied before the logarithm.
    """
    e = err[:, None]
    energy = (spectrum**2) @ fb  # (T, M)
    delta = (2.0 * spectrum * e + e**2) @ fb  # (T, M)
    # the float32 matmul with the filter bank adds a relative error of a few eps32
    delta = delta + 4.0 * EPS32 * fb.shape[0] ** 0.5 * energy
    lo = np.log(np.maximum(energy - delta, floor))
    hi = np.log(np.maximum(energy + delta, floor))
    return lo, hi


def assert_within(got: np.ndarray, lo: np.ndarray, hi: np.ndarray, slack: float = 0.0) -> None:
    """Assert ``lo - slack <= got <= hi + slack`` everywhere, reporting the worst element."""
    below = lo - slack - got
    above = got - (hi + slack)
    worst = np.maximum(below, above)
    idx = np.unravel_index(int(np.argmax(worst)), worst.shape)
    assert worst[idx] <= 0, (
        f"element {tuple(int(i) for i in idx)} = {got[idx]!r} outside "
        f"[{lo[idx]!r}, {hi[idx]!r}] by {worst[idx]:.3g}"
    )


#: Absolute tolerance for k-NN cosine-distance scores computed with different batchings. A score
#: is ``1 - <u, v>`` of unit float32 vectors; near a match ``<u, v> ≈ 1``, whose float32 spacing
#: is eps32, so the score is only defined to a few eps32 absolute, never relative (a score of
#: 0.006 has 1 ulp of 1.0 = 2e-5 relative). Batch size changes the kernels (CPU-dependent) and
#: moves embeddings by a few ulp; 8 eps32 covers that, while another clip's score differs by far
#: more.
SCORE_ATOL = 8 * EPS32
