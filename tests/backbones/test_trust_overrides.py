"""Trust in a pickled checkpoint comes from the caller only, never from an overrides dict (#22.1).

The checkpoint used here holds an object whose unpickling writes a marker file: if the marker
exists after a call, the file was unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from stetho.backbones import architecture_keys, architecture_overrides, create_backbone
from stetho.backbones.checkpoint import CheckpointError
from stetho.backbones.features import FeatureConfig, FeatureExtractor
from stetho.utils.config import ConfigError

NAME = "efficientat-tiny"


class _Marker:
    """Unpickling this object writes ``path`` (a stand-in for arbitrary code)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[Path, str]]:
        return (Path.write_text, (self.path, "unpickled"))


@pytest.fixture
def pickled(tmp_path: Path) -> tuple[Path, Path]:
    """``(checkpoint, marker)``: a valid EfficientAT state dict plus the marker object."""
    marker = tmp_path / "marker.txt"
    ckpt = tmp_path / "pickled.pt"
    state = create_backbone(NAME).state_dict()
    torch.save({"model": state, "extra": _Marker(marker)}, ckpt)
    return ckpt, marker


def test_the_marker_works_when_the_caller_trusts(pickled: tuple[Path, Path]) -> None:
    ckpt, marker = pickled
    with pytest.raises(CheckpointError, match="pickled"):
        create_backbone(NAME, checkpoint=str(ckpt))
    assert not marker.exists()
    create_backbone(NAME, checkpoint=str(ckpt), trust_checkpoint=True)
    assert marker.read_text() == "unpickled"


def test_ensemble_member_overrides_cannot_grant_trust(
    pickled: tuple[Path, Path], tmp_path: Path
) -> None:
    """An ensemble member's ``feature.overrides`` as a tampered folder would hold it."""
    ckpt, marker = pickled
    doc = {"backbone": NAME, "checkpoint": str(ckpt), "overrides": {"trust_checkpoint": True}}
    cfg = FeatureConfig.from_dict(json.loads(json.dumps(doc)))
    src = f"{tmp_path / 'config.json'} (ensemble.members[0].feature.overrides)"
    with pytest.raises(ConfigError, match="trust_checkpoint") as err:
        FeatureExtractor(cfg, source=src)
    assert src in str(err.value) and "--trust-checkpoint" in str(err.value)
    assert not marker.exists()


def test_folder_overrides_checked_before_create_backbone(
    pickled: tuple[Path, Path], tmp_path: Path
) -> None:
    """What a detector folder's loader does with ``experiment.backbone.overrides``."""
    ckpt, marker = pickled
    cfg_path = tmp_path / "config.json"
    cfg_path.write_text(json.dumps({"overrides": {"trust_checkpoint": True}}))
    read = json.loads(cfg_path.read_text())["overrides"]
    with pytest.raises(ConfigError, match=r"'trust_checkpoint'.*refused") as err:
        kwargs = architecture_overrides(NAME, read, source=str(cfg_path))
        create_backbone(NAME, checkpoint=str(ckpt), **kwargs)
    assert str(cfg_path) in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("key", ["trust", "checkpoint"])
def test_other_trust_spellings_are_refused(key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        architecture_overrides(NAME, {key: True}, source="f.json")


def test_create_backbone_refuses_non_architecture_keys(pickled: tuple[Path, Path]) -> None:
    ckpt, marker = pickled
    with pytest.raises(ConfigError, match="'trust'"):
        create_backbone(NAME, checkpoint=str(ckpt), **{"trust": True})
    with pytest.raises(ConfigError, match="True or False"):
        create_backbone(NAME, checkpoint=str(ckpt), trust_checkpoint="yes")  # type: ignore[arg-type]
    assert not marker.exists()


def test_unknown_keys_name_the_source_and_the_key() -> None:
    with pytest.raises(ConfigError, match=r"run/config\.json: 'bogus' is not an architecture"):
        architecture_overrides(NAME, {"n_mels": 64, "bogus": 1}, source="run/config.json")
    with pytest.raises(ConfigError, match="mapping"):
        architecture_overrides(NAME, ["n_mels"], source="run/config.json")  # type: ignore[arg-type]


def test_architecture_keys_pass_and_rebuild_the_model() -> None:
    model = create_backbone(NAME)
    keys = architecture_keys(NAME)
    assert set(model.extra_config()) <= keys
    assert not keys & {"checkpoint", "trust_checkpoint"}
    got = architecture_overrides(NAME, {"n_mels": 64}, source="x")
    assert got == {"n_mels": 64}
    assert architecture_overrides(NAME, None, source="x") == {}
    rebuilt = create_backbone(
        NAME, **architecture_overrides(NAME, model.extra_config(), source="x")
    )
    assert rebuilt.extra_config() == model.extra_config()


@pytest.mark.parametrize("name", ["logmel", "beats-tiny", "ced-test", "wav2vec2-tiny"])
def test_every_family_lists_its_settings(name: str) -> None:
    keys = architecture_keys(name)
    assert keys and not keys & {"checkpoint", "trust_checkpoint", "trust"}
