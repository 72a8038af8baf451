"""EfficientAT MobileNetV3: layout, registry, forward contract, and the real mn04 checkpoint."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import resample_poly
from torch import nn

from stetho.backbones import CheckpointError, create_backbone, get_entry, list_backbones
from stetho.backbones.efficientat import (
    EFFICIENTAT_RELEASES,
    EfficientAT,
    EfficientATConfig,
    make_divisible,
)
from stetho.backbones.tagging import audioset_labels

MN04_SHA256 = "899a8c6217063f6941793102a2780b3dd788ab11fce468d9cf5f0577c453321c"
RELEASE_URL = "https://github.com/fschmid56/EfficientAT/releases/download/v0.0.1/"
CLIPS = Path("data/dcase2023t2_mini/dev_data/raw")


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # Conv inference with 2 intra-op threads on 2 shared, oversubscribed cores ran 10-30x slower
    # (0.7 s -> 18 s for the 28 clips); one thread is fast and stable.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def two_tones(sr: int = 32000, seconds: float = 1.0) -> torch.Tensor:
    """Spec §7.4 signal: 0.1 sin(440 Hz) + 0.05 sin(3000 Hz), float64 → float32, shape (1, N)."""
    n = np.arange(int(sr * seconds), dtype=np.float64)
    x = 0.1 * np.sin(2 * np.pi * 440 * n / sr) + 0.05 * np.sin(2 * np.pi * 3000 * n / sr)
    return torch.from_numpy(x.astype(np.float32))[None]


def load_clip_32k(path: Path) -> torch.Tensor:
    """A 16 kHz clip upsampled ×2 with resample_poly, as in spec §7.4 → (1, N)."""
    y, sr = sf.read(path, dtype="float32")
    assert sr == 16000
    return torch.from_numpy(resample_poly(y, 2, 1).astype(np.float32))[None]


@pytest.fixture(scope="module")
def mn04(mn04_checkpoint: Path) -> EfficientAT:
    model = create_backbone("efficientat-mn04", checkpoint=str(mn04_checkpoint))
    assert isinstance(model, EfficientAT)
    return model


@pytest.fixture(scope="module")
def tiny() -> EfficientAT:
    torch.manual_seed(0)
    model = create_backbone("efficientat-tiny")
    assert isinstance(model, EfficientAT)
    return model


# -- architecture ----------------------------------------------------------------------------


def test_make_divisible() -> None:
    assert make_divisible(16 * 0.4) == 8
    assert make_divisible(24 * 0.4) == 16  # 8 would lose more than 10 %
    assert make_divisible(672 * 0.4) == 272
    assert make_divisible(1280 * 0.4) == 512
    assert make_divisible(1.6) == 8


def test_mn04_channels_follow_the_spec() -> None:
    model = create_backbone("efficientat-mn04")
    assert isinstance(model, EfficientAT)
    blocks = list(model.features)[1:16]
    outs = [b.block[-1][0].out_channels for b in blocks]
    assert outs == [8, 16, 16, 16, 16, 16, 32, 32, 32, 32, 48, 48, 64, 64, 64]
    assert model.features[0][0].out_channels == 8
    assert model.features[16][0].out_channels == 384 == model.embed_dim
    assert model.classifier is not None
    assert model.classifier[2].out_features == 512
    assert model.classifier[5].out_features == 527
    # Block 1 has no expand conv: depthwise at block.0, project at block.1.
    assert len(blocks[0].block) == 2 and blocks[0].block[0][0].groups == 8


def test_random_mn04_state_dict_layout() -> None:
    sd = create_backbone("efficientat-mn04").state_dict()
    assert len(sd) == 312
    assert not any(k.startswith("frontend") for k in sd)
    assert "features.4.block.2.conc_se_layers.0.fc1.weight" in sd
    assert sd["features.12.block.2.conc_se_layers.0.fc1.weight"].shape == (72, 272)
    assert {k for k in sd if k.startswith("classifier")} == {
        "classifier.2.weight",
        "classifier.2.bias",
        "classifier.5.weight",
        "classifier.5.bias",
    }
    # 46 conv+BN pairs (stem, 2 + 14·3 block convs, last conv), 8 SE blocks, 2 head Linears.
    assert sum(k.endswith("num_batches_tracked") for k in sd) == 46
    model = create_backbone("efficientat-mn04")
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 983_599


# -- registry --------------------------------------------------------------------------------


@pytest.mark.parametrize("release", sorted(EFFICIENTAT_RELEASES))
def test_registry_entries(release: str) -> None:
    name = f"efficientat-{release}"
    assert name in list_backbones()
    assert get_entry(name).needs_weights
    width, filename, sha = EFFICIENTAT_RELEASES[release]
    assert filename.startswith(f"{release}_as_mAP_") and filename.endswith(".pt")
    assert width == int(release[2:]) / 10
    with torch.device("meta"):
        model = create_backbone(name)
    cfg = model.pretrained_cfg
    assert cfg.name == name
    assert cfg.url == RELEASE_URL + filename and cfg.filename == filename
    assert cfg.sha256 == (MN04_SHA256 if release == "mn04" else None) == sha
    assert cfg.sample_rate == 32000 and cfg.input_kind == "fbank"
    assert cfg.embed_dim == model.embed_dim == 6 * make_divisible(160 * width)
    assert model.features[16][0].out_channels == cfg.embed_dim
    assert "MIT" in cfg.license


def test_embed_dims_of_the_family() -> None:
    dims = {
        r: EfficientATConfig(width_mult=EFFICIENTAT_RELEASES[r][0]).embed_dim
        for r in EFFICIENTAT_RELEASES
    }
    assert dims == {
        "mn01": 96,
        "mn02": 192,
        "mn04": 384,
        "mn05": 480,
        "mn10": 960,
        "mn20": 1920,
        "mn30": 2880,
        "mn40": 3840,
    }


def test_tiny_variant_and_no_lora(tiny: EfficientAT) -> None:
    assert not get_entry("efficientat-tiny").needs_weights
    assert tiny.config.width_mult == 0.1 and tiny.embed_dim == 96
    assert tiny.pretrained_cfg.url is None
    assert tiny.num_layers == 0
    assert tiny.lora_target_templates == {}
    with pytest.raises(ValueError, match="no LoRA target"):
        tiny.lora_module_names("q")


def test_unknown_override_lists_valid_keys() -> None:
    with pytest.raises(ValueError, match="width_mult"):
        create_backbone("efficientat-tiny", depth=3)


def test_extra_config_rebuilds_the_same_model(tiny: EfficientAT) -> None:
    rebuilt = create_backbone("efficientat-tiny", **tiny.extra_config())
    a, b = tiny.state_dict(), rebuilt.state_dict()
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
    other = create_backbone("efficientat-tiny", width_mult=0.2)
    assert other.embed_dim == 192


# -- forward contract ------------------------------------------------------------------------


def test_tokens_and_pooling(tiny: EfficientAT) -> None:
    wave = torch.randn(2, 32000) * 0.1
    with torch.no_grad():
        fmap = tiny.feature_map(wave)
        tokens = tiny.forward_features(wave)
        emb = tiny.embed(wave)
        called = tiny(wave)
        probs = tiny.classify(wave)
    assert fmap.shape == (2, 96, 4, 4)  # 128 x 100 mel grid downsampled 32x (ceil)
    assert tokens.shape == (2, 16, 96)
    assert torch.allclose(tokens[:, 5], fmap[:, :, 1, 1])  # frequency-major token order
    assert torch.allclose(emb, fmap.mean(dim=(2, 3)), atol=1e-6)
    assert torch.equal(called, emb)
    assert probs.shape == (2, 527) and torch.all((probs > 0) & (probs < 1))


def test_ten_seconds_gives_128_tokens(tiny: EfficientAT) -> None:
    with torch.no_grad():
        assert tiny.forward_features(torch.zeros(1, 320000)).shape == (1, 128, 96)


class RecordingMask(nn.Module):
    """SpecAugment stand-in: records the axes and zeroes the first 8 frames."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[tuple[int, ...], int, int]] = []

    def forward(self, spec: torch.Tensor, time_dim: int, freq_dim: int) -> torch.Tensor:
        self.calls.append((tuple(spec.shape), time_dim, freq_dim))
        out = spec.clone()
        out.narrow(time_dim, 0, 8).zero_()
        return out


def test_spec_augment_only_in_training() -> None:
    torch.manual_seed(0)
    model = create_backbone("efficientat-tiny")
    wave = torch.randn(2, 32000) * 0.1
    with torch.no_grad():
        clean = model.embed(wave)
    mask = RecordingMask()
    model.set_spec_augment(mask)
    with torch.no_grad():
        assert torch.equal(model.embed(wave), clean)
        assert mask.calls == []
        model.train()
        for m in model.modules():  # keep BN statistics fixed so only the mask can differ
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        augmented = model.embed(wave)
    assert mask.calls == [((2, 128, 100), -1, -2)]
    assert not torch.allclose(augmented, clean)


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    model = create_backbone("efficientat-tiny").train()
    model.logits(torch.randn(2, 16000) * 0.1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []


def test_headless_model() -> None:
    model = create_backbone("efficientat-tiny", num_classes=0)
    assert model.classifier is None
    assert not any(k.startswith("classifier") for k in model.state_dict())
    assert model.embed(torch.zeros(1, 16000)).shape == (1, 96)
    with pytest.raises(ValueError, match="without a classification head"):
        model.classify(torch.zeros(1, 16000))


# -- checkpoints -----------------------------------------------------------------------------


def test_wrong_official_file_fails_its_hash(tmp_path: Path) -> None:
    fake = tmp_path / "mn04_as_mAP_432.pt"
    torch.save(create_backbone("efficientat-mn04").state_dict(), fake)
    with pytest.raises(CheckpointError, match="SHA-256"):
        create_backbone("efficientat-mn04", checkpoint=str(fake))


def test_own_checkpoint_round_trip(tmp_path: Path, tiny: EfficientAT) -> None:
    path = tmp_path / "finetuned.pt"
    torch.save({"model": tiny.state_dict()}, path)
    loaded = create_backbone("efficientat-tiny", checkpoint=str(path))
    wave = torch.randn(1, 16000) * 0.1
    with torch.no_grad():
        assert torch.equal(loaded.embed(wave), tiny.embed(wave))


def test_real_checkpoint_loads_strictly(mn04: EfficientAT, mn04_checkpoint: Path) -> None:
    sd = torch.load(mn04_checkpoint, map_location="cpu", weights_only=True)
    assert len(sd) == 312
    own = mn04.state_dict()
    assert own.keys() == sd.keys()
    assert all(torch.equal(own[k], sd[k]) for k in sd)
    assert sum(p.numel() for p in mn04.parameters() if p.requires_grad) == 983_599
    assert not mn04.training


def test_real_checkpoint_rejects_the_wrong_width(mn04_checkpoint: Path) -> None:
    with pytest.raises(CheckpointError, match=r"width_mult=1\.0"):
        create_backbone("efficientat-mn10", checkpoint=str(mn04_checkpoint))


def test_real_checkpoint_without_head(mn04: EfficientAT, mn04_checkpoint: Path) -> None:
    headless = create_backbone("efficientat-mn04", checkpoint=str(mn04_checkpoint), num_classes=0)
    with torch.no_grad():
        assert torch.equal(headless.embed(two_tones()), mn04.embed(two_tones()))


def test_golden_values(mn04: EfficientAT) -> None:
    wave = two_tones()
    with torch.no_grad():
        emb = mn04.embed(wave)
        logits = mn04.logits(wave)
        probs = mn04.classify(wave)
    assert emb.shape == (1, 384)
    assert abs(emb.mean().item() - (-0.089927)) < 1e-4
    assert abs(emb.norm().item() - 4.928946) < 1e-4
    first = torch.tensor([-0.2696, 0.3645, -0.0477, 0.4826, 0.6844, -0.2845])
    assert torch.allclose(emb[0, :6], first, atol=1e-4, rtol=0)
    expected = torch.tensor([-4.4975, -8.7375, -7.9557, -8.8019, -9.2515])
    assert torch.allclose(logits[0, :5], expected, atol=1e-4, rtol=0)
    values, idx = probs[0].topk(5)
    labels = audioset_labels()
    assert [labels[i] for i in idx] == [
        "Sine wave",
        "Chirp tone",
        "Busy signal",
        "Music",
        "Dial tone",
    ]
    golden = torch.tensor([0.7860, 0.1780, 0.1164, 0.0646, 0.0455])
    assert torch.allclose(values, golden, atol=1e-4, rtol=0)


def test_real_clips(mn04: EfficientAT, shared_dir: Path) -> None:
    root = shared_dir / CLIPS
    files = sorted(root.glob("*/*/*.wav"))
    assert len(files) == 28
    labels = audioset_labels()
    tags: dict[str, list[tuple[str, float]]] = {}
    embeddings: dict[str, torch.Tensor] = {}
    for path in files:
        wave = load_clip_32k(path)
        with torch.no_grad():
            probs = mn04.classify(wave)[0]
            emb = mn04.embed(wave)[0]
        values, idx = probs.topk(5)
        rel = str(path.relative_to(root))
        tags[rel] = [(labels[i], float(v)) for v, i in zip(values, idx)]
        embeddings[rel] = emb
        print(f"{rel}: " + ", ".join(f"{lab} {p:.3f}" for lab, p in tags[rel]))

    def top(machine: str, stem_part: str) -> list[tuple[str, float]]:
        (key,) = [k for k in tags if k.startswith(machine + "/") and stem_part in k]
        return tags[key]

    fan = top("fan", "0040_m-n_X")
    assert [t for t, _ in fan[:2]] == ["Hum", "Mains hum"]
    assert np.allclose([p for _, p in fan[:2]], [0.806, 0.756], atol=1e-3)
    slider = top("slider", "0853_vel_500_ac_0.30")
    assert slider[0][0] == "Printer" and abs(slider[0][1] - 0.909) < 1e-3
    valve = top("valve", "0095_pat_01")
    assert [t for t, _ in valve[:3]] == ["Tick-tock", "Tick", "Clock"]
    assert np.allclose([p for _, p in valve[:3]], [0.776, 0.646, 0.136], atol=1e-3)

    stacked = torch.stack(list(embeddings.values()))  # (28, 384)
    assert torch.isfinite(stacked).all()
    machines = [k.split("/")[0] for k in embeddings]
    unit = torch.nn.functional.normalize(stacked, dim=1)
    cos = unit @ unit.T
    for i in range(len(machines)):
        for j in range(len(machines)):
            if machines[i] != machines[j]:
                assert cos[i, j] < 0.99, (machines[i], machines[j], float(cos[i, j]))


# -- inference fast path (BatchNorm folded, channels-last) ----------------------------------


def _plain(model: EfficientAT, wave: torch.Tensor) -> torch.Tensor:
    """The unfused modules: gradients on keep the fast path off."""
    with torch.enable_grad():
        return model.embed(wave).detach()


def test_folded_path_equals_the_modules(tiny: EfficientAT) -> None:
    torch.manual_seed(1)
    model = create_backbone("efficientat-tiny").eval()
    with torch.no_grad():  # random, non-trivial BN statistics
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_(1, 0.2)
                m.bias.normal_(0, 0.2)
    wave = 0.1 * torch.randn(3, 16000)
    ref = _plain(model, wave)
    with torch.inference_mode():
        fast = model.embed(wave)
    with torch.no_grad():
        cached = model.embed(wave)
        fmap = model.feature_map(wave)
    assert model.features[0]._folded is not None  # cached for the next batch
    assert fmap.is_contiguous(memory_format=torch.channels_last)
    scale = ref.abs().max().item()
    for out in (fast, cached):  # a different summation order: float32 round-off only
        assert (out - ref).abs().max().item() < 1e-5 * max(1.0, scale)
        assert not torch.equal(out, torch.zeros_like(out))


def test_folded_cache_sees_every_change_of_the_weights() -> None:
    torch.manual_seed(2)
    model = create_backbone("efficientat-tiny").eval()
    wave = 0.1 * torch.randn(2, 16000)
    with torch.no_grad():
        first = model.embed(wave)
        bn = model.features[0][1]
        bn.running_mean.add_(0.5)  # in place: the version counter moves
        after_inplace = model.embed(wave)
    assert not torch.allclose(first, after_inplace)
    assert torch.allclose(after_inplace, _plain(model, wave), atol=1e-5, rtol=1e-5)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["features.0.0.weight"] = -state["features.0.0.weight"]
    model.load_state_dict(state)
    with torch.no_grad():
        after_load = model.embed(wave)
    assert torch.allclose(after_load, _plain(model, wave), atol=1e-5, rtol=1e-5)
    model.to(torch.float64)  # same Parameter objects, new storage
    with torch.no_grad():
        wide = model.embed(wave.double())
    assert wide.dtype == torch.float64
    assert torch.allclose(wide, _plain(model, wave.double()), atol=1e-10, rtol=1e-9)


def test_training_mode_never_folds() -> None:
    torch.manual_seed(3)
    model = create_backbone("efficientat-tiny").train()
    before = model.features[0][1].running_mean.clone()
    with torch.no_grad():
        model.embed(0.1 * torch.randn(2, 16000))
    assert model.features[0]._folded is None
    assert not torch.equal(model.features[0][1].running_mean, before)  # BN statistics updated


def test_model_built_in_inference_mode_folds_without_a_cache() -> None:
    torch.manual_seed(4)
    with torch.inference_mode():  # its parameters are inference tensors: no version counters
        model = create_backbone("efficientat-tiny").eval()
        wave = 0.1 * torch.randn(2, 16000)
        fast = model.embed(wave)
        assert model.features[0]._folded is None
        with torch.enable_grad():
            plain = model.embed(wave)
    assert torch.allclose(fast, plain, atol=1e-5, rtol=1e-5)
