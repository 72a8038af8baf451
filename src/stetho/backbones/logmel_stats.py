"""``logmel``: the weight-free backbone that runs anywhere (stetho's default without checkpoints).

(Module ``logmel_stats``: the registry name stays ``logmel``; the front-end is
:mod:`stetho.frontend.logmel`.)

No download, no GPU, no trainable parameters: a 16 kHz waveform becomes a log-mel spectrogram in
dB (``n_fft`` 1024, hop 512, 128 Slaney mel bins, the DCASE baseline feature), whose frames are the
tokens ``(B, T, 128)``. The pooled embedding is the per-band statistics over time,
``[mean | std | max]`` → ``(B, 384)``.

Because it has no trainable parameters, fine-tuning treats it as the frozen strategy: only the
embedding statistics feed the back end. SpecAugment (if installed) masks the log-mel frames in
training mode, like any spectrogram backbone.

Example:
    >>> model = create_backbone("logmel")               # doctest: +SKIP
    >>> model.embed(torch.zeros(2, 160000)).shape       # doctest: +SKIP
    torch.Size([2, 384])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from stetho.backbones.base import Backbone, PretrainedCfg, dataclass_overrides
from stetho.backbones.registry import register_backbone
from stetho.frontend.logmel import LogMel
from stetho.frontend.mel import centred_stft
from stetho.frontend.views import (
    VIEWS,
    dct_matrix,
    mel_bank,
    modulation_tokens,
    shape_tokens,
    view_dim,
)
from stetho.utils.config import ConfigBase

__all__ = ["LogMelBackbone", "LogMelConfig"]


@dataclass
class LogMelConfig(ConfigBase):
    """Settings of the ``logmel`` backbone.

    Attributes:
        sample_rate: Input rate in Hz.
        n_fft: FFT and window size.
        hop_length: Hop in samples.
        n_mels: Mel bins (the embedding has ``3 · n_mels`` values).
        f_min: Lower mel edge in Hz.
        f_max: Upper mel edge in Hz (``None``: Nyquist).
        mel_scale: ``"slaney"`` (area-normalised triangles, the default and the DCASE
            baseline's) or ``"htk"`` (``2595 · log10(1 + f/700)``, unnormalised triangles).
        view: Which frame-wise tokens are pooled (:mod:`stetho.frontend.views`): ``"logmel"``
            (the log-mel frames), ``"cepstrum"`` (DCT of the log-mel frame), ``"shape"``
            (spectral centroid, bandwidth, roll-off, flatness, contrast) or ``"modulation"``
            (temporal modulation spectrum per window). Not in the paper.
        n_ceps: Cepstral coefficients of the ``cepstrum`` view.
        mod_bands: Band groups of the ``modulation`` view.
        mod_window: Frames per window of the ``modulation`` view (64 ≈ 2 s at hop 512).
    """

    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 512
    n_mels: int = 128
    f_min: float = 0.0
    f_max: float | None = None
    mel_scale: Literal["slaney", "htk"] = "slaney"
    view: Literal["logmel", "cepstrum", "shape", "modulation"] = "logmel"
    n_ceps: int = 20
    mod_bands: int = 16
    mod_window: int = 64

    def __post_init__(self) -> None:
        if self.mel_scale not in ("slaney", "htk"):
            raise ValueError(f"logmel mel_scale must be 'slaney' or 'htk', got {self.mel_scale!r}")
        if self.view not in VIEWS:
            raise ValueError(f"unknown logmel view {self.view!r}; known: {list(VIEWS)}")
        if self.view == "cepstrum" and not 1 <= self.n_ceps <= self.n_mels:
            raise ValueError(f"n_ceps must be in [1, n_mels={self.n_mels}], got {self.n_ceps}")
        if self.view == "modulation" and (
            not 1 <= self.mod_bands <= self.n_mels or self.mod_window < 4
        ):
            raise ValueError(
                f"mod_bands must be in [1, n_mels={self.n_mels}] and mod_window >= 4, got "
                f"{self.mod_bands}, {self.mod_window}"
            )


class LogMelBackbone(Backbone):
    """Parameter-free log-mel backbone.

    Shapes:
        ``forward_features``: ``(B, N)`` → frames ``(B, T, n_mels)``, ``T = 1 + N // hop``.
        ``forward_head``: ``(B, T, n_mels)`` → ``(B, 3 · n_mels)`` = per-band
        ``[mean | std | max]`` over time (population std).
    """

    def __init__(self, config: LogMelConfig, pretrained_cfg: PretrainedCfg) -> None:
        super().__init__(pretrained_cfg)
        self.config = config
        self.frontend = LogMel(
            sample_rate=config.sample_rate,
            n_fft=config.n_fft,
            hop_length=config.hop_length,
            n_mels=config.n_mels,
            f_min=config.f_min,
            f_max=config.f_max,
        )
        if config.mel_scale == "htk":
            self.frontend.mel_bank = mel_bank(
                config.n_mels, config.n_fft, config.sample_rate, config.f_min, config.f_max, "htk"
            )
        self.dct: torch.Tensor
        self.register_buffer(
            "dct", dct_matrix(config.n_mels, min(config.n_ceps, config.n_mels)), persistent=False
        )  # (n_ceps, n_mels)

    def forward_features(self, wave: torch.Tensor) -> torch.Tensor:
        """Waveforms ``(B, N)`` → tokens ``(B, L, D)`` of the configured view.

        ``logmel``: log-mel frames ``(B, T, n_mels)`` in dB; ``cepstrum`` ``(B, T, n_ceps)``;
        ``shape`` ``(B, T, 11)``; ``modulation`` ``(B, W, 5 · mod_bands)`` (one per window).
        """
        c = self.config
        if c.view == "shape":
            wave = wave.float()
            spec = centred_stft(wave, self.frontend.window, c.n_fft, c.hop_length)
            return shape_tokens(spec.real.square() + spec.imag.square(), c.sample_rate)
        mel = self.frontend(wave)  # (B, n_mels, T)
        if c.view == "cepstrum":
            return torch.matmul(self.dct, mel).transpose(1, 2)
        if c.view == "modulation":
            return modulation_tokens(mel, c.sample_rate / c.hop_length, c.mod_bands, c.mod_window)
        return self._maybe_augment(mel.transpose(1, 2), time_dim=1, freq_dim=2)

    def forward_head(self, tokens: torch.Tensor) -> torch.Tensor:
        """Frames ``(B, T, F)`` → per-band statistics ``(B, 3F)``: mean, std, max over time."""
        mean = tokens.mean(dim=1)  # (B, F)
        std = tokens.std(dim=1, correction=0)  # (B, F)
        peak = tokens.amax(dim=1)  # (B, F)
        return torch.cat([mean, std, peak], dim=-1)

    def extra_config(self) -> dict[str, Any]:
        """Settings needed to rebuild this backbone."""
        return self.config.to_dict()


@register_backbone(
    "logmel",
    "Weight-free log-mel statistics (16 kHz, 128 mel bins, mean/std/max): runs anywhere",
    needs_weights=False,
)
def logmel(
    checkpoint: str | None = None, trust_checkpoint: bool = False, **overrides: Any
) -> LogMelBackbone:
    """Weight-free log-mel statistics backbone (the "runs anywhere" default).

    Args:
        checkpoint: Must be ``None``: this backbone has no weights.
        trust_checkpoint: Ignored (kept for a uniform factory signature).
        **overrides: Fields of :class:`LogMelConfig`.

    Raises:
        ValueError: if a checkpoint is given or an override is unknown.
    """
    if checkpoint is not None:
        raise ValueError(f"backbone 'logmel' has no weights; got checkpoint={checkpoint!r}")
    config = dataclass_overrides(LogMelConfig(), overrides)
    cfg = PretrainedCfg(
        name="logmel",
        sample_rate=config.sample_rate,
        input_kind="fbank",
        embed_dim=3 * view_dim(config.view, config.n_mels, config.n_ceps, config.mod_bands),
        source="none (weight-free log-mel statistics)",
        frontend={
            "type": "logmel-db",
            "sample_rate": config.sample_rate,
            "n_fft": config.n_fft,
            "hop_length": config.hop_length,
            "n_mels": config.n_mels,
            "mel_scale": config.mel_scale,
            "view": config.view,
            "f_min": config.f_min,
            "f_max": config.f_max,
            "pooling": "mean|std|max over time",
        },
    )
    return LogMelBackbone(config, cfg)
