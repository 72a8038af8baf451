"""CED backbones: sizes, original/HF checkpoint loading with the qkv split, chunking, modes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from stetho.backbones import CheckpointError, create_backbone, list_backbones
from stetho.backbones.ced import CED
from stetho.frontend.ced_mel import htk_mel_filterbank

SR = 16000
D, DEPTH, HEADS = 32, 2, 2  # ced-test


def _original_state_dict(
    dim: int = D, depth: int = DEPTH, seed: int = 0
) -> dict[str, torch.Tensor]:
    """A random state dict in the original (Zenodo) layout of spec §2.5, fused qkv included."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape: int, scale: float = 0.2) -> torch.Tensor:
        return scale * torch.randn(*shape, generator=g)

    sd = {
        "time_pos_embed": rnd(1, dim, 1, 1012 // 16),
        "freq_pos_embed": rnd(1, dim, 64 // 16, 1),
        "front_end.0.spectrogram.window": torch.hann_window(512),
        "front_end.0.mel_scale.fb": htk_mel_filterbank(257, 0.0, 8000.0, 64, SR),
        "init_bn.1.weight": 1.0 + rnd(64),
        "init_bn.1.bias": rnd(64),
        "init_bn.1.running_mean": -50.0 + 10.0 * torch.randn(64, generator=g),
        "init_bn.1.running_var": 300.0 + 100.0 * torch.rand(64, generator=g),
        "init_bn.1.num_batches_tracked": torch.tensor(12345),
        "patch_embed.proj.weight": rnd(dim, 1, 16, 16, scale=0.05),
        "patch_embed.proj.bias": rnd(dim),
        "norm.weight": 1.0 + rnd(dim),
        "norm.bias": rnd(dim),
        "outputlayer.0.weight": 1.0 + rnd(dim),
        "outputlayer.0.bias": rnd(dim),
        "outputlayer.1.weight": rnd(527, dim),
        "outputlayer.1.bias": rnd(527),
    }
    for i in range(depth):
        p = f"blocks.{i}."
        sd |= {
            p + "norm1.weight": 1.0 + rnd(dim),
            p + "norm1.bias": rnd(dim),
            p + "attn.qkv.weight": rnd(3 * dim, dim),
            p + "attn.qkv.bias": rnd(3 * dim),
            p + "attn.proj.weight": rnd(dim, dim),
            p + "attn.proj.bias": rnd(dim),
            p + "norm2.weight": 1.0 + rnd(dim),
            p + "norm2.bias": rnd(dim),
            p + "mlp.fc1.weight": rnd(4 * dim, dim),
            p + "mlp.fc1.bias": rnd(4 * dim),
            p + "mlp.fc2.weight": rnd(dim, 4 * dim),
            p + "mlp.fc2.bias": rnd(dim),
        }
    return sd


def _reference_tokens(
    sd: dict[str, torch.Tensor], mel: torch.Tensor, depth: int = DEPTH, heads: int = HEADS
) -> torch.Tensor:
    """Fused-qkv CED forward written out with explicit attention: dB mel (B, 64, T≤1012) -> tokens."""
    bn = "init_bn.1."
    x = (mel - sd[bn + "running_mean"][:, None]) / torch.sqrt(
        sd[bn + "running_var"][:, None] + 1e-5
    )
    x = x * sd[bn + "weight"][:, None] + sd[bn + "bias"][:, None]
    x = F.conv2d(x[:, None], sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=16)
    x = x + sd["time_pos_embed"][..., : x.shape[-1]] + sd["freq_pos_embed"]
    B, dim = x.shape[:2]
    x = x.reshape(B, dim, -1).transpose(1, 2)  # (B, F'·T', D), frequency-major
    N, hd = x.shape[1], dim // heads
    for i in range(depth):
        p = f"blocks.{i}."
        h = F.layer_norm(x, (dim,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps=1e-6)
        qkv = F.linear(h, sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"])
        q, k, v = qkv.reshape(B, N, 3, heads, hd).permute(2, 0, 3, 1, 4)  # each (B, H, N, hd)
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(hd), dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, N, dim)
        x = x + F.linear(y, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        h = F.layer_norm(x, (dim,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=1e-6)
        h = F.gelu(F.linear(h, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"]))
        x = x + F.linear(h, sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
    return F.layer_norm(x, (dim,), sd["norm.weight"], sd["norm.bias"], eps=1e-6)


def _reference_probs(sd: dict[str, torch.Tensor], tokens: torch.Tensor) -> torch.Tensor:
    h = F.layer_norm(
        tokens.mean(1),
        (tokens.shape[-1],),
        sd["outputlayer.0.weight"],
        sd["outputlayer.0.bias"],
        eps=1e-5,
    )
    return torch.sigmoid(F.linear(h, sd["outputlayer.1.weight"], sd["outputlayer.1.bias"]))


def _wave(batch: int, seconds: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    n = int(seconds * SR)
    t = torch.arange(n) / SR
    freqs = 200.0 + 1500.0 * torch.rand(batch, 1, generator=g)
    return 0.2 * torch.sin(2 * torch.pi * freqs * t) + 0.02 * torch.randn(batch, n, generator=g)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> tuple[CED, dict[str, torch.Tensor]]:
    sd = _original_state_dict()
    path = tmp_path_factory.mktemp("ced") / "audiotransformer_test.pt"
    torch.save(sd, path)
    model = create_backbone("ced-test", checkpoint=str(path))
    assert isinstance(model, CED)
    return model, sd


# -- sizes and names ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "total_m", "encoder_m", "dim"),
    [
        ("ced-tiny", 5.503, 5.401, 192),
        ("ced-mini", 9.697, 9.561, 256),
        ("ced-small", 21.623, 21.419, 384),
        ("ced-base", 85.712, 85.305, 768),
    ],
)
def test_parameter_counts_spec_2_1(name: str, total_m: float, encoder_m: float, dim: int) -> None:
    with torch.device("meta"):
        model = create_backbone(name)
    total = sum(p.numel() for p in model.parameters())
    head = sum(p.numel() for p in model.outputlayer.parameters())
    assert round(total / 1e6, 3) == total_m
    assert round((total - head) / 1e6, 3) == encoder_m
    assert model.embed_dim == dim and model.num_layers == 12
    # names: the original 161 keys once q/k/v are fused back (spec §2.5)
    fused = {
        k.replace("q_proj", "qkv")
        for k in model.state_dict()
        if "k_proj" not in k and "v_proj" not in k
    }
    assert len(fused) == 161
    assert fused == set(_original_state_dict(dim=1, depth=12))


def test_registry_and_pretrained_cfg() -> None:
    names = set(list_backbones())
    assert {"ced-tiny", "ced-mini", "ced-small", "ced-base", "ced-test"} <= names
    with torch.device("meta"):
        model = create_backbone("ced-small")
    cfg = model.pretrained_cfg
    assert cfg.hub_id == "mispeech/ced-small" and cfg.sample_rate == SR
    assert cfg.url is not None and cfg.filename is not None
    assert cfg.url.startswith("https://zenodo.org/record/") and cfg.url.endswith(cfg.filename)


def test_lora_templates_name_linear_modules() -> None:
    model = create_backbone("ced-test")
    modules = dict(model.named_modules())
    for key in ("q", "k", "v", "out", "fc1", "fc2"):
        names = model.lora_module_names(key)
        assert len(names) == DEPTH
        assert all(isinstance(modules[n], nn.Linear) for n in names)
    assert model.layers_pattern == "blocks"
    assert isinstance(modules["blocks"], nn.ModuleList)


# -- checkpoint loading ------------------------------------------------------------------------
def test_original_checkpoint_loads_and_split_equals_fused(
    loaded: tuple[CED, dict[str, torch.Tensor]],
) -> None:
    model, sd = loaded
    q, k, v = sd["blocks.1.attn.qkv.weight"].chunk(3)
    assert torch.equal(model.blocks[1].attn.q_proj.weight, q)
    assert torch.equal(model.blocks[1].attn.k_proj.weight, k)
    assert torch.equal(model.blocks[1].attn.v_proj.weight, v)
    wave = _wave(2, 10.0)
    with torch.no_grad():
        tokens = model.forward_features(wave)
        ref = _reference_tokens(sd, model.mel(wave))
        probs = model.classify(wave)
    assert tokens.shape == (2, 248, D)  # spec §2.3: 10 s -> 4 x 62 tokens
    # fp32: SDPA vs explicit softmax rounding only (tokens are O(1))
    assert (tokens - ref).abs().max().item() < 1e-5
    torch.testing.assert_close(probs, _reference_probs(sd, ref), atol=1e-6, rtol=0)
    # fp64: the split model equals the fused computation to 1e-6 (spec §6.4) with a wide margin
    model64 = create_backbone("ced-test").double()
    model64.load_state_dict(model.state_dict())
    sd64 = {k: v.double() if v.is_floating_point() else v for k, v in sd.items()}
    with torch.no_grad():
        mel = model64.mel(wave)  # fp32 front-end, shared by both sides
        ref64 = _reference_tokens(sd64, mel.double())
        tokens64 = model64.forward_spectrogram(mel)
        emb64 = model64.embed(wave)
    assert tokens64.dtype == torch.float64
    assert (tokens64 - ref64).abs().max().item() < 1e-6
    torch.testing.assert_close(emb64, ref64.mean(1), atol=1e-6, rtol=0)


def test_model_wrapper_checkpoint_loads(tmp_path: Path) -> None:
    sd = _original_state_dict(seed=3)
    path = tmp_path / "wrapped.pt"
    torch.save({"model": sd, "epoch": 7}, path)
    model = create_backbone("ced-test", checkpoint=str(path))
    assert torch.equal(model.state_dict()["norm.weight"], sd["norm.weight"])
    assert torch.equal(model.state_dict()["init_bn.1.running_var"], sd["init_bn.1.running_var"])


def test_hf_layout_folder_loads(
    tmp_path: Path, loaded: tuple[CED, dict[str, torch.Tensor]]
) -> None:
    ref_model, sd = loaded
    hf = {}
    for key, value in sd.items():
        if key.startswith("front_end"):
            continue  # the HF converter drops the front-end buffers
        key = key.replace("init_bn.1.", "init_bn.")
        hf[key if key.startswith("outputlayer") else "encoder." + key] = value.contiguous()
    save_file(hf, str(tmp_path / "model.safetensors"))
    model = create_backbone("ced-test", checkpoint=str(tmp_path))
    want = ref_model.state_dict()
    got = model.state_dict()
    assert set(got) == set(want)
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_strict_loading_errors(tmp_path: Path) -> None:
    sd = _original_state_dict()
    del sd["norm.bias"]
    torch.save(sd, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match=r"norm\.bias"):
        create_backbone("ced-test", checkpoint=str(tmp_path / "missing.pt"))
    torch.save(_original_state_dict(dim=64), tmp_path / "wide.pt")
    with pytest.raises(CheckpointError, match="embed_dim=32"):
        create_backbone("ced-test", checkpoint=str(tmp_path / "wide.pt"))
    with pytest.raises(CheckpointError, match="not found"):
        create_backbone("ced-test", checkpoint=str(tmp_path / "absent.pt"))


# -- long inputs -------------------------------------------------------------------------------
def test_chunking_25s(loaded: tuple[CED, dict[str, torch.Tensor]]) -> None:
    model, sd = loaded
    wave = _wave(2, 25.0, seed=5)
    with torch.no_grad():
        tokens = model.forward_features(wave)
        mel = model.mel(wave)  # (2, 64, 2501)
        emb = model.embed(wave)
        probs = model.classify(wave)
        alone = [model.embed(wave[i : i + 1]) for i in range(2)]
    assert mel.shape[-1] == 2501 and model.num_chunks(2501) == 3
    assert tokens.shape == (2, 3 * 4 * 63, D)
    # reference: normalise, cut 1012-frame chunks, zero-pad the last in normalised space
    bn = "init_bn.1."
    scale = sd[bn + "weight"][:, None] / torch.sqrt(sd[bn + "running_var"][:, None] + 1e-5)
    norm = (mel - sd[bn + "running_mean"][:, None]) * scale + sd[bn + "bias"][:, None]
    chunks = [norm[..., :1012], norm[..., 1012:2024], F.pad(norm[..., 2024:], (0, 1012 - 477))]
    # undo init_bn on the padded chunk so _reference_tokens (which applies it) sees zeros after it
    per_chunk = []
    for c in chunks:
        mel_like = (c - sd[bn + "bias"][:, None]) / scale + sd[bn + "running_mean"][:, None]
        per_chunk.append(_reference_tokens(sd, mel_like))  # (2, 252, D)
    ref = torch.cat(per_chunk, dim=1)
    assert (tokens - ref).abs().max().item() < 1e-5
    torch.testing.assert_close(
        emb, torch.stack([t.mean(1) for t in per_chunk]).mean(0), atol=1e-5, rtol=0
    )
    ref_probs = torch.stack([_reference_probs(sd, t) for t in per_chunk]).mean(0)
    torch.testing.assert_close(probs, ref_probs, atol=1e-6, rtol=0)
    # no cross-clip mixing: each clip alone equals its row in the batch
    for i in range(2):
        torch.testing.assert_close(alone[i][0], emb[i], atol=1e-5, rtol=0)


def test_pad_last_false_drops_short_chunk(loaded: tuple[CED, dict[str, torch.Tensor]]) -> None:
    model = loaded[0]
    dropping = create_backbone("ced-test", pad_last=False)
    dropping.load_state_dict(model.state_dict())
    wave = _wave(1, 25.0, seed=6)
    with torch.no_grad():
        full = model.forward_features(wave)
        kept = dropping.forward_features(wave)
    assert kept.shape == (1, 2 * 252, D)
    torch.testing.assert_close(kept, full[:, : 2 * 252], atol=1e-6, rtol=0)


def test_short_input_slices_time_positions(loaded: tuple[CED, dict[str, torch.Tensor]]) -> None:
    model, sd = loaded
    wave = _wave(1, 2.0, seed=7)  # 201 frames -> 12 time patches
    with torch.no_grad():
        tokens = model.forward_features(wave)
        ref = _reference_tokens(sd, model.mel(wave))
    assert tokens.shape == (1, 4 * 12, D)
    assert (tokens - ref).abs().max().item() < 1e-5
    with pytest.raises(ValueError, match="too short"):
        model.forward_features(torch.zeros(1, 2000))


# -- training behaviour ------------------------------------------------------------------------
def test_init_bn_stays_eval_in_train(loaded: tuple[CED, dict[str, torch.Tensor]]) -> None:
    model = create_backbone("ced-test")
    model.load_state_dict(loaded[0].state_dict())
    before = {k: v.clone() for k, v in model.init_bn.state_dict().items()}
    model.train()
    assert model.training and model.blocks[0].training
    assert not model.init_bn.training and not model.init_bn[1].training
    wave = _wave(2, 2.0, seed=8)
    out = model.embed(wave)
    out.sum().backward()
    for k, v in model.init_bn.state_dict().items():
        assert torch.equal(v, before[k]), k
    model.eval()
    torch.testing.assert_close(model.embed(wave), out.detach(), atol=1e-6, rtol=0)


class _RecordingAugment(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[torch.Tensor, int, int]] = []

    def forward(self, spec: torch.Tensor, time_dim: int, freq_dim: int) -> torch.Tensor:
        self.calls.append((spec.detach().clone(), time_dim, freq_dim))
        return spec + 30.0


def test_spec_augment_only_in_train_mode(loaded: tuple[CED, dict[str, torch.Tensor]]) -> None:
    model = create_backbone("ced-test")
    model.load_state_dict(loaded[0].state_dict())
    aug = _RecordingAugment()
    model.set_spec_augment(aug)
    wave = _wave(2, 3.0, seed=9)
    with torch.no_grad():
        clean = model.embed(wave)
        assert aug.calls == []
        model.train()
        augmented = model.embed(wave)
    assert len(aug.calls) == 1
    spec, time_dim, freq_dim = aug.calls[0]
    assert spec.shape == (2, 64, 301)
    assert spec.shape[time_dim] == 301 and spec.shape[freq_dim] == 64
    # it receives the dB mel, before init_bn
    torch.testing.assert_close(spec, model.mel(wave), atol=0, rtol=0)
    assert (augmented - clean).abs().max() > 1e-3


def test_extra_config_rebuilds() -> None:
    model = create_backbone("ced-test", depth=3, pad_last=False)
    again = create_backbone("ced-test", **model.extra_config())
    assert again.cfg == model.cfg
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert shapes == {k: v.shape for k, v in again.state_dict().items()}
    with pytest.raises(ValueError, match="valid"):
        create_backbone("ced-test", embed_size=4)
