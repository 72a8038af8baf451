"""BEATs backbone: key layout, parameter count, relative position buckets, checkpoint loading,
SDPA attention against an explicit reference written from the spec, and training behaviours."""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from stetho.backbones import CheckpointError, create_backbone, list_backbones, load_checkpoint
from stetho.backbones.beats import (
    BEATS_TINY_CONFIG,
    BEATs,
    BEATsConfig,
    relative_position_bucket,
)
from stetho.frontend.specaugment import SpecAugment, SpecAugmentConfig
from stetho.utils.config import ConfigError

# A small model with every iter3 mechanism switched on (DeepNorm, gated relative bias, ...).
SMALL = dict(
    embed_dim=32,
    encoder_layers=3,
    encoder_embed_dim=64,
    encoder_ffn_embed_dim=96,
    encoder_attention_heads=4,
    conv_pos=16,
    conv_pos_groups=4,
)


def _randomise(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every parameter non-trivial random values (gates, biases, norms included)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 0.5 if ("relative_attention_bias" in name or "grep" in name) else 0.1
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(scale * torch.randn(p.shape, generator=g))


def _small(seed: int = 0, **overrides: object) -> BEATs:
    model = BEATs(BEATsConfig(**{**SMALL, **overrides}))  # type: ignore[arg-type]
    _randomise(model, seed)
    return model.eval()


def _wave(batch: int, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / 16000
    tone = 0.2 * torch.sin(2 * math.pi * 440 * t * (1 + torch.arange(batch).unsqueeze(1)))
    return (tone + 0.05 * torch.randn(batch, n, generator=g)).float()


# -------------------------------------------------------------------------------------------
# layout of the iter3 model (built on the meta device: no memory, no init cost)
# -------------------------------------------------------------------------------------------
def _expected_iter3_keys(finetuned: bool = False) -> dict[str, tuple[int, ...]]:
    """The 250 state-dict keys and shapes listed in the spec (§1.7)."""
    keys: dict[str, tuple[int, ...]] = {
        "patch_embedding.weight": (512, 1, 16, 16),
        "layer_norm.weight": (512,),
        "layer_norm.bias": (512,),
        "post_extract_proj.weight": (768, 512),
        "post_extract_proj.bias": (768,),
        "encoder.pos_conv.0.bias": (768,),
        "encoder.pos_conv.0.weight_g": (1, 1, 128),
        "encoder.pos_conv.0.weight_v": (768, 48, 128),
        "encoder.layer_norm.weight": (768,),
        "encoder.layer_norm.bias": (768,),
    }
    for n in range(12):
        p = f"encoder.layers.{n}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            keys[f"{p}self_attn.{proj}.weight"] = (768, 768)
            keys[f"{p}self_attn.{proj}.bias"] = (768,)
        keys[f"{p}self_attn.relative_attention_bias.weight"] = (320, 12)
        keys[f"{p}self_attn.grep_linear.weight"] = (8, 64)
        keys[f"{p}self_attn.grep_linear.bias"] = (8,)
        keys[f"{p}self_attn.grep_a"] = (1, 12, 1, 1)
        for ln in ("self_attn_layer_norm", "final_layer_norm"):
            keys[f"{p}{ln}.weight"] = (768,)
            keys[f"{p}{ln}.bias"] = (768,)
        keys[f"{p}fc1.weight"] = (3072, 768)
        keys[f"{p}fc1.bias"] = (3072,)
        keys[f"{p}fc2.weight"] = (768, 3072)
        keys[f"{p}fc2.bias"] = (768,)
    if finetuned:
        keys["predictor.weight"] = (527, 768)
        keys["predictor.bias"] = (527,)
    return keys


@pytest.fixture(scope="module")
def iter3_meta() -> BEATs:
    with torch.device("meta"):
        return BEATs(BEATsConfig())


def test_iter3_keys_and_shapes(iter3_meta: BEATs) -> None:
    sd = iter3_meta.state_dict()
    expected = _expected_iter3_keys()
    assert len(expected) == 250
    assert set(sd) == set(expected)
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected


def test_iter3_parameter_count(iter3_meta: BEATs) -> None:
    unique = sum(p.numel() for p in iter3_meta.parameters())
    assert unique == 90_311_792
    assert sum(v.numel() for v in iter3_meta.state_dict().values()) == 90_354_032
    assert iter3_meta.describe()["params"] == 90_311_792
    assert iter3_meta.embed_dim == 768 and iter3_meta.num_layers == 12
    layer = iter3_meta.encoder.layers[0]
    assert abs(layer.alpha - 2.213364) < 1e-6  # DeepNorm α = 24^(1/4)


def test_finetuned_adds_predictor() -> None:
    with torch.device("meta"):
        model = BEATs(BEATsConfig(finetuned_model=True))
    sd = model.state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == _expected_iter3_keys(finetuned=True)
    assert sum(p.numel() for p in model.parameters()) == 90_311_792 + 405_263


def test_lora_targets_exist(iter3_meta: BEATs) -> None:
    names = dict(iter3_meta.named_modules())
    for matrix in ("q", "k", "v", "out", "fc1", "fc2"):
        found = iter3_meta.lora_module_names(matrix)
        assert len(found) == 12
        assert all(isinstance(names[n], torch.nn.Linear) for n in found)
    assert iter3_meta.lora_module_names("v", [11]) == ["encoder.layers.11.self_attn.v_proj"]
    assert BEATs.layers_pattern == "layers"


# -------------------------------------------------------------------------------------------
# relative position bias
# -------------------------------------------------------------------------------------------
BUCKET_GOLDEN = {
    -1000: 159, -800: 159, -500: 143, -200: 111, -100: 87, -81: 80, -80: 80, -79: 79, -10: 10,
    -1: 1, 0: 0, 1: 161, 10: 170, 79: 239, 80: 240, 81: 240, 100: 247, 200: 271, 500: 303,
    800: 319, 1000: 319,
}  # fmt: skip


def test_bucket_golden_table() -> None:
    rel = torch.tensor(list(BUCKET_GOLDEN))
    got = relative_position_bucket(rel, num_buckets=320, max_distance=800)
    assert got.tolist() == list(BUCKET_GOLDEN.values())


def test_bias_module_shared() -> None:
    model = _small()
    mods = [layer.self_attn.relative_attention_bias for layer in model.encoder.layers]
    assert all(m is mods[0] for m in mods)
    ptrs = {v.data_ptr() for k, v in model.state_dict().items() if "relative_attention_bias" in k}
    assert len(ptrs) == 1
    bias = model.encoder.layers[0].self_attn.compute_bias(5)  # (H, L, L)
    w = mods[0].weight
    assert bias.shape == (4, 5, 5)
    assert torch.equal(bias[:, 1, 3], w[162])  # r = j - i = 2 → bucket 160 + 2
    assert torch.equal(bias[:, 3, 1], w[2])


# -------------------------------------------------------------------------------------------
# explicit reference written from the spec (official "alpha = 32" attention formulation)
# -------------------------------------------------------------------------------------------
def _ref_bucket(r: int, num_buckets: int, max_distance: int) -> int:
    half = num_buckets // 2
    base = half if r > 0 else 0
    a = abs(r)
    max_exact = half // 2
    if a < max_exact:
        return base + a
    return base + min(
        half - 1,
        max_exact
        + int(math.log(a / max_exact) / math.log(max_distance / max_exact) * (half - max_exact)),
    )


def reference_tokens(model: BEATs, fbank: torch.Tensor) -> torch.Tensor:
    """Normalised fbank (B, T, 128) → tokens, computed with explicit operations only."""
    cfg = model.cfg
    p = cfg.input_patch_size
    x = F.conv2d(fbank.unsqueeze(1), model.patch_embedding.weight, stride=p)  # (B, E, Tp, Fp)
    b, e, tp, fp = x.shape
    x = x.permute(0, 2, 3, 1).reshape(b, tp * fp, e)  # time-major patches
    x = F.layer_norm(x, (e,), model.layer_norm.weight, model.layer_norm.bias, 1e-5)
    x = x @ model.post_extract_proj.weight.T + model.post_extract_proj.bias  # type: ignore[union-attr]
    length, d = x.shape[1], x.shape[2]
    conv = model.encoder.pos_conv[0]
    v, g = conv.weight_v, conv.weight_g
    w = v * g / torch.sqrt((v * v).sum(dim=(0, 1), keepdim=True))
    y = F.conv1d(
        x.transpose(1, 2), w, conv.bias, padding=cfg.conv_pos // 2, groups=cfg.conv_pos_groups
    )
    x = x + F.gelu(y[..., :length]).transpose(1, 2)
    enc_ln = model.encoder.layer_norm
    x = F.layer_norm(x, (d,), enc_ln.weight, enc_ln.bias, 1e-5)
    h = cfg.encoder_attention_heads
    hd = d // h
    table = model.encoder.layers[0].self_attn.relative_attention_bias.weight  # (buckets, H)
    idx = torch.tensor(
        [
            [_ref_bucket(j - i, cfg.num_buckets, cfg.max_distance) for j in range(length)]
            for i in range(length)
        ]
    )
    pos_bias = table[idx].permute(2, 0, 1)  # (H, L, L)
    alpha_dn = (2 * cfg.encoder_layers) ** 0.25
    for layer in model.encoder.layers:
        at = layer.self_attn

        def lin(t: torch.Tensor, m: torch.nn.Linear) -> torch.Tensor:
            return t @ m.weight.T + m.bias

        q_raw = lin(x, at.q_proj).view(b, length, h, hd).transpose(1, 2)  # (B, H, L, d)
        k = lin(x, at.k_proj).view(b, length, h, hd).transpose(1, 2)
        vv = lin(x, at.v_proj).view(b, length, h, hd).transpose(1, 2)
        q = q_raw * hd**-0.5 / 32.0
        scores = q @ k.transpose(-1, -2)
        scores = (scores - scores.max(dim=-1, keepdim=True).values) * 32.0
        gl = lin(q_raw, at.grep_linear).view(b, h, length, 2, 4).sum(-1).sigmoid()
        gate = gl[..., 0:1] * (gl[..., 1:2] * at.grep_a - 1.0) + 2.0  # (B, H, L, 1)
        probs = torch.softmax(scores + gate * pos_bias, dim=-1)
        attn = (probs @ vv).transpose(1, 2).reshape(b, length, d)
        attn = lin(attn, at.out_proj)
        ln1, ln2 = layer.self_attn_layer_norm, layer.final_layer_norm
        x = F.layer_norm(alpha_dn * x + attn, (d,), ln1.weight, ln1.bias, 1e-5)
        ff = lin(F.gelu(lin(x, layer.fc1)), layer.fc2)
        x = F.layer_norm(alpha_dn * x + ff, (d,), ln2.weight, ln2.bias, 1e-5)
    return x


def test_sdpa_matches_reference_attention() -> None:
    model = _small(seed=1)
    fbank = model.fbank_features(_wave(2, 48000))  # 3 s → 298 frames → 18·8 = 144 patches
    with torch.no_grad():
        got = model.forward_fbank(fbank)
        ref = reference_tokens(model, fbank)
    assert got.shape == (2, 144, 64)
    diff = (got - ref).abs().max().item()
    assert diff < 1e-5, diff
    assert ref.abs().max() > 0.5  # non-trivial outputs


def test_sdpa_gradients_match_reference() -> None:
    model = _small(seed=2, layer_wise_gradient_decay_ratio=1.0)
    fbank = model.fbank_features(_wave(2, 16000))
    weights = torch.randn(2, 48, 64, generator=torch.Generator().manual_seed(0))
    (model.forward_fbank(fbank) * weights).sum().backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    (reference_tokens(model, fbank) * weights).sum().backward()
    for name in (
        "encoder.layers.0.self_attn.relative_attention_bias.weight",
        "encoder.layers.1.self_attn.grep_linear.weight",
        "encoder.layers.1.self_attn.grep_a",
        "encoder.layers.0.self_attn.q_proj.weight",
        "encoder.pos_conv.0.weight_g",
    ):
        ref = dict(model.named_parameters())[name].grad
        assert ref is not None and ref.abs().max() > 0
        torch.testing.assert_close(got[name], ref, atol=1e-5, rtol=1e-4)


# -------------------------------------------------------------------------------------------
# shapes and batching
# -------------------------------------------------------------------------------------------
def test_ten_seconds_gives_496_tokens() -> None:
    model = create_backbone("beats-tiny")
    with torch.no_grad():
        tokens = model.forward_features(_wave(1, 160000))
        emb = model.embed(_wave(1, 160000))
    assert tokens.shape == (1, 496, 64)
    assert emb.shape == (1, 64)
    torch.testing.assert_close(emb, tokens.mean(dim=1))


def test_too_short_input_raises() -> None:
    model = create_backbone("beats-tiny")
    with pytest.raises(ValueError, match="at least 16 fbank frames"):
        model.forward_features(torch.zeros(1, 2799))
    assert model.forward_features(torch.zeros(1, 2800)).shape == (1, 8, 64)


def test_batched_equals_per_clip() -> None:
    model = _small(seed=3)
    wave = _wave(3, 20000, seed=3)
    with torch.no_grad():
        batched = model.forward_features(wave)
        single = torch.cat([model.forward_features(wave[i : i + 1]) for i in range(3)])
    diff = (batched - single).abs().max().item()
    assert diff < 1e-5, diff


# -------------------------------------------------------------------------------------------
# checkpoints
# -------------------------------------------------------------------------------------------
def _save_official(tmp_path: Path, model: BEATs, **extra: object) -> Path:
    cfg = model.cfg.to_dict()
    cfg["some_future_field"] = 123  # unknown keys must be ignored
    path = tmp_path / "BEATs_synthetic.pt"
    torch.save({"cfg": cfg, "model": model.state_dict(), **extra}, path)
    return path


def test_strict_round_trip(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = _small(seed=4)
    path = _save_official(tmp_path, model, label_dict={0: "/m/09x0r", 1: "/m/05zppz"})
    raw = load_checkpoint(path)  # weights_only=True works for the official layout
    assert set(raw) == {"cfg", "model", "label_dict"}
    with caplog.at_level(logging.DEBUG, logger="stetho.backbones"):
        loaded = create_backbone("beats", checkpoint=str(path))
    assert "some_future_field" in caplog.text
    assert isinstance(loaded, BEATs)
    assert loaded.cfg == model.cfg
    assert loaded.label_dict == {0: "/m/09x0r", 1: "/m/05zppz"}
    assert not loaded.training
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    ptrs = {v.data_ptr() for k, v in loaded.state_dict().items() if "relative_attention_bias" in k}
    assert len(ptrs) == 1
    wave = _wave(2, 12000)
    with torch.no_grad():
        assert torch.equal(loaded.forward_features(wave), model.forward_features(wave))


def test_overrides_apply_on_top_of_checkpoint_cfg(tmp_path: Path) -> None:
    model = _small(seed=5)
    path = _save_official(tmp_path, model)
    loaded = create_backbone("beats", checkpoint=str(path), encoder_layerdrop=0.2)
    assert isinstance(loaded, BEATs)
    assert loaded.cfg.encoder_layerdrop == 0.2
    assert loaded.encoder.layerdrop == 0.2


def test_missing_cfg_fields_take_official_class_defaults() -> None:
    cfg = BEATsConfig.from_official_cfg({"input_patch_size": 16, "gru_rel_pos": 1})
    assert cfg.gru_rel_pos is True
    assert cfg.deep_norm is False and cfg.relative_position_embedding is False
    assert cfg.max_distance == 1280 and cfg.dropout == 0.1
    assert cfg.layer_wise_gradient_decay_ratio == 1.0
    with pytest.raises(ConfigError, match="input_patch_size"):
        BEATsConfig.from_official_cfg({})


def test_strict_mismatch_raises(tmp_path: Path) -> None:
    model = _small(seed=6)
    sd = model.state_dict()
    sd.pop("encoder.layers.0.fc1.bias")
    path = tmp_path / "broken.pt"
    torch.save({"cfg": model.cfg.to_dict(), "model": sd}, path)
    with pytest.raises(CheckpointError, match=r"fc1\.bias"):
        create_backbone("beats", checkpoint=str(path))


def test_pickled_objects_need_trust(tmp_path: Path) -> None:
    model = _small(seed=7)
    path = _save_official(tmp_path, model, args=argparse.Namespace(task="x"))
    with pytest.raises(CheckpointError, match="trust"):
        create_backbone("beats", checkpoint=str(path))
    loaded = create_backbone("beats", checkpoint=str(path), trust_checkpoint=True)
    assert isinstance(loaded, BEATs) and loaded.cfg == model.cfg


def test_plain_state_dict_with_extra_config(tmp_path: Path) -> None:
    model = create_backbone("beats-tiny", encoder_layers=1)
    _randomise(model, 8)
    path = tmp_path / "plain.pt"
    torch.save(model.state_dict(), path)
    loaded = create_backbone("beats-tiny", checkpoint=str(path), **model.extra_config())
    wave = _wave(1, 8000)
    with torch.no_grad():
        assert torch.equal(loaded.embed(wave), model.embed(wave))


def test_offline_error_names_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STETHO_CACHE", str(tmp_path))
    monkeypatch.setenv("STETHO_OFFLINE", "1")
    with pytest.raises(CheckpointError, match=r"BEATs_iter3\.pt.*OneDrive"):
        create_backbone("beats", checkpoint="BEATs_iter3.pt")


def test_registry_and_pretrained_cfg() -> None:
    assert {"beats", "beats-tiny"} <= set(list_backbones())
    tiny = create_backbone("beats-tiny")
    pc = tiny.pretrained_cfg
    assert (pc.name, pc.sample_rate, pc.input_kind, pc.embed_dim) == (
        "beats-tiny",
        16000,
        "fbank",
        64,
    )
    assert tiny.num_layers == BEATS_TINY_CONFIG.encoder_layers == 2
    rebuilt = create_backbone("beats-tiny", **tiny.extra_config())
    assert isinstance(rebuilt, BEATs) and rebuilt.cfg == tiny.cfg
    with pytest.raises(ValueError, match="valid"):
        create_backbone("beats-tiny", no_such_field=1)


def test_beats_pretrained_cfg_metadata(iter3_meta: BEATs) -> None:
    pc = iter3_meta.pretrained_cfg
    assert pc.url is None and pc.filename == "BEATs_iter3.pt"
    assert pc.embed_dim == 768 and pc.input_kind == "fbank" and pc.sample_rate == 16000
    assert "unilm" in pc.source


# -------------------------------------------------------------------------------------------
# training behaviours
# -------------------------------------------------------------------------------------------
class _Recorder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[tuple[int, ...], int, int]] = []
        self.inner = SpecAugment(SpecAugmentConfig(freq_mask_width=40, time_mask_width=40))

    def forward(self, spec: torch.Tensor, time_dim: int, freq_dim: int) -> torch.Tensor:
        self.calls.append((tuple(spec.shape), time_dim, freq_dim))
        return self.inner.train(self.training)(spec, time_dim=time_dim, freq_dim=freq_dim)


def test_specaugment_only_in_train_mode() -> None:
    model = _small(seed=9)
    wave = _wave(2, 16000)
    with torch.no_grad():
        plain_eval = model.forward_features(wave)
        model.train()
        plain_train = model.forward_features(wave)  # all dropouts are 0
    assert torch.equal(plain_eval, plain_train)
    rec = _Recorder()
    model.set_spec_augment(rec)
    assert not any("spec_augment" in k for k in model.state_dict())
    torch.manual_seed(0)
    with torch.no_grad():
        augmented = model.train().forward_features(wave)
        again_eval = model.eval().forward_features(wave)
    assert rec.calls == [((2, 98, 128), 1, 2)]  # called once, (B, T, F) with time 1, freq 2
    assert not torch.allclose(augmented, plain_eval)
    assert torch.equal(again_eval, plain_eval)


def test_layer_wise_gradient_decay() -> None:
    base = _small(seed=10, encoder_layers=2, layer_wise_gradient_decay_ratio=1.0)
    decayed = _small(seed=10, encoder_layers=2, layer_wise_gradient_decay_ratio=0.6)
    decayed.load_state_dict(base.state_dict())
    fbank = base.fbank_features(_wave(1, 8000))
    for m in (base, decayed):
        m.train()
        m.forward_fbank(fbank).pow(2).sum().backward()
    grads = {n: p.grad for n, p in base.named_parameters()}
    for name, p in decayed.named_parameters():
        if "relative_attention_bias" in name or "k_proj.bias" in name:
            continue  # shared by both layers (mixed scales) / gradient is 0 in theory (softmax shift)
        if name.startswith("encoder.layers.1."):
            expected = 1.0
        elif name.startswith("encoder.layers.0."):
            expected = 0.6
        else:  # front of the network: two multipliers
            expected = 0.36
        ref = expected * grads[name]
        atol = 1e-5 * ref.abs().max().item()
        torch.testing.assert_close(p.grad, ref, rtol=1e-3, atol=atol, msg=name)
    with torch.no_grad():  # forward unchanged
        assert torch.equal(base.eval().forward_fbank(fbank), decayed.eval().forward_fbank(fbank))


def test_layerdrop_only_in_training() -> None:
    model = _small(seed=11, encoder_layerdrop=1.0)
    fbank = model.fbank_features(_wave(1, 8000))
    out = model.train().forward_fbank(fbank)
    out.sum().backward()
    assert all(p.grad is None for n, p in model.named_parameters() if ".fc1." in n)
    with torch.no_grad():
        assert not torch.allclose(model.eval().forward_fbank(fbank), out)


def test_classify_finetuned_and_error() -> None:
    model = _small(seed=12, finetuned_model=True, predictor_class=5)
    wave = _wave(2, 16000)
    with torch.no_grad():
        probs = model.classify(wave)
        tokens = model.forward_features(wave)
    assert model.predictor is not None
    expected = torch.sigmoid((tokens @ model.predictor.weight.T + model.predictor.bias).mean(dim=1))
    assert probs.shape == (2, 5)
    torch.testing.assert_close(probs, expected)
    with pytest.raises(RuntimeError, match="no AudioSet predictor"):
        _small().classify(wave)


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="deep_norm"):
        BEATsConfig(layer_norm_first=True, deep_norm=True)
    with pytest.raises(ConfigError, match="divisible"):
        BEATsConfig(encoder_embed_dim=100, encoder_attention_heads=12)
    cfg = BEATsConfig(layer_norm_first=True, deep_norm=False, **SMALL)  # type: ignore[arg-type]
    model = BEATs(cfg).eval()
    with torch.no_grad():
        assert torch.isfinite(model.forward_features(_wave(1, 4000))).all()
