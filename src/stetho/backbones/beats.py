# Over 500 lines: one model family, the network plus its strict loader; the config is in beats_config.py.
"""BEATs (Chen et al., "BEATs: Audio Pre-Training with Acoustic Tokenizers", ICML 2023).

Written from the stetho backbone specification; the module layout reproduces the official
checkpoint's key names so ``BEATs_iter3.pt`` loads with ``strict=True``::

    wave (B, N) 16 kHz
      × 2**15 → Kaldi fbank (B, T, 128) → (x − 15.41663) / (2·6.55582) → [SpecAugment, training]
      → patch_embedding Conv2d 16×16/16 → (B, 512, T//16, 8) → time-major patches (B, L, 512)
      → layer_norm → post_extract_proj (B, L, 768) → encoder:
          x += GELU(weight-normed grouped Conv1d(x))     # encoder.pos_conv.0.{weight_g,weight_v,bias}
          x = LN(x)                                      # post-LN model: LN before the layers
          12 × DeepNorm post-LN layers with gated relative position bias (shared embedding)
      → tokens (B, L, 768); 10 s → T = 998 frames → L = 62·8 = 496

Attention uses ``F.scaled_dot_product_attention`` with the gated relative position bias as a float
``attn_mask``; this equals the official "q/32, subtract row max, ×32" formulation up to rounding.

Differences from the official code, all training-only: layerdrop draws from torch's RNG (not
numpy), and the position bias is computed once per forward from the shared embedding, so a
layerdropped layer 0 does not remove the bias from the remaining layers. Padding masks are not
supported: every clip of a batch has the same length.

Registry names: ``beats`` (iter3 architecture; load ``BEATs_*.pt`` files) and ``beats-tiny`` (a
2-layer, 64-dim random model for tests and demos).
"""

from __future__ import annotations

import logging
import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from stetho.backbones._builder import load_strict, read_checkpoint
from stetho.backbones.base import Backbone, PretrainedCfg, dataclass_overrides
from stetho.backbones.beats_config import (
    _ACTIVATIONS,
    BEATS_TINY_CONFIG,
    NUM_MEL_BINS,
    OFFICIAL_CLASS_DEFAULTS,
    BEATsConfig,
)
from stetho.backbones.checkpoint import (
    CheckpointError,
    unwrap_state_dict,
)
from stetho.backbones.registry import register_backbone
from stetho.frontend.kaldi import (
    FBANK_MEAN,
    FBANK_STD,
    KaldiFbank,
    KaldiFbankConfig,
    beats_fbank_normalise,
)
from stetho.utils.config import ConfigError

__all__ = [
    "BEATS_TINY_CONFIG",
    "OFFICIAL_CLASS_DEFAULTS",
    "BEATs",
    "BEATsConfig",
    "relative_position_bucket",
]

logger = logging.getLogger(__name__)

#: Scale applied to [-1, 1] waveforms before the fbank (BEATs expects 16-bit sample values).
WAVE_SCALE: float = 2.0**15
#: Checkpoint file named in offline error messages.
DEFAULT_CHECKPOINT: str = "BEATs_iter3.pt"
_SOURCE = (
    "microsoft/unilm BEATs README (OneDrive links, no direct URL): "
    "https://github.com/microsoft/unilm/tree/master/beats"
)


# ---------------------------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------------------------
class _GradScale(torch.autograd.Function):
    """Identity in the forward pass, multiplies the gradient by ``scale`` in the backward pass."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.scale, None


def _activation(name: str, x: torch.Tensor) -> torch.Tensor:
    if name == "gelu":
        return F.gelu(x.float()).type_as(x)
    if name == "gelu_accurate":
        return F.gelu(x.float(), approximate="tanh").type_as(x)
    if name == "relu":
        return F.relu(x)
    if name == "tanh":
        return torch.tanh(x)
    if name == "linear":
        return x
    raise ValueError(f"unknown activation {name!r}; valid choices: {list(_ACTIVATIONS)}")


def relative_position_bucket(
    relative_position: torch.Tensor, num_buckets: int = 320, max_distance: int = 800
) -> torch.Tensor:
    """Bidirectional relative-position buckets of BEATs (T5-style, log-spaced far buckets).

    Half of the buckets serve each direction (``r = key − query > 0`` adds ``num_buckets // 2``);
    distances below ``num_buckets // 4`` get their own bucket, larger ones are log-spaced up to
    ``max_distance`` and saturate at the last bucket of their half.

    Args:
        relative_position: Integer tensor of ``key − query`` offsets, any shape.
        num_buckets: Total number of buckets.
        max_distance: Distance at which buckets saturate.

    Returns:
        Long tensor of bucket indices, same shape.
    """
    half = num_buckets // 2
    bucket = (relative_position > 0).long() * half
    dist = relative_position.abs()
    max_exact = half // 2
    far = dist.clamp_min(max_exact).float()  # avoid log(0); near offsets use the exact branch
    far_bucket = (
        max_exact
        + (
            torch.log(far / max_exact) / math.log(max_distance / max_exact) * (half - max_exact)
        ).long()
    )
    far_bucket = far_bucket.clamp_max(half - 1)
    return bucket + torch.where(dist < max_exact, dist, far_bucket)


class WeightNormConv1d(nn.Module):
    """Grouped Conv1d with explicit weight normalisation over dim 2 (per kernel tap).

    ``weight = weight_v · weight_g / ‖weight_v‖``, the norm taken over the output and input
    channel axes separately for each tap. Parameters ``weight_g`` (1, 1, K), ``weight_v``
    (C, C / groups, K) and ``bias`` (C,) carry the names of the official checkpoints.
    """

    def __init__(self, channels: int, kernel_size: int, groups: int) -> None:
        super().__init__()
        self.groups = groups
        self.padding = kernel_size // 2
        self.weight_v = nn.Parameter(torch.empty(channels, channels // groups, kernel_size))
        self.weight_g = nn.Parameter(torch.empty(1, 1, kernel_size))
        self.bias = nn.Parameter(torch.zeros(channels))

    def weight(self) -> torch.Tensor:
        """The effective convolution weight (C, C / groups, K)."""
        norm = self.weight_v.norm(dim=(0, 1), keepdim=True)  # (1, 1, K)
        return self.weight_v * (self.weight_g / norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, L) → (B, C, L + 1 − K % 2)."""
        return F.conv1d(x, self.weight(), self.bias, padding=self.padding, groups=self.groups)


class _DropExtraStep(nn.Module):
    """Remove the extra last step an even-kernel "same" convolution produces."""

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.remove = 1 if kernel_size % 2 == 0 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., : x.shape[-1] - self.remove] if self.remove else x


class BEATsSelfAttention(nn.Module):
    """Multi-head self-attention with a gated, bucketed relative position bias.

    ``relative_attention_bias`` (Embedding(num_buckets, heads)) is assigned by the encoder: one
    module shared by all layers. The gate of query row i in head h is
    ``a·(b·grep_a[h] − 1) + 2`` with ``(a, b) = sigmoid(sum4(grep_linear(q_raw)))``.
    """

    relative_attention_bias: nn.Embedding | None

    def __init__(self, cfg: BEATsConfig) -> None:
        super().__init__()
        d = cfg.encoder_embed_dim
        self.num_heads = cfg.encoder_attention_heads
        self.head_dim = d // self.num_heads
        self.dropout = cfg.attention_dropout
        self.num_buckets = cfg.num_buckets
        self.max_distance = cfg.max_distance
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)
        self.relative_attention_bias = None
        self.gru_rel_pos = cfg.gru_rel_pos
        if cfg.gru_rel_pos:
            self.grep_linear = nn.Linear(self.head_dim, 8)
            self.grep_a = nn.Parameter(torch.ones(1, self.num_heads, 1, 1))

    def compute_bias(self, length: int, device: torch.device | None = None) -> torch.Tensor:
        """Relative position bias ``(H, L, L)``: ``bias[h, i, j] = E[bucket(j − i), h]``."""
        if self.relative_attention_bias is None:
            raise RuntimeError("this attention layer has no relative_attention_bias")
        pos = torch.arange(length, device=device)
        rel = pos.unsqueeze(0) - pos.unsqueeze(1)  # (L, L): key j − query i
        buckets = relative_position_bucket(rel, self.num_buckets, self.max_distance)
        buckets = buckets.to(self.relative_attention_bias.weight.device)
        return self.relative_attention_bias(buckets).permute(2, 0, 1)  # (H, L, L)

    def gate(self, q_raw: torch.Tensor) -> torch.Tensor:
        """Per-query gate ``(B, H, L, 1)`` from the unscaled queries ``(B, H, L, d)``."""
        b, h, length, _ = q_raw.shape
        g = self.grep_linear(q_raw).view(b, h, length, 2, 4).sum(-1)  # (B, H, L, 2)
        gate_a, gate_b = torch.sigmoid(g).chunk(2, dim=-1)  # (B, H, L, 1) each
        return gate_a * (gate_b * self.grep_a - 1.0) + 2.0

    def forward(self, x: torch.Tensor, position_bias: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, D) tokens and an optional (H, L, L) position bias → (B, L, D)."""
        b, length, d = x.shape
        h, hd = self.num_heads, self.head_dim
        q = self.q_proj(x).view(b, length, h, hd).transpose(1, 2)  # (B, H, L, d)
        k = self.k_proj(x).view(b, length, h, hd).transpose(1, 2)
        v = self.v_proj(x).view(b, length, h, hd).transpose(1, 2)
        mask = None
        if position_bias is not None:
            bias = position_bias.unsqueeze(0)  # (1, H, L, L)
            if self.gru_rel_pos:
                bias = self.gate(q) * bias  # (B, H, L, L)
            mask = bias.to(q.dtype)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            scale=hd**-0.5,
        )  # (B, H, L, d)
        y = y.transpose(1, 2).reshape(b, length, d)
        return self.out_proj(y)


class BEATsEncoderLayer(nn.Module):
    """Transformer layer: post-LN with DeepNorm residual scaling (or pre-LN if configured)."""

    def __init__(self, cfg: BEATsConfig) -> None:
        super().__init__()
        d = cfg.encoder_embed_dim
        self.layer_norm_first = cfg.layer_norm_first
        self.alpha = math.pow(2 * cfg.encoder_layers, 0.25) if cfg.deep_norm else 1.0
        self.activation_fn = cfg.activation_fn
        self.self_attn = BEATsSelfAttention(cfg)
        self.dropout1 = nn.Dropout(cfg.dropout)
        self.dropout2 = nn.Dropout(cfg.activation_dropout)
        self.dropout3 = nn.Dropout(cfg.dropout)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, cfg.encoder_ffn_embed_dim)
        self.fc2 = nn.Linear(cfg.encoder_ffn_embed_dim, d)
        self.final_layer_norm = nn.LayerNorm(d)

    def _ffn(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout2(_activation(self.activation_fn, self.fc1(x)))
        return self.dropout3(self.fc2(x))

    def forward(self, x: torch.Tensor, position_bias: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, D) → (B, L, D)."""
        if self.layer_norm_first:
            x = x + self.dropout1(self.self_attn(self.self_attn_layer_norm(x), position_bias))
            return x + self._ffn(self.final_layer_norm(x))
        x = self.self_attn_layer_norm(
            x * self.alpha + self.dropout1(self.self_attn(x, position_bias))
        )
        return self.final_layer_norm(x * self.alpha + self._ffn(x))


class BEATsEncoder(nn.Module):
    """Convolutional positional embedding, LayerNorm and the transformer layers."""

    def __init__(self, cfg: BEATsConfig) -> None:
        super().__init__()
        d = cfg.encoder_embed_dim
        self.layer_norm_first = cfg.layer_norm_first
        self.layerdrop = cfg.encoder_layerdrop
        self.grad_decay = cfg.layer_wise_gradient_decay_ratio
        self.pos_conv = nn.Sequential(
            WeightNormConv1d(d, cfg.conv_pos, cfg.conv_pos_groups),
            _DropExtraStep(cfg.conv_pos),
            nn.GELU(),
        )
        self.layer_norm = nn.LayerNorm(d)
        self.dropout = nn.Dropout(cfg.dropout)
        layers = [BEATsEncoderLayer(cfg) for _ in range(cfg.encoder_layers)]
        self.relative_position_embedding = cfg.relative_position_embedding
        if cfg.relative_position_embedding:
            shared = nn.Embedding(cfg.num_buckets, cfg.encoder_attention_heads)
            for layer in layers:
                layer.self_attn.relative_attention_bias = shared  # same module in every layer
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, D) patch features → (B, L, D) last-layer output."""
        x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        x = self.dropout(x)
        bias = None
        if self.relative_position_embedding:
            first = self.layers[0]
            assert isinstance(first, BEATsEncoderLayer)
            bias = first.self_attn.compute_bias(x.shape[1], x.device)  # (H, L, L)
        for layer in self.layers:
            if self.grad_decay != 1.0 and x.requires_grad:
                x = _GradScale.apply(x, self.grad_decay)
            if self.training and self.layerdrop > 0.0 and float(torch.rand(())) < self.layerdrop:
                continue
            x = layer(x, bias)
        if self.layer_norm_first:
            x = self.layer_norm(x)
        return x


def _init_weights(model: BEATs) -> None:
    """Random initialisation (BERT-style normal 0.02, DeepNorm xavier gains, normalised pos conv)."""
    cfg = model.cfg
    enc = model.encoder
    for module in enc.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
    conv = enc.pos_conv[0]
    assert isinstance(conv, WeightNormConv1d)
    std = math.sqrt(4.0 * (1.0 - cfg.dropout) / (cfg.conv_pos * cfg.encoder_embed_dim))
    with torch.no_grad():
        nn.init.normal_(conv.weight_v, std=std)
        conv.weight_g.copy_(conv.weight_v.norm(dim=(0, 1), keepdim=True))
        nn.init.zeros_(conv.bias)
    if cfg.deep_norm:
        beta = math.pow(8 * cfg.encoder_layers, -0.25)
        for layer in enc.layers:
            assert isinstance(layer, BEATsEncoderLayer)
            attn = layer.self_attn
            for lin, gain in (
                (attn.q_proj, 1.0),
                (attn.k_proj, 1.0),
                (attn.v_proj, beta),
                (attn.out_proj, beta),
                (layer.fc1, beta),
                (layer.fc2, beta),
            ):
                nn.init.xavier_normal_(lin.weight, gain=gain)


# ---------------------------------------------------------------------------------------------
# the backbone
# ---------------------------------------------------------------------------------------------
class BEATs(Backbone):
    """BEATs audio transformer on 128-bin Kaldi fbank patches (16 kHz input).

    Args:
        cfg: Architecture; defaults are the released iter3 shape.
        pretrained_cfg: Registry metadata (name, weights origin); built from ``cfg`` if omitted.
    """

    lora_target_templates: ClassVar[dict[str, str]] = {
        "q": "encoder.layers.{i}.self_attn.q_proj",
        "k": "encoder.layers.{i}.self_attn.k_proj",
        "v": "encoder.layers.{i}.self_attn.v_proj",
        "out": "encoder.layers.{i}.self_attn.out_proj",
        "fc1": "encoder.layers.{i}.fc1",
        "fc2": "encoder.layers.{i}.fc2",
    }
    layers_pattern: ClassVar[str | None] = "layers"

    def __init__(
        self, cfg: BEATsConfig | None = None, pretrained_cfg: PretrainedCfg | None = None
    ) -> None:
        cfg = cfg if cfg is not None else BEATsConfig()
        super().__init__(
            pretrained_cfg if pretrained_cfg is not None else _pretrained_cfg("beats", cfg)
        )
        self.cfg = cfg
        #: ``label_dict`` of a fine-tuned checkpoint (class index → AudioSet label), if any.
        self.label_dict: Any = None
        self.fbank = KaldiFbank(KaldiFbankConfig(num_mel_bins=NUM_MEL_BINS))
        p = cfg.input_patch_size
        self.patch_embedding = nn.Conv2d(
            1, cfg.embed_dim, kernel_size=p, stride=p, bias=cfg.conv_bias
        )
        self.layer_norm = nn.LayerNorm(cfg.embed_dim)
        self.post_extract_proj = (
            nn.Linear(cfg.embed_dim, cfg.encoder_embed_dim)
            if cfg.embed_dim != cfg.encoder_embed_dim
            else None
        )
        self.dropout_input = nn.Dropout(cfg.dropout_input)
        self.encoder = BEATsEncoder(cfg)
        self.predictor_dropout: nn.Dropout | None = None
        self.predictor: nn.Linear | None = None
        if cfg.finetuned_model:
            self.predictor_dropout = nn.Dropout(cfg.predictor_dropout)
            self.predictor = nn.Linear(cfg.encoder_embed_dim, cfg.predictor_class)
        _init_weights(self)

    @property
    def num_layers(self) -> int:
        """Number of transformer layers (LoRA targets ``encoder.layers.{0..n-1}``)."""
        return self.cfg.encoder_layers

    def extra_config(self) -> dict[str, Any]:
        """Every :class:`BEATsConfig` field: ``create_backbone(name, **extra_config())`` rebuilds it."""
        return self.cfg.to_dict()

    # -- forward ---------------------------------------------------------------------------
    def fbank_features(self, wave: torch.Tensor) -> torch.Tensor:
        """Waveforms ``(B, N)`` in [-1, 1] → normalised fbank ``(B, T, 128)`` (no augmentation)."""
        if wave.dim() == 1:
            wave = wave.unsqueeze(0)
        if wave.dtype != torch.float64:
            wave = wave.float()
        return beats_fbank_normalise(self.fbank(wave * WAVE_SCALE))

    def forward_fbank(self, fbank: torch.Tensor) -> torch.Tensor:
        """Normalised fbank ``(B, T, 128)`` → tokens ``(B, L, D)``, ``L = (T // 16) · 8``.

        Raises:
            ValueError: if the fbank has the wrong number of bins or fewer frames than one patch.
        """
        p = self.cfg.input_patch_size
        if fbank.dim() != 3 or fbank.shape[-1] != NUM_MEL_BINS:
            raise ValueError(
                f"expected a fbank (B, T, {NUM_MEL_BINS}), got shape {tuple(fbank.shape)}"
            )
        if fbank.shape[1] < p:
            raise ValueError(
                f"BEATs needs at least {p} fbank frames (one patch, {400 + (p - 1) * 160} samples at "
                f"16 kHz), got {fbank.shape[1]}"
            )
        x = fbank.unsqueeze(1).to(self.patch_embedding.weight.dtype)  # (B, 1, T, F)
        x = self.patch_embedding(x)  # (B, E, T // p, F // p)
        x = x.flatten(2).transpose(1, 2)  # (B, L, E), time-major: index = t · (F // p) + f
        x = self.layer_norm(x)
        if self.post_extract_proj is not None:
            x = self.post_extract_proj(x)  # (B, L, D)
        x = self.dropout_input(x)
        return self.encoder(x)  # (B, L, D)

    def forward_features(self, wave: torch.Tensor) -> torch.Tensor:
        """Waveforms ``(B, N)`` at 16 kHz in [-1, 1] → tokens ``(B, L, D)`` (10 s → L = 496).

        SpecAugment (if installed with :meth:`set_spec_augment`) masks the normalised fbank in
        training mode only.
        """
        fbank = self.fbank_features(wave)  # (B, T, 128)
        fbank = self._maybe_augment(fbank, time_dim=1, freq_dim=2)
        return self.forward_fbank(fbank)

    def classify(self, wave: torch.Tensor) -> torch.Tensor:
        """AudioSet probabilities ``(B, predictor_class)`` of a fine-tuned checkpoint.

        The predictor is applied per patch, its logits averaged over patches, then a sigmoid.

        Raises:
            RuntimeError: if the model has no predictor (pre-trained, not fine-tuned, weights).
        """
        if self.predictor is None or self.predictor_dropout is None:
            raise RuntimeError(
                "this BEATs model has no AudioSet predictor (cfg.finetuned_model is False); load a "
                "fine-tuned checkpoint such as BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt"
            )
        tokens = self.forward_features(wave)  # (B, L, D)
        logits = self.predictor(self.predictor_dropout(tokens)).mean(dim=1)  # (B, C)
        return torch.sigmoid(logits)


# ---------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------
def _pretrained_cfg(name: str, cfg: BEATsConfig) -> PretrainedCfg:
    tiny = name == "beats-tiny"
    return PretrainedCfg(
        name=name,
        sample_rate=16000,
        input_kind="fbank",
        embed_dim=cfg.encoder_embed_dim,
        source="random weights (stetho test model)" if tiny else _SOURCE,
        url=None,
        filename=None if tiny else DEFAULT_CHECKPOINT,
        license="" if tiny else "MIT (microsoft/unilm)",
        frontend={
            "type": "kaldi_fbank",
            "wave_scale": WAVE_SCALE,
            "num_mel_bins": NUM_MEL_BINS,
            "frame_length_ms": 25.0,
            "frame_shift_ms": 10.0,
            "fbank_mean": FBANK_MEAN,
            "fbank_std": FBANK_STD,
            "normalise": "(fbank - mean) / (2 * std)",
        },
    )


def _apply_overrides(cfg: BEATsConfig, overrides: dict[str, Any]) -> BEATsConfig:
    try:
        return dataclass_overrides(cfg, overrides)  # type: ignore[no-any-return]
    except TypeError as err:
        raise ConfigError(f"invalid BEATs override: {err}") from err


def _build(
    name: str, base: BEATsConfig, checkpoint: str | None, trust: bool, overrides: dict[str, Any]
) -> BEATs:
    if checkpoint is None:
        cfg = _apply_overrides(base, overrides)
        return BEATs(cfg, _pretrained_cfg(name, cfg))
    path, ckpt = read_checkpoint(
        checkpoint,
        trust=trust,
        not_found_hint=(
            f"BEATs weights have no direct download: get {DEFAULT_CHECKPOINT} (or another "
            f"BEATs_*.pt file) from the OneDrive links in the {_SOURCE} and pass its path."
        ),
    )
    if isinstance(ckpt, dict) and "cfg" in ckpt:
        if "model" not in ckpt:
            raise CheckpointError(
                f"{path}: expected an official BEATs file {{'cfg', 'model'}}, found keys {sorted(ckpt)}"
            )
        try:
            cfg = BEATsConfig.from_official_cfg(ckpt["cfg"])
        except ConfigError as err:
            raise CheckpointError(f"{path}: invalid BEATs 'cfg': {err}") from err
        cfg = _apply_overrides(cfg, overrides)
        state = unwrap_state_dict(ckpt, keys=("model",))
    else:  # a plain state dict: architecture from the registry defaults + overrides
        logger.info("%s has no 'cfg'; building %s from its defaults and overrides", path, name)
        cfg = _apply_overrides(base, overrides)
        state = unwrap_state_dict(ckpt)
    model = BEATs(cfg, _pretrained_cfg(name, cfg))
    load_strict(
        model,
        state,
        str(path),
        f"BEATs: {cfg.encoder_layers} layers, dim {cfg.encoder_embed_dim}",
    )
    if isinstance(ckpt, dict) and ckpt.get("label_dict") is not None:
        model.label_dict = ckpt["label_dict"]
    logger.info(
        "loaded BEATs weights from %s (%d layers, dim %d)",
        path,
        cfg.encoder_layers,
        cfg.encoder_embed_dim,
    )
    return model


@register_backbone(
    "beats", description="BEATs iter3 audio transformer (Microsoft, 90 M params, 768-d)"
)
def beats(checkpoint: str | None = None, trust_checkpoint: bool = False, **overrides: Any) -> BEATs:
    """BEATs with the iter3 architecture; ``checkpoint`` is an official ``BEATs_*.pt`` file.

    Args:
        checkpoint: Path (or cache file name) of a ``{'cfg', 'model'}`` checkpoint; the config is
            read from its ``cfg``. ``None``: random weights with :class:`BEATsConfig` defaults.
        trust_checkpoint: Allow pickled objects in the file (``weights_only=False``).
        **overrides: :class:`BEATsConfig` fields applied on top (e.g. ``encoder_layerdrop=0.0``).
    """
    return _build("beats", BEATsConfig(), checkpoint, trust_checkpoint, overrides)


@register_backbone(
    "beats-tiny",
    description="tiny random BEATs (2 layers, 64-d) for tests and demos",
    needs_weights=False,
)
def beats_tiny(
    checkpoint: str | None = None, trust_checkpoint: bool = False, **overrides: Any
) -> BEATs:
    """The BEATs code at a tiny size (:data:`BEATS_TINY_CONFIG`), randomly initialised."""
    return _build("beats-tiny", BEATS_TINY_CONFIG, checkpoint, trust_checkpoint, overrides)
