"""The registry: every registered backbone builds (meta device, full size) and embeds (CPU, tiny
architecture of the same code); ``describe_backbones`` facts."""

from __future__ import annotations

import time
from typing import Any

import pytest
import torch

from stetho.backbones import (
    create_backbone,
    describe_backbones,
    get_entry,
    list_backbones,
    registry,
)
from stetho.backbones.registry import BackboneEntry

MY_BACKBONES = [
    "efficientat-mn01",
    "efficientat-mn02",
    "efficientat-mn04",
    "efficientat-mn05",
    "efficientat-mn10",
    "efficientat-mn20",
    "efficientat-mn30",
    "efficientat-mn40",
    "efficientat-tiny",
    "logmel",
]

# Tiny architectures per family (the same code path, a few thousand parameters).
_TINY: dict[str, dict[str, Any]] = {
    "beats": dict(
        embed_dim=32, encoder_layers=1, encoder_embed_dim=32, encoder_ffn_embed_dim=64,
        encoder_attention_heads=2, conv_pos=16, conv_pos_groups=4,
    ),
    "ced": dict(embed_dim=32, depth=1, num_heads=2),
    "efficientat": dict(width_mult=0.1),
    "wav2vec2": dict(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
    ),
    "whisper-encoder": dict(
        d_model=64, encoder_layers=1, encoder_attention_heads=4, encoder_ffn_dim=128,
        clip_seconds=2.0,
    ),
    "qwen-audio-encoder": dict(
        d_model=64, encoder_layers=1, encoder_attention_heads=4, encoder_ffn_dim=128,
        clip_seconds=2.0, output_dim=96,
    ),
    "logmel": {},
}  # fmt: skip


def _family(name: str) -> str:
    return next(f for f in sorted(_TINY, key=len, reverse=True) if name.startswith(f))


@pytest.mark.parametrize("name", list_backbones())
def test_every_registered_backbone_builds_and_embeds(name: str) -> None:
    entry = get_entry(name)
    # the real architecture builds without memory or download
    with torch.device("meta"):
        full = entry.factory(checkpoint=None)
    assert full.embed_dim > 0 and full.sample_rate > 0
    assert full.input_kind in ("fbank", "waveform")
    n_params = sum(p.numel() for p in full.parameters())
    assert (n_params == 0) == (name == "logmel")
    # and one second of audio becomes one embedding per clip (tiny architecture, real numbers)
    model = create_backbone(name, **_TINY[_family(name)])
    model.eval()
    wave = torch.randn(2, model.sample_rate, generator=torch.Generator().manual_seed(0)) * 0.1
    with torch.no_grad():
        emb = model.embed(wave)
    assert emb.shape == (2, model.embed_dim)
    assert torch.isfinite(emb).all()
    assert not torch.equal(emb[0], emb[1])  # different clips, different embeddings


def test_describe_lists_every_backbone() -> None:
    rows = describe_backbones()
    assert [r["name"] for r in rows] == list_backbones()
    assert all("error" not in r for r in rows), [r for r in rows if "error" in r]


# -- describe_backbones ----------------------------------------------------------------------


def test_describe_my_backbones_quickly() -> None:
    start = time.perf_counter()
    rows = {r["name"]: r for r in describe_backbones(MY_BACKBONES)}
    assert time.perf_counter() - start < 10.0
    assert set(rows) == set(MY_BACKBONES)
    mn04 = rows["efficientat-mn04"]
    assert mn04["params"] == 983_599
    assert mn04["sample_rate"] == 32000 and mn04["embed_dim"] == 384 and mn04["input"] == "fbank"
    assert mn04["weights"].endswith("/v0.0.1/mn04_as_mAP_432.pt")
    assert mn04["needs_weights"] is True and "error" not in mn04
    assert rows["efficientat-mn40"]["params"] == 68_427_303
    assert rows["efficientat-mn40"]["embed_dim"] == 3840
    logmel = rows["logmel"]
    assert logmel["params"] == 0 and logmel["needs_weights"] is False
    assert logmel["sample_rate"] == 16000 and logmel["embed_dim"] == 384
    assert rows["efficientat-tiny"]["needs_weights"] is False


def test_meta_count_equals_a_real_build() -> None:
    (row,) = describe_backbones(["efficientat-mn10"])
    model = create_backbone("efficientat-mn10")
    assert row["params"] == sum(p.numel() for p in model.parameters()) == 4_876_831


def test_describe_survives_a_broken_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(checkpoint: str | None = None, **_: object) -> torch.nn.Module:
        raise RuntimeError("cannot build on meta")

    entry = BackboneEntry("broken-test", broken, "a broken backbone", True)
    monkeypatch.setitem(registry._REGISTRY, "broken-test", entry)
    (row,) = describe_backbones(["broken-test"])
    assert row["name"] == "broken-test" and row["params"] is None
    assert "cannot build on meta" in row["error"]


def test_describe_unknown_name_lists_choices() -> None:
    with pytest.raises(KeyError, match="efficientat-mn04"):
        describe_backbones(["no-such-backbone"])
