"""Pre-trained audio backbones behind one registry.

>>> from stetho.backbones import create_backbone, list_backbones
>>> model = create_backbone("beats", checkpoint="BEATs_iter3.pt")   # doctest: +SKIP
>>> emb = model.embed(wave)  # (B, N) at model.sample_rate -> (B, 768)   # doctest: +SKIP
"""

from stetho.backbones.base import MATRIX_KEYS, Backbone, PretrainedCfg
from stetho.backbones.checkpoint import CheckpointError, load_checkpoint, resolve_checkpoint
from stetho.backbones.registry import create_backbone, get_entry, list_backbones, register_backbone

# Built-in backbones register themselves on import.
# BACKBONE-IMPORTS (one line per module; helpers add theirs here)
import stetho.backbones.beats  # noqa: F401
import stetho.backbones.ced  # noqa: F401
import stetho.backbones.efficientat  # noqa: F401
import stetho.backbones.hf  # noqa: F401
import stetho.backbones.logmel  # noqa: F401

__all__ = [
    "MATRIX_KEYS",
    "Backbone",
    "CheckpointError",
    "PretrainedCfg",
    "create_backbone",
    "get_entry",
    "list_backbones",
    "load_checkpoint",
    "register_backbone",
    "resolve_checkpoint",
]
