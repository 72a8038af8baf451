"""Pre-trained audio backbones behind one registry.

>>> from stetho.backbones import create_backbone, list_backbones
>>> model = create_backbone("beats", checkpoint="BEATs_iter3.pt")   # doctest: +SKIP
>>> emb = model.embed(wave)  # (B, N) at model.sample_rate -> (B, 768)   # doctest: +SKIP
"""

# Built-in backbones register themselves on import (one module per family).
from stetho.backbones import (
    beats,
    ced,
    efficientat,
    hf,  # re-exports of wav2vec2 / whisper (compatibility)
    logmel_stats,
    wav2vec2,
    whisper,
)
from stetho.backbones.base import MATRIX_KEYS, Backbone, PretrainedCfg
from stetho.backbones.checkpoint import CheckpointError, load_checkpoint, resolve_checkpoint
from stetho.backbones.registry import (
    architecture_keys,
    architecture_overrides,
    create_backbone,
    describe_backbones,
    get_entry,
    list_backbones,
    register_backbone,
)

__all__ = [
    "MATRIX_KEYS",
    "Backbone",
    "CheckpointError",
    "PretrainedCfg",
    "architecture_keys",
    "architecture_overrides",
    "beats",
    "ced",
    "create_backbone",
    "describe_backbones",
    "efficientat",
    "get_entry",
    "hf",
    "list_backbones",
    "load_checkpoint",
    "logmel_stats",
    "register_backbone",
    "resolve_checkpoint",
    "wav2vec2",
    "whisper",
]
