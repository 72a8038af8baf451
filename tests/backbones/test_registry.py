"""Every registered backbone builds and embeds: on the meta device where the ops allow it, else on
the CPU with a tiny architecture of the same code (override table below)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from stetho.backbones import create_backbone, describe_backbones, get_entry, list_backbones

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
