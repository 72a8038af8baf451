"""The BEATs architecture config (:class:`BEATsConfig`, field names of the official ``cfg``).

Kept apart from :mod:`stetho.backbones.beats` (the network) so that each stays readable.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Literal

from stetho.utils.config import ConfigBase, ConfigError

__all__ = [
    "BEATS_TINY_CONFIG",
    "NUM_MEL_BINS",
    "OFFICIAL_CLASS_DEFAULTS",
    "Activation",
    "BEATsConfig",
]

logger = logging.getLogger(__name__)

#: Number of mel bins of the BEATs front-end (fixed by the released models).
NUM_MEL_BINS: int = 128

Activation = Literal["gelu", "gelu_accurate", "relu", "tanh", "linear"]
_ACTIVATIONS: tuple[str, ...] = ("gelu", "gelu_accurate", "relu", "tanh", "linear")


@dataclass
class BEATsConfig(ConfigBase):
    """BEATs architecture (field names as in the official ``cfg`` dict of the checkpoints).

    Defaults are the values stored in the released iter3 / iter3+ checkpoints, so a random model
    built from the defaults has the iter3 shape (90,311,792 parameters). When a checkpoint is
    loaded, its ``cfg`` is applied on top of :data:`OFFICIAL_CLASS_DEFAULTS` (what the official
    loader does), see :meth:`from_official_cfg`.

    Attributes:
        input_patch_size: Side of the square fbank patches (frames × mel bins).
        embed_dim: Patch-embedding width (before ``post_extract_proj``).
        conv_bias: Bias in the patch-embedding convolution.
        encoder_layers: Number of transformer layers.
        encoder_embed_dim: Transformer width D (the embedding size).
        encoder_ffn_embed_dim: Hidden size of the feed-forward blocks.
        encoder_attention_heads: Attention heads (head_dim = D / heads).
        activation_fn: Feed-forward activation (``"gelu"`` is exact erf GELU in float32).
        layer_wise_gradient_decay_ratio: Gradient multiplier applied before every layer (1.0 = off);
            layer k's gradients are scaled by ratio^(layers − 1 − k).
        layer_norm_first: Pre-LN layers (False: post-LN, as released).
        deep_norm: DeepNorm residual scaling α = (2·layers)^(1/4) (post-LN only).
        dropout: Dropout after attention / feed-forward and on the encoder input.
        attention_dropout: Dropout on attention probabilities.
        activation_dropout: Dropout after the feed-forward activation.
        encoder_layerdrop: Probability of skipping each layer in training (torch RNG). The released
            iter3+ cfg is reported both as 0.05 and 0.0; the default here is 0.0 (and a loaded
            checkpoint keeps its own value unless overridden).
        dropout_input: Dropout after ``post_extract_proj``.
        conv_pos: Kernel size of the convolutional positional embedding.
        conv_pos_groups: Groups of the convolutional positional embedding.
        relative_position_embedding: Use the bucketed relative position bias.
        num_buckets: Relative position buckets (half per direction).
        max_distance: Distance at which the logarithmic buckets saturate.
        gru_rel_pos: Gate the position bias per query (``grep_linear``, ``grep_a``).
        finetuned_model: The checkpoint has an AudioSet ``predictor`` head.
        predictor_dropout: Dropout before the predictor.
        predictor_class: Number of predictor classes.
    """

    input_patch_size: int = 16
    embed_dim: int = 512
    conv_bias: bool = False
    encoder_layers: int = 12
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    activation_fn: Activation = "gelu"
    layer_wise_gradient_decay_ratio: float = 0.6
    layer_norm_first: bool = False
    deep_norm: bool = True
    dropout: float = 0.0
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    encoder_layerdrop: float = 0.0
    dropout_input: float = 0.0
    conv_pos: int = 128
    conv_pos_groups: int = 16
    relative_position_embedding: bool = True
    num_buckets: int = 320
    max_distance: int = 800
    gru_rel_pos: bool = True
    finetuned_model: bool = False
    predictor_dropout: float = 0.1
    predictor_class: int = 527

    def __post_init__(self) -> None:
        if self.input_patch_size <= 0 or NUM_MEL_BINS % self.input_patch_size:
            raise ConfigError(
                f"input_patch_size must be a positive divisor of {NUM_MEL_BINS} mel bins, got "
                f"{self.input_patch_size} (the official class default -1 means the checkpoint cfg "
                "lacks this field)"
            )
        if (
            self.encoder_attention_heads <= 0
            or self.encoder_embed_dim % self.encoder_attention_heads
        ):
            raise ConfigError(
                f"encoder_embed_dim ({self.encoder_embed_dim}) must be divisible by "
                f"encoder_attention_heads ({self.encoder_attention_heads})"
            )
        if (
            self.conv_pos <= 0
            or self.conv_pos_groups <= 0
            or self.encoder_embed_dim % self.conv_pos_groups
        ):
            raise ConfigError(
                f"conv_pos ({self.conv_pos}) must be positive and conv_pos_groups "
                f"({self.conv_pos_groups}) must divide encoder_embed_dim ({self.encoder_embed_dim})"
            )
        if self.deep_norm and self.layer_norm_first:
            raise ConfigError("deep_norm and layer_norm_first cannot both be true")
        if self.activation_fn not in _ACTIVATIONS:
            raise ConfigError(
                f"activation_fn {self.activation_fn!r} is not a valid choice; expected one of "
                f"{list(_ACTIVATIONS)}"
            )
        for name in (
            "dropout",
            "attention_dropout",
            "activation_dropout",
            "encoder_layerdrop",
            "dropout_input",
            "predictor_dropout",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.num_buckets < 4 or self.max_distance <= self.num_buckets // 4:
            raise ConfigError(
                f"need num_buckets >= 4 and max_distance > num_buckets // 4, got "
                f"num_buckets={self.num_buckets}, max_distance={self.max_distance}"
            )

    @classmethod
    def from_official_cfg(cls, cfg: dict[str, Any]) -> BEATsConfig:
        """Build from a checkpoint's ``cfg`` dict the way the official loader does.

        Missing fields take the official *class* defaults (:data:`OFFICIAL_CLASS_DEFAULTS`),
        unknown keys are ignored (logged at debug level), 0/1 integers are accepted for booleans.

        Raises:
            ConfigError: a value has the wrong type or the resulting architecture is invalid.
        """
        if not isinstance(cfg, dict):
            raise ConfigError(
                f"expected the checkpoint 'cfg' to be a dict, got {type(cfg).__name__}"
            )
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(cfg) - set(fields))
        if unknown:
            logger.debug("ignoring unknown BEATs cfg keys %s", unknown)
        data = dict(OFFICIAL_CLASS_DEFAULTS)
        for key, value in cfg.items():
            if key not in fields:
                continue
            if (
                isinstance(OFFICIAL_CLASS_DEFAULTS[key], bool)
                and value in (0, 1)
                and not isinstance(value, bool)
            ):
                value = bool(value)
            data[key] = value
        return cls.from_dict(data)


#: Defaults of the official ``BEATsConfig`` class, applied to fields missing from a checkpoint cfg.
OFFICIAL_CLASS_DEFAULTS: dict[str, Any] = {
    "input_patch_size": -1,
    "embed_dim": 512,
    "conv_bias": False,
    "encoder_layers": 12,
    "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12,
    "activation_fn": "gelu",
    "layer_wise_gradient_decay_ratio": 1.0,
    "layer_norm_first": False,
    "deep_norm": False,
    "dropout": 0.1,
    "attention_dropout": 0.1,
    "activation_dropout": 0.0,
    "encoder_layerdrop": 0.0,
    "dropout_input": 0.0,
    "conv_pos": 128,
    "conv_pos_groups": 16,
    "relative_position_embedding": False,
    "num_buckets": 320,
    "max_distance": 1280,
    "gru_rel_pos": False,
    "finetuned_model": False,
    "predictor_dropout": 0.1,
    "predictor_class": 527,
}

#: Architecture of ``beats-tiny``: same code, 2 layers, width 64 (random weights; tests, demos).
BEATS_TINY_CONFIG = BEATsConfig(
    embed_dim=32,
    encoder_layers=2,
    encoder_embed_dim=64,
    encoder_ffn_embed_dim=128,
    encoder_attention_heads=4,
    conv_pos=16,
    conv_pos_groups=4,
)
