"""EfficientAT MobileNetV3 audio taggers (``efficientat-mn01`` … ``efficientat-mn40``).

Schmid, Koutini and Widmer, "Efficient Large-Scale Audio Tagging via Transformer-to-CNN Knowledge
Distillation" (ICASSP 2023); weights from https://github.com/fschmid56/EfficientAT (MIT licence,
Copyright (c) 2022 Florian Schmid). This is stetho's own implementation of the network; only its
parameter names follow the released state dicts, so they load with strict key matching
(spec ``backbones.md`` §7).

Layout (MobileNetV3-Large, width multiplier ``w``; every conv bias-free + BatchNorm(eps 1e-3)):

* ``features.0``: 3×3 stride-2 stem conv, 1 → c(16) channels, Hardswish;
* ``features.1..15``: inverted-residual blocks ``block.{j}`` = [1×1 expand] → depthwise k×k →
  [channel squeeze-excitation ``conc_se_layers.0.fc1/fc2``] → 1×1 project (+ residual);
* ``features.16``: 1×1 conv to ``6 · c(160)`` channels, Hardswish (the embedding channels);
* ``classifier``: avg-pool → flatten → Linear(→ c(1280)) → Hardswish → Dropout → Linear(→ 527).

``forward_features`` returns the last feature map ``(B, C, F', T')`` as ``F'·T'`` tokens of size
``C``; their mean is the global-average embedding of the original code. ``classify`` gives the
sigmoid AudioSet tag probabilities. The network has no transformer layers, so LoRA does not apply
(``num_layers == 0``): fine-tune it fully or keep it frozen.
"""

from __future__ import annotations

import logging
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stetho.backbones._builder import load_pretrained
from stetho.backbones.base import Backbone, PretrainedCfg, dataclass_overrides
from stetho.backbones.registry import register_backbone
from stetho.frontend.efficientat_mel import EfficientATMel
from stetho.utils.config import ConfigBase

__all__ = [
    "EFFICIENTAT_RELEASES",
    "EfficientAT",
    "EfficientATConfig",
    "build_efficientat",
    "make_divisible",
]

logger = logging.getLogger(__name__)

_RELEASE_URL = "https://github.com/fschmid56/EfficientAT/releases/download/v0.0.1/"
_SOURCE = "EfficientAT (Schmid et al., ICASSP 2023), https://github.com/fschmid56/EfficientAT"
_LICENSE = "MIT (EfficientAT, Copyright (c) 2022 Florian Schmid)"

#: Released AudioSet checkpoints: registry suffix → (width multiplier, release file name, sha256).
#: File names as listed in the official ``models/mn/model.py`` (``pretrained_models``).
EFFICIENTAT_RELEASES: dict[str, tuple[float, str, str | None]] = {
    "mn01": (0.1, "mn01_as_mAP_298.pt", None),
    "mn02": (0.2, "mn02_as_mAP_378.pt", None),
    "mn04": (
        0.4,
        "mn04_as_mAP_432.pt",
        "899a8c6217063f6941793102a2780b3dd788ab11fce468d9cf5f0577c453321c",
    ),
    "mn05": (0.5, "mn05_as_mAP_443.pt", None),
    "mn10": (1.0, "mn10_as_mAP_471.pt", None),
    "mn20": (2.0, "mn20_as_mAP_478.pt", None),
    "mn30": (3.0, "mn30_as_mAP_482.pt", None),
    "mn40": (4.0, "mn40_as_mAP_484.pt", None),
}

# (input, kernel, expanded, out, squeeze-excitation, hardswish, stride) before width scaling.
_BLOCKS: tuple[tuple[int, int, int, int, bool, bool, int], ...] = (
    (16, 3, 16, 16, False, False, 1),
    (16, 3, 64, 24, False, False, 2),
    (24, 3, 72, 24, False, False, 1),
    (24, 5, 72, 40, True, False, 2),
    (40, 5, 120, 40, True, False, 1),
    (40, 5, 120, 40, True, False, 1),
    (40, 3, 240, 80, False, True, 2),
    (80, 3, 200, 80, False, True, 1),
    (80, 3, 184, 80, False, True, 1),
    (80, 3, 184, 80, False, True, 1),
    (80, 3, 480, 112, True, True, 1),
    (112, 3, 672, 112, True, True, 1),
    (112, 5, 672, 160, True, True, 2),
    (160, 5, 960, 160, True, True, 1),
    (160, 5, 960, 160, True, True, 1),
)


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of ``divisor``, never dropping more than 10 %."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


@dataclass
class EfficientATConfig(ConfigBase):
    """Architecture of an EfficientAT MobileNetV3 (the front end is fixed, spec §7.1).

    Attributes:
        width_mult: Channel width multiplier (0.4 for ``mn04``).
        num_classes: Size of the tagging head (527 AudioSet classes); 0 builds no head.
        dropout: Dropout probability inside the mlp head.
        se_ratio: Squeeze ratio of the channel squeeze-excitation layers.
        n_mels: Mel bins of the front end (the released models use 128).
        sample_rate: Input rate in Hz (the released models use 32000).
    """

    width_mult: float = 0.4
    num_classes: int = 527
    dropout: float = 0.2
    se_ratio: int = 4
    n_mels: int = 128
    sample_rate: int = 32000

    def channels(self, c: int) -> int:
        """Width-scaled, rounded channel count."""
        return make_divisible(c * self.width_mult, 8)

    @property
    def embed_dim(self) -> int:
        """Channels of the last conv (the embedding size): ``6 · c(160)``."""
        return 6 * self.channels(_BLOCKS[-1][3])

    @property
    def head_dim(self) -> int:
        """Hidden size of the mlp head: ``c(1280)``."""
        return self.channels(1280)


class _ConvBN(nn.Sequential):
    """Bias-free conv + BatchNorm(eps 1e-3, momentum 0.01) + optional activation.

    Children are named ``0`` (conv), ``1`` (BN) and ``2`` (activation), as in the checkpoints.

    Inference fast path (not in the paper; an implementation choice with a measured ratio in
    ``docs/benchmarks.md``): in eval mode with gradients off, the BatchNorm is folded into the
    conv (``w' = w·γ/σ``, ``b' = β - μ·γ/σ``) and the folded weight is kept channels-last, so
    oneDNN runs the whole CNN in NHWC (its fast layout for depthwise convs). The folded
    weights are a cache, never saved; it is rebuilt whenever a parameter or running statistic
    is replaced, moved or changed in place (identity, storage and version counter), so fine-tuning,
    ``load_state_dict`` and ``.to()`` are always seen. Outputs equal the unfused path to float32
    rounding (tested).
    """

    _folded: tuple[tuple[torch.Tensor, ...], tuple[int, ...], torch.Tensor, torch.Tensor] | None

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int,
        stride: int = 1,
        groups: int = 1,
        activation: type[nn.Module] | None = None,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.01),
        ]
        if activation is not None:
            layers.append(activation())
        super().__init__(*layers)
        self._folded = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, bn = self[0], self[1]
        if (
            self.training
            or torch.is_grad_enabled()
            or type(conv) is not nn.Conv2d  # e.g. wrapped by an adapter: run them as they are
            or type(bn) is not nn.BatchNorm2d
            or not _can_fold(bn)
        ):
            return super().forward(x)
        weight, bias = self._folded_weights(conv, bn)
        # NHWC activations (a no-op once they are): with a single input channel, or 1×1 and
        # depthwise weights, the layout is ambiguous and oneDNN would stay in NCHW
        x = x.contiguous(memory_format=torch.channels_last)
        y = nn.functional.conv2d(
            x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups
        )
        return self[2](y) if len(self) > 2 else y

    def _folded_weights(
        self, conv: nn.Conv2d, bn: nn.BatchNorm2d
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(w', b')`` of the conv with the BN folded in; cached until a source tensor changes."""
        mean, var = bn.running_mean, bn.running_var
        assert mean is not None and var is not None  # checked by _can_fold
        src: tuple[torch.Tensor, ...] = (conv.weight, bn.weight, bn.bias, mean, var)
        versions = _versions(src)
        cached = self._folded
        if (
            cached is not None
            and versions is not None
            and cached[1] == versions
            and all(a is b for a, b in zip(cached[0], src, strict=True))
        ):
            return cached[2], cached[3]
        scale = bn.weight / torch.sqrt(var + bn.eps)  # (C_out,)
        weight = (conv.weight * scale[:, None, None, None]).contiguous(
            memory_format=torch.channels_last
        )  # (C_out, C_in/groups, k, k), NHWC strides
        bias = bn.bias - mean * scale  # (C_out,)
        # keep the cache only where versions are tracked (not for inference-mode tensors)
        self._folded = None if versions is None else (src, versions, weight, bias)
        return weight, bias


def _can_fold(bn: nn.BatchNorm2d) -> bool:
    """An affine BN with running statistics, outside tracing, export and compilation."""
    if bn.running_mean is None or bn.running_var is None or bn.weight is None:
        return False
    return not (torch.jit.is_tracing() or torch.jit.is_scripting() or _exporting())


def _exporting() -> bool:
    """True inside ONNX export, ``torch.export`` or ``torch.compile`` (they see the plain
    modules and fold the BatchNorms themselves)."""
    return bool(
        torch.onnx.is_in_onnx_export()
        or torch.compiler.is_exporting()
        or torch.compiler.is_compiling()
    )


def _versions(tensors: tuple[torch.Tensor, ...]) -> tuple[int, ...] | None:
    """Storage address and version counter of each tensor (``.to()`` swaps the storage of a
    parameter without bumping its version); ``None`` when one has no version (inference tensors).
    """
    try:
        return tuple(v for t in tensors for v in (t.data_ptr(), t._version))
    except RuntimeError:
        return None


class _ChannelSE(nn.Module):
    """Channel squeeze-excitation: sigmoid(fc2(relu(fc1(mean over F, T)))) scales each channel."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, squeeze)
        self.fc2 = nn.Linear(squeeze, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3))  # (B, C)
        s = torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))
        return x * s[:, :, None, None]


class _ConcurrentSE(nn.Module):
    """Holder of the SE layers (``conc_se_layers.0``); with one layer it is that layer."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.conc_se_layers = nn.ModuleList([_ChannelSE(channels, squeeze)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conc_se_layers[0](x)


class _InvertedResidual(nn.Module):
    """MobileNetV3 block: [expand 1×1] → depthwise k×k → [SE] → project 1×1 (+ input)."""

    def __init__(
        self,
        c_in: int,
        kernel: int,
        c_exp: int,
        c_out: int,
        use_se: bool,
        hardswish: bool,
        stride: int,
        se_ratio: int,
    ) -> None:
        super().__init__()
        act: type[nn.Module] = nn.Hardswish if hardswish else nn.ReLU
        layers: list[nn.Module] = []
        if c_exp != c_in:
            layers.append(_ConvBN(c_in, c_exp, 1, activation=act))
        layers.append(_ConvBN(c_exp, c_exp, kernel, stride, groups=c_exp, activation=act))
        if use_se:
            layers.append(_ConcurrentSE(c_exp, make_divisible(c_exp // se_ratio, 8)))
        layers.append(_ConvBN(c_exp, c_out, 1))
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return out + x if self.use_residual else out


class EfficientAT(Backbone):
    """EfficientAT MobileNetV3: 32 kHz waveform → log-mel → CNN → tokens / AudioSet tags.

    Args:
        config: Architecture.
        pretrained_cfg: Registry metadata (name, weights origin, embed_dim, ...).

    Shapes:
        ``forward_features``: ``(B, N)`` → ``(B, F'·T', C)``, where ``(F', T')`` is the mel grid
        downsampled 32× (``ceil`` per stride-2 step) and ``C == embed_dim``.
        ``forward_head`` / ``embed``: ``(B, C)``. ``classify``: ``(B, num_classes)``.
    """

    def __init__(self, config: EfficientATConfig, pretrained_cfg: PretrainedCfg) -> None:
        super().__init__(pretrained_cfg)
        self.config = config
        self.frontend = EfficientATMel(sample_rate=config.sample_rate, n_mels=config.n_mels)
        c = config.channels
        layers: list[nn.Module] = [_ConvBN(1, c(_BLOCKS[0][0]), 3, 2, activation=nn.Hardswish)]
        for c_in, kernel, c_exp, c_out, use_se, hs, stride in _BLOCKS:
            layers.append(
                _InvertedResidual(
                    c(c_in), kernel, c(c_exp), c(c_out), use_se, hs, stride, config.se_ratio
                )
            )
        last_in = c(_BLOCKS[-1][3])
        layers.append(_ConvBN(last_in, config.embed_dim, 1, activation=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.classifier: nn.Sequential | None = None
        if config.num_classes > 0:
            self.classifier = nn.Sequential(
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(1),
                nn.Linear(config.embed_dim, config.head_dim),
                nn.Hardswish(),
                nn.Dropout(config.dropout),
                nn.Linear(config.head_dim, config.num_classes),
            )
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    @property
    def num_classes(self) -> int:
        """Number of tagging classes (0 when built without a head)."""
        return self.config.num_classes

    def feature_map(self, wave: torch.Tensor) -> torch.Tensor:
        """Waveforms ``(B, N)`` at 32 kHz → last conv feature map ``(B, C, F', T')``."""
        mel = self.frontend(wave)  # (B, n_mels, T)
        mel = self._maybe_augment(mel, time_dim=-1, freq_dim=-2)
        return self.features(mel.unsqueeze(1))  # (B, C, F', T')

    def forward_features(self, wave: torch.Tensor) -> torch.Tensor:
        """Waveforms ``(B, N)`` → tokens ``(B, F'·T', C)`` (frequency-major order)."""
        fmap = self.feature_map(wave)  # (B, C, F', T')
        return fmap.flatten(2).transpose(1, 2)  # (B, F'·T', C)

    def embed_layers(
        self, wave: torch.Tensor, layers: list[int] | None = None
    ) -> list[torch.Tensor]:
        """Feature maps of blocks ``layers`` of ``self.features`` (0 = stem, ``-1`` = last conv)
        as tokens ``(B, F_i·T_i, C_i)``; ``None`` = the last conv only (:meth:`forward_features`).

        Raises:
            ValueError: a block index out of range.
        """
        if layers is None:
            return [self.forward_features(wave)]
        n = len(self.features)
        want = [i % n if -n <= i < n else None for i in layers]
        if any(i is None for i in want):
            raise ValueError(f"block indices must be in [-{n}, {n - 1}], got {layers}")
        x = self._maybe_augment(self.frontend(wave), time_dim=-1, freq_dim=-2).unsqueeze(1)
        maps: dict[int, torch.Tensor] = {}
        for i, block in enumerate(self.features):
            x = block(x)
            if i in want:
                maps[i] = x.flatten(2).transpose(1, 2)
            if i >= max(w for w in want if w is not None):
                break
        return [maps[i] for i in want if i is not None]

    def logits(self, wave: torch.Tensor) -> torch.Tensor:
        """Waveforms ``(B, N)`` → tagging logits ``(B, num_classes)``.

        Raises:
            ValueError: if the model was built without a head (``num_classes=0``).
        """
        if self.classifier is None:
            raise ValueError(
                f"backbone {self.pretrained_cfg.name!r} was built without a classification head "
                "(num_classes=0); build it with num_classes=527 to tag audio"
            )
        return self.classifier(self.feature_map(wave))

    def classify(self, wave: torch.Tensor) -> torch.Tensor:
        """Waveforms ``(B, N)`` → sigmoid tag probabilities ``(B, num_classes)``."""
        return torch.sigmoid(self.logits(wave))

    def extra_config(self) -> dict[str, Any]:
        """Architecture fields needed to rebuild this model."""
        return self.config.to_dict()


def _pretrained_cfg(name: str, config: EfficientATConfig, release: str | None) -> PretrainedCfg:
    url = filename = sha256 = None
    if release is not None:
        _, filename, sha256 = EFFICIENTAT_RELEASES[release]
        url = urllib.parse.urljoin(_RELEASE_URL, filename)
        source = f"{_SOURCE} (release v0.0.1, {filename}, AudioSet)"
    else:
        source = "random initialisation (no released weights)"
    return PretrainedCfg(
        name=name,
        sample_rate=config.sample_rate,
        input_kind="fbank",
        embed_dim=config.embed_dim,
        source=source,
        url=url,
        filename=filename,
        sha256=sha256,
        license=_LICENSE if release is not None else "",
        frontend={
            "type": "efficientat-mel",
            "sample_rate": config.sample_rate,
            "n_mels": config.n_mels,
            "n_fft": 1024,
            "win_length": 800,
            "hop_length": 320,
            "f_min": 0.0,
            "f_max": config.sample_rate / 2 - 1000.0,
            "preemphasis": 0.97,
            "normalise": "(ln(mel + 1e-5) + 4.5) / 5",
        },
    )


def _load_weights(model: EfficientAT, checkpoint: str, trust: bool) -> None:
    cfg = model.pretrained_cfg
    # Verify the known hash only when the checkpoint is the official file (URL or file name);
    # a user's own (e.g. fine-tuned) file of another name is loaded as is.
    official = cfg.url is not None and (
        checkpoint == cfg.url or Path(urllib.parse.urlparse(checkpoint).path).name == cfg.filename
    )

    def drop_head(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
        if model.classifier is None:
            dropped = [k for k in state if k.startswith("classifier.")]
            for k in dropped:
                del state[k]
            if dropped:
                logger.info("%s: dropped %d head tensors (num_classes=0)", path.name, len(dropped))
        return state

    load_pretrained(
        model,
        checkpoint,
        trust=trust,
        filename=cfg.filename,
        sha256=cfg.sha256 if official else None,
        adapt=drop_head,
        hint=(
            f"{cfg.name!r}: width_mult={model.config.width_mult}, "
            f"num_classes={model.config.num_classes}; the released widths are "
            f"{sorted(EFFICIENTAT_RELEASES)}"
        ),
    )


def build_efficientat(
    name: str,
    release: str | None,
    default_width: float,
    checkpoint: str | None = None,
    trust_checkpoint: bool = False,
    **overrides: Any,
) -> EfficientAT:
    """Build an EfficientAT model, optionally loading a checkpoint strictly.

    Args:
        name: Registry name stored in the model's ``pretrained_cfg``.
        release: Key of :data:`EFFICIENTAT_RELEASES` whose URL/hash describe the weights, or None.
        default_width: Width multiplier unless ``width_mult`` is overridden.
        checkpoint: Local path, URL or cached file name; ``None`` keeps random weights.
        trust_checkpoint: Allow pickled objects in the checkpoint file.
        **overrides: Fields of :class:`EfficientATConfig`.

    Raises:
        ValueError: on an unknown override.
        CheckpointError: when the checkpoint is missing or does not match the architecture.
    """
    config = dataclass_overrides(EfficientATConfig(width_mult=default_width), overrides)
    model = EfficientAT(config, _pretrained_cfg(name, config, release))
    if checkpoint is not None:
        _load_weights(model, str(checkpoint), trust_checkpoint)
    return model


def _register(release: str) -> None:
    width, filename, _ = EFFICIENTAT_RELEASES[release]
    name = f"efficientat-{release}"

    def factory(
        checkpoint: str | None = None, trust_checkpoint: bool = False, **overrides: Any
    ) -> EfficientAT:
        return build_efficientat(name, release, width, checkpoint, trust_checkpoint, **overrides)

    factory.__name__ = f"efficientat_{release}"
    factory.__doc__ = f"EfficientAT MobileNetV3 width {width} (AudioSet tagger, {filename})."
    register_backbone(
        name,
        f"EfficientAT MobileNetV3 width {width}, 32 kHz CNN, AudioSet tagger ({filename})",
    )(factory)


for _release in EFFICIENTAT_RELEASES:
    _register(_release)


@register_backbone(
    "efficientat-tiny",
    "EfficientAT MobileNetV3 width 0.1, random weights (tests and smoke runs)",
    needs_weights=False,
)
def efficientat_tiny(
    checkpoint: str | None = None, trust_checkpoint: bool = False, **overrides: Any
) -> EfficientAT:
    """Randomly initialised EfficientAT MobileNetV3 of width 0.1 (for tests)."""
    return build_efficientat(
        "efficientat-tiny", None, 0.1, checkpoint, trust_checkpoint, **overrides
    )
