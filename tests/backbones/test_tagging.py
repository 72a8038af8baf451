"""AudioSet labels and ``tag_waveform`` (soxr resampling, head checks)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from stetho.backbones import create_backbone
from stetho.backbones.tagging import _resample, audioset_labels, tag_waveform

FAN_CLIP = Path(
    "data/dcase2023t2_mini/dev_data/raw/fan/train/section_00_source_train_normal_0040_m-n_X.wav"
)


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # Conv inference with 2 intra-op threads on 2 shared, oversubscribed cores ran 10-30x slower
    # (0.7 s -> 18 s for the 28 clips); one thread is fast and stable.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def two_tones(sr: int, seconds: float = 1.0) -> np.ndarray:
    n = np.arange(int(sr * seconds), dtype=np.float64)
    x = 0.1 * np.sin(2 * np.pi * 440 * n / sr) + 0.05 * np.sin(2 * np.pi * 3000 * n / sr)
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def mn04(mn04_checkpoint: Path) -> torch.nn.Module:
    return create_backbone("efficientat-mn04", checkpoint=str(mn04_checkpoint))


# -- labels ----------------------------------------------------------------------------------


def test_audioset_labels() -> None:
    labels = audioset_labels()
    assert len(labels) == 527 == len(set(labels))
    assert labels[0] == "Speech"
    assert labels[496] == "Hum" and labels[501] == "Sine wave" and labels[516] == "Mains hum"
    assert labels[526] == "Field recording"
    labels.clear()  # callers get a copy
    assert len(audioset_labels()) == 527


def test_packaged_csv_is_the_shared_file(shared_dir: Path) -> None:
    from importlib import resources

    packaged = resources.files("stetho").joinpath("resources/audioset_class_labels_indices.csv")
    shared = shared_dir / "data" / "audioset_class_labels_indices.csv"
    assert packaged.read_bytes() == shared.read_bytes()


# -- resampling ------------------------------------------------------------------------------


def test_resample_identity_and_length() -> None:
    x = two_tones(16000)
    assert np.array_equal(_resample(x, 16000, 16000), x)
    y = _resample(x, 16000, 32000)
    assert y.dtype == np.float32 and y.shape == (32000,)
    z = _resample(x, 16000, 8000)
    assert z.shape == (8000,)


def test_resample_keeps_the_pitch() -> None:
    n = np.arange(16000)
    x = np.sin(2 * np.pi * 1000 * n / 16000).astype(np.float32)
    y = _resample(x, 16000, 32000)
    spectrum = np.abs(np.fft.rfft(y))
    assert np.argmax(spectrum) == 1000  # 1 Hz bins for a 1 s clip
    assert abs(np.abs(y[1000:-1000]).max() - 1.0) < 1e-2


def test_resample_rejects_bad_rates() -> None:
    with pytest.raises(ValueError, match="positive"):
        _resample(np.zeros(10, np.float32), 0, 16000)


# -- tag_waveform ----------------------------------------------------------------------------


def test_tag_waveform_needs_a_head() -> None:
    with pytest.raises(ValueError, match="no classification head"):
        tag_waveform(create_backbone("logmel"), two_tones(16000), 16000)
    with pytest.raises(ValueError, match="no classification head"):
        tag_waveform(create_backbone("efficientat-tiny", num_classes=0), two_tones(16000), 16000)


def test_tag_waveform_validates_input() -> None:
    model = create_backbone("efficientat-tiny")
    with pytest.raises(ValueError, match="top_k"):
        tag_waveform(model, two_tones(32000), 32000, top_k=0)
    with pytest.raises(ValueError, match="mono"):
        tag_waveform(model, np.zeros((2, 32000), np.float32), 32000)


def test_tag_waveform_restores_mode_and_sorts() -> None:
    torch.manual_seed(0)
    model = create_backbone("efficientat-tiny").train()
    tags = tag_waveform(model, torch.from_numpy(two_tones(16000))[None], 16000, top_k=7)
    assert model.training
    assert len(tags) == 7
    probs = [p for _, p in tags]
    assert probs == sorted(probs, reverse=True)
    assert all(label in audioset_labels() for label, _ in tags)


def test_tag_waveform_other_head_sizes() -> None:
    model = create_backbone("efficientat-tiny", num_classes=3)
    tags = tag_waveform(model, two_tones(32000), 32000, top_k=10)
    assert sorted(label for label, _ in tags) == ["class_0", "class_1", "class_2"]


def test_tag_waveform_golden_tone(mn04: torch.nn.Module) -> None:
    tags = tag_waveform(mn04, two_tones(32000), 32000, top_k=5)
    assert [t for t, _ in tags] == ["Sine wave", "Chirp tone", "Busy signal", "Music", "Dial tone"]
    assert np.allclose([p for _, p in tags], [0.7860, 0.1780, 0.1164, 0.0646, 0.0455], atol=1e-4)
    # The same tones at 16 kHz go through soxr and still read as a sine wave.
    tags16 = tag_waveform(mn04, two_tones(16000), 16000, top_k=1)
    assert tags16[0][0] == "Sine wave" and tags16[0][1] > 0.5


def test_tag_waveform_real_fan_clip(mn04: torch.nn.Module, shared_dir: Path) -> None:
    wave, sr = sf.read(shared_dir / FAN_CLIP, dtype="float32")
    tags = tag_waveform(mn04, wave, sr, top_k=5)
    print("fan 0040 (soxr HQ):", ", ".join(f"{t} {p:.3f}" for t, p in tags))
    assert [t for t, _ in tags[:2]] == ["Hum", "Mains hum"]
    assert np.allclose([p for _, p in tags[:2]], [0.800, 0.731], atol=1e-3)  # spec §7.4
