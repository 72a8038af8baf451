"""transformers-based backbones: Wav2Vec2, Whisper encoder, Qwen-Audio encoder (spec §3, §5, §6.6).

Everything runs on tiny random configs; nothing is downloaded.
"""

from __future__ import annotations

import json
import math
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from stetho.backbones import CheckpointError, create_backbone
from stetho.backbones.hf import qwen_audio_key_map, whisper_encoder_state_dict, whisper_sinusoids

TINY = ("wav2vec2-tiny", "whisper-encoder-tiny", "qwen-audio-encoder-tiny")
D, MELS, LAYERS, HEADS, FFN = 64, 80, 2, 4, 128  # tiny Whisper-style encoder


# ------------------------------------------------------------------------------------------------
# Synthetic Qwen-Audio checkpoint and an independent reference forward written from spec §3.1
# ------------------------------------------------------------------------------------------------
def _qwen_audio_state_dict(
    n_ctx: int = 150, out_dim: int = 96, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Qwen-Audio ``audio.py`` naming and shapes, under ``transformer.audio.``, plus some LM keys."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int, scale: float = 0.1, loc: float = 0.0) -> torch.Tensor:
        return loc + scale * torch.randn(*shape, generator=g)

    a = "transformer.audio."
    sd = {
        a + "conv1.weight": r(D, MELS, 3),
        a + "conv1.bias": r(D),
        a + "conv2.weight": r(D, D, 3),
        a + "conv2.bias": r(D),
        a + "positional_embedding": whisper_sinusoids(n_ctx, D),
        a + "ln_post.weight": r(D, loc=1.0),
        a + "ln_post.bias": r(D),
        a + "proj.weight": r(out_dim, D),
        a + "proj.bias": r(out_dim),
        a + "audio_bos_eos_token.weight": r(2, out_dim),
        # language-model keys that must be ignored
        "transformer.wte.weight": r(10, 8),
        "transformer.h.0.attn.c_attn.weight": r(24, 8),
        "lm_head.weight": r(10, 8),
    }
    for i in range(LAYERS):
        b = f"{a}blocks.{i}."
        sd.update(
            {
                b + "attn.query.weight": r(D, D, scale=0.3),
                b + "attn.query.bias": r(D),
                b + "attn.key.weight": r(D, D, scale=0.3),
                b + "attn.value.weight": r(D, D),
                b + "attn.value.bias": r(D),
                b + "attn.out.weight": r(D, D),
                b + "attn.out.bias": r(D),
                b + "attn_ln.weight": r(D, loc=1.0),
                b + "attn_ln.bias": r(D),
                b + "mlp.0.weight": r(FFN, D),
                b + "mlp.0.bias": r(FFN),
                b + "mlp.2.weight": r(D, FFN),
                b + "mlp.2.bias": r(D),
                b + "mlp_ln.weight": r(D, loc=1.0),
                b + "mlp_ln.bias": r(D),
            }
        )
    return sd


def _qwen_reference(
    sd: dict[str, torch.Tensor], mel: torch.Tensor, proj: bool = False
) -> torch.Tensor:
    """Qwen-Audio's audio encoder from its description: q and k each scaled by head_dim**-0.25."""
    w = {k.removeprefix("transformer.audio."): v for k, v in sd.items()}
    x = F.gelu(F.conv1d(mel, w["conv1.weight"], w["conv1.bias"], padding=1))
    x = F.gelu(F.conv1d(x, w["conv2.weight"], w["conv2.bias"], stride=2, padding=1))
    x = x.transpose(1, 2) + w["positional_embedding"][: x.shape[-1]]  # (B, T, D)
    bsz, t, _ = x.shape
    hd = D // HEADS
    for i in range(LAYERS):
        p = f"blocks.{i}."
        h = F.layer_norm(x, (D,), w[p + "attn_ln.weight"], w[p + "attn_ln.bias"], eps=1e-5)
        q = h @ w[p + "attn.query.weight"].T + w[p + "attn.query.bias"]
        k = h @ w[p + "attn.key.weight"].T
        v = h @ w[p + "attn.value.weight"].T + w[p + "attn.value.bias"]
        q, k, v = (z.view(bsz, t, HEADS, hd).transpose(1, 2) for z in (q, k, v))
        att = torch.softmax((q * hd**-0.25) @ (k * hd**-0.25).transpose(-1, -2), dim=-1)
        o = (att @ v).transpose(1, 2).reshape(bsz, t, D)
        x = x + o @ w[p + "attn.out.weight"].T + w[p + "attn.out.bias"]
        h = F.layer_norm(x, (D,), w[p + "mlp_ln.weight"], w[p + "mlp_ln.bias"], eps=1e-5)
        h = F.gelu(h @ w[p + "mlp.0.weight"].T + w[p + "mlp.0.bias"])
        x = x + h @ w[p + "mlp.2.weight"].T + w[p + "mlp.2.bias"]
    x = F.avg_pool1d(x.transpose(1, 2), 2, 2).transpose(1, 2)
    x = F.layer_norm(x, (D,), w["ln_post.weight"], w["ln_post.bias"], eps=1e-5)
    if proj:
        x = x @ w["proj.weight"].T + w["proj.bias"]
    return x


def _write_sharded(sd: dict[str, torch.Tensor], root: Path, missing_lm_shard: bool = True) -> Path:
    """Save like an HF sharded checkpoint: LM tensors in shard 1, audio tensors in shard 2."""
    root.mkdir(parents=True, exist_ok=True)
    audio = {k: v.contiguous() for k, v in sd.items() if k.startswith("transformer.audio.")}
    lm = {k: v.contiguous() for k, v in sd.items() if k not in audio}
    names = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
    if not missing_lm_shard:
        save_file(lm, str(root / names[0]))
    save_file(audio, str(root / names[1]))
    weight_map = {**dict.fromkeys(lm, names[0]), **dict.fromkeys(audio, names[1])}
    (root / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    return root


# ------------------------------------------------------------------------------------------------
# Key map
# ------------------------------------------------------------------------------------------------
def test_qwen_key_map_names_shapes_and_extras() -> None:
    sd = _qwen_audio_state_dict()
    enc, extra = qwen_audio_key_map(sd)
    assert set(extra) == {"proj.weight", "proj.bias", "audio_bos_eos_token.weight"}
    audio_keys = [k for k in sd if k.startswith("transformer.audio.")]
    assert len(enc) + len(extra) == len(audio_keys)  # every audio key mapped, LM keys dropped
    model = create_backbone("qwen-audio-encoder-tiny", clip_seconds=3.0)  # 150 positions
    own = model.encoder.state_dict()
    assert set(enc) == set(own)
    assert all(enc[k].shape == own[k].shape for k in own)
    model.encoder.load_state_dict(enc, strict=True)
    # identity of tensors, spot checks on the easily swapped ones
    a = "transformer.audio.blocks.1."
    assert enc["layers.1.self_attn.k_proj.weight"] is sd[a + "attn.key.weight"]
    assert enc["layers.1.fc2.bias"] is sd[a + "mlp.2.bias"]
    assert enc["layers.1.final_layer_norm.weight"] is sd[a + "mlp_ln.weight"]
    # prefix-stripped input gives the same result
    stripped = {k.removeprefix("transformer.audio."): v for k, v in sd.items() if k in audio_keys}
    enc2, extra2 = qwen_audio_key_map(stripped)
    assert enc2.keys() == enc.keys() and extra2.keys() == extra.keys()


def test_qwen_key_map_rejects_unknown_keys() -> None:
    sd = _qwen_audio_state_dict()
    sd["transformer.audio.blocks.0.attn.key.bias"] = torch.zeros(D)  # Qwen-Audio's key has no bias
    with pytest.raises(ValueError, match=r"blocks\.0\.attn\.key\.bias"):
        qwen_audio_key_map(sd)


def test_whisper_prefixes() -> None:
    t = torch.zeros(1)
    full = {
        "model.encoder.conv1.weight": t,
        "model.encoder.layers.0.fc1.weight": t,
        "model.decoder.x": t,
        "proj_out.weight": t,
    }
    assert set(whisper_encoder_state_dict(full)) == {"conv1.weight", "layers.0.fc1.weight"}
    assert set(whisper_encoder_state_dict({"encoder.conv1.weight": t, "classifier.w": t})) == {
        "conv1.weight"
    }
    with pytest.raises(ValueError, match=r"conv1\.weight"):
        whisper_encoder_state_dict({"foo": t})


# ------------------------------------------------------------------------------------------------
# Qwen-Audio encoder: loading from shards, numerics against the reference, §3.2 recipe
# ------------------------------------------------------------------------------------------------
def test_qwen_sharded_checkpoint_matches_reference_forward(tmp_path: Path) -> None:
    sd = _qwen_audio_state_dict()
    ckpt = _write_sharded(sd, tmp_path / "qwen")  # LM shard absent: must not be needed
    mel = torch.randn(2, MELS, 200)
    for proj in (False, True):
        model = create_backbone("qwen-audio-encoder-tiny", checkpoint=str(ckpt), output_proj=proj)
        out = model.forward_mel(mel)
        ref = _qwen_reference(sd, mel, proj=proj)
        assert out.shape == (2, 50, 96 if proj else D) and model.embed_dim == out.shape[-1]
        assert (out - ref).abs().max().item() < 1e-5


def test_qwen_single_file_checkpoint(tmp_path: Path) -> None:
    sd = _qwen_audio_state_dict(seed=3)
    path = tmp_path / "qwen_audio.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    model = create_backbone("qwen-audio-encoder-tiny", checkpoint=str(path))
    mel = torch.randn(1, MELS, 200)
    assert (model.forward_mel(mel) - _qwen_reference(sd, mel)).abs().max().item() < 1e-5
    assert model.extra_config()["encoder_attention_heads"] == HEADS


def test_truncated_equals_masked_full_length() -> None:
    """§3.2: a T_cnn-position encoder equals a longer one with keys >= T_cnn masked, when the mel
    frames beyond the clip are zero."""
    torch.manual_seed(0)
    full = create_backbone("qwen-audio-encoder-tiny", clip_seconds=6.0)  # 300 positions, 600 frames
    trunc = create_backbone(
        "qwen-audio-encoder-tiny", clip_seconds=2.0
    )  # 100 positions, 200 frames
    trunc.load_encoder_state_dict(full.encoder.state_dict())  # table sliced 300 -> 100
    clip = torch.randn(2, MELS, 200)
    mel = F.pad(clip, (0, 400))  # zeros beyond the clip
    mask = torch.zeros(2, 1, 300, 300)
    mask[..., 100:] = torch.finfo(torch.float32).min
    with torch.no_grad():
        ref = trunc.forward_mel(clip)  # (2, 50, D)
        masked = full.encoder(mel, attention_mask=mask).last_hidden_state[:, :50]
        unmasked = full.encoder(mel).last_hidden_state[:, :50]
        mel_noisy = torch.cat([clip, torch.randn(2, MELS, 400)], dim=-1)
        masked_noisy = full.encoder(mel_noisy, attention_mask=mask).last_hidden_state[:, :50]
    assert ref.shape == (2, 50, D)
    assert (masked - ref).abs().max().item() < 1e-5
    assert (unmasked - ref).abs().max().item() > 1e-2  # the mask matters
    assert (masked_noisy - ref).abs().max().item() > 1e-4  # conv1 sees frame 200: zeros matter


@pytest.mark.parametrize("name", ["whisper-encoder-tiny", "qwen-audio-encoder-tiny"])
def test_own_forward_equals_hf_forward_at_configured_length(name: str) -> None:
    torch.manual_seed(1)
    model = create_backbone(name)  # clip 2 s -> 100 positions
    mel = torch.randn(2, MELS, 200)
    with torch.no_grad():
        ours = model.forward_mel(mel)
        hf = model.encoder(mel).last_hidden_state
    assert (ours - hf).abs().max().item() < 1e-6


@pytest.mark.parametrize("name", ["whisper-encoder-tiny", "qwen-audio-encoder-tiny"])
def test_shorter_input_equals_model_built_for_that_length(name: str) -> None:
    long = create_backbone(name, clip_seconds=2.0)
    short = create_backbone(name, clip_seconds=1.0)
    short.load_encoder_state_dict(long.encoder.state_dict())
    wave = torch.randn(2, 16000)
    with torch.no_grad():
        torch.testing.assert_close(
            long.forward_features(wave), short.forward_features(wave), rtol=0, atol=1e-6
        )
    with pytest.raises(ValueError, match="clip_seconds"):
        short.forward_features(torch.randn(1, 32000))


def test_whisper_checkpoint_file_and_directory(tmp_path: Path) -> None:
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    torch.manual_seed(2)
    cfg = WhisperConfig(
        num_mel_bins=MELS,
        d_model=D,
        encoder_layers=LAYERS,
        encoder_attention_heads=HEADS,
        encoder_ffn_dim=FFN,
        max_source_positions=150,
    )
    ref = WhisperEncoder(cfg).eval()
    full = {f"model.encoder.{k}": v.contiguous() for k, v in ref.state_dict().items()}
    full["model.decoder.layers.0.fc1.weight"] = torch.randn(4, 4)  # decoder keys are skipped
    full["proj_out.weight"] = torch.randn(4, 4)
    save_file(full, str(tmp_path / "whisper.safetensors"))
    (tmp_path / "repo").mkdir()
    save_file(full, str(tmp_path / "repo" / "model.safetensors"))
    mel = torch.randn(1, MELS, 300)
    with torch.no_grad():
        expected = ref(mel).last_hidden_state
    for spec in (tmp_path / "whisper.safetensors", tmp_path / "repo"):
        model = create_backbone("whisper-encoder-tiny", checkpoint=str(spec), clip_seconds=3.0)
        with torch.no_grad():
            assert (model.forward_mel(mel) - expected).abs().max().item() < 1e-5
    with pytest.raises(ValueError, match="d_model=32 but checkpoint has 64"):
        create_backbone("whisper-encoder-tiny", checkpoint=str(tmp_path / "repo"), d_model=32)


# ------------------------------------------------------------------------------------------------
# Shapes, SpecAugment hook, LoRA
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "tokens_1s", "tokens_2s", "dim"),
    [
        ("wav2vec2-tiny", 49, 99, 32),
        ("whisper-encoder-tiny", 50, 100, D),
        ("qwen-audio-encoder-tiny", 25, 50, D),
    ],
)
def test_token_shapes(name: str, tokens_1s: int, tokens_2s: int, dim: int) -> None:
    model = create_backbone(name)
    with torch.no_grad():
        for seconds, n_tok in ((1, tokens_1s), (2, tokens_2s)):
            wave = torch.randn(2, 16000 * seconds)
            tokens = model.forward_features(wave)
            assert tokens.shape == (2, n_tok, dim)
            emb = model.embed(wave)
            assert emb.shape == (2, dim) == (2, model.embed_dim)
            torch.testing.assert_close(emb, tokens.mean(dim=1))


class _Recorder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[tuple[int, ...], int, int]] = []

    def forward(self, spec: torch.Tensor, time_dim: int, freq_dim: int) -> torch.Tensor:
        self.calls.append((tuple(spec.shape), time_dim, freq_dim))
        return torch.zeros_like(spec)


def test_spec_augment_hook_on_log_mel_only_in_training() -> None:
    model = create_backbone("qwen-audio-encoder-tiny")
    rec = _Recorder()
    model.set_spec_augment(rec)
    wave = torch.randn(2, 16000)
    with torch.no_grad():
        eval_out = model.forward_features(wave)
        assert rec.calls == []
        model.train()
        train_out = model.forward_features(wave)
    assert rec.calls == [((2, MELS, 100), -1, -2)]  # only the clip's 2·T_cnn frames
    assert (train_out - eval_out).abs().max() > 1e-3  # the augmented mel was used


def test_wav2vec2_ignores_spec_augment_and_hf_masking_is_off() -> None:
    model = create_backbone("wav2vec2-tiny")
    assert model.input_kind == "waveform"
    cfg = model.wav2vec2.config
    assert cfg.mask_time_prob == 0.0 and cfg.mask_feature_prob == 0.0 and not cfg.apply_spec_augment
    rec = _Recorder()
    model.set_spec_augment(rec)
    model.train()
    model.forward_features(torch.randn(1, 16000))
    assert rec.calls == []


@pytest.mark.parametrize("name", TINY)
def test_peft_lora_on_q_and_v(name: str) -> None:
    from peft import LoraConfig, inject_adapter_in_model
    from peft.tuners.lora import LoraLayer

    model = create_backbone(name)
    wave = torch.randn(1, 16000)
    with torch.no_grad():
        before = model.embed(wave)
    targets = model.lora_module_names("q") + model.lora_module_names("v")
    assert len(targets) == 2 * model.num_layers
    modules = dict(model.named_modules())
    assert all(isinstance(modules[t], nn.Linear) for t in targets)
    inject_adapter_in_model(LoraConfig(r=4, lora_alpha=4, target_modules=targets), model)
    adapted = sorted(n for n, m in model.named_modules() if isinstance(m, LoraLayer))
    assert adapted == sorted(targets)
    with torch.no_grad():
        torch.testing.assert_close(model.embed(wave), before)  # B = 0 at init
    # layers_pattern lets peft restrict to layer indices (spec §5.2 pitfall).
    fresh = create_backbone(name)
    cfg = LoraConfig(
        r=4,
        lora_alpha=4,
        target_modules=["q_proj", "v_proj"],
        layers_to_transform=[1],
        layers_pattern=fresh.layers_pattern,
    )
    inject_adapter_in_model(cfg, fresh)
    got = sorted(n for n, m in fresh.named_modules() if isinstance(m, LoraLayer))
    assert got == sorted(fresh.lora_module_names("q", [1]) + fresh.lora_module_names("v", [1]))


@pytest.mark.parametrize("name", TINY)
def test_lora_templates_name_real_linears(name: str) -> None:
    model = create_backbone(name)
    modules = dict(model.named_modules())
    for matrix in ("q", "k", "v", "out", "fc1", "fc2"):
        for full in model.lora_module_names(matrix):
            assert isinstance(modules.get(full), nn.Linear), full


# ------------------------------------------------------------------------------------------------
# Wav2Vec2 loading and offline behaviour
# ------------------------------------------------------------------------------------------------
def test_wav2vec2_local_directory_matches_hf_pipeline(tmp_path: Path) -> None:
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(3)
    cfg = Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=[32] * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    )  # mask_time_prob 0.05 as in the real checkpoints
    Wav2Vec2Model(cfg).save_pretrained(tmp_path / "w2v")
    model = create_backbone("wav2vec2-tiny", checkpoint=str(tmp_path / "w2v"))
    assert model.wav2vec2.config.mask_time_prob == 0.0
    ref = Wav2Vec2Model.from_pretrained(tmp_path / "w2v").eval()
    wave = (0.1 * np.random.default_rng(0).standard_normal((2, 8000)) + 0.3).astype(np.float32)
    normed = np.stack(Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm(list(wave), None))
    with torch.no_grad():
        expected = ref(torch.from_numpy(normed)).last_hidden_state
        got = model.forward_features(torch.from_numpy(wave))
    assert got.shape == (2, 24, 32)
    assert (got - expected).abs().max().item() < 1e-5
    with pytest.raises(ValueError, match="hidden_size=48 but checkpoint has 32"):
        create_backbone("wav2vec2-tiny", checkpoint=str(tmp_path / "w2v"), hidden_size=48)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """Offline mode, an empty cache, and a socket layer that records (and refuses) any use."""
    attempts: list[str] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(repr(args[:2]))
        raise OSError("network access attempted in an offline test")

    # huggingface_hub caches its agent registry per process; forget it so a fetch would show here.
    import huggingface_hub.utils._detect_agent as detect_agent

    monkeypatch.setattr(detect_agent, "_registry", None, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("STETHO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


# every family that accepts hub ids goes through the one hub client (CED included)
@pytest.mark.parametrize("name", ["wav2vec2", "whisper-encoder", "qwen-audio-encoder", "ced-test"])
def test_offline_missing_hub_id_raises_clear_error(name: str, no_network: list[str]) -> None:
    start = time.monotonic()
    with pytest.raises(CheckpointError) as info:
        create_backbone(name, checkpoint="stetho-tests/no-such-model")
    message = str(info.value)
    assert "stetho-tests/no-such-model" in message
    assert "offline" in message and "local directory" in message
    assert no_network == []
    assert time.monotonic() - start < 10


def test_bad_checkpoint_spec_lists_accepted_forms(no_network: list[str]) -> None:
    with pytest.raises(CheckpointError, match="hub id"):
        create_backbone("qwen-audio-encoder-tiny", checkpoint="no_such_file.safetensors")
    with pytest.raises(CheckpointError, match="expected one of"):
        create_backbone(
            "whisper-encoder-tiny", checkpoint=str(Path(__file__).parent)
        )  # dir without weights


@pytest.mark.parametrize("name", TINY)
def test_extra_config_rebuilds_same_architecture(name: str) -> None:
    model = (
        create_backbone(name, clip_seconds=1.0) if "wav2vec2" not in name else create_backbone(name)
    )
    extra = json.loads(json.dumps(model.extra_config()))  # as stored in an artifact
    rebuilt = create_backbone(name, **extra)
    own, other = model.state_dict(), rebuilt.state_dict()
    assert {k: v.shape for k, v in own.items()} == {k: v.shape for k, v in other.items()}
    assert rebuilt.extra_config() == model.extra_config()


def test_extra_config_is_accepted_with_checkpoint(tmp_path: Path) -> None:
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    cfg = Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=[32] * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    )
    Wav2Vec2Model(cfg).save_pretrained(tmp_path / "w2v")
    model = create_backbone("wav2vec2", checkpoint=str(tmp_path / "w2v"))
    assert model.num_layers == 1 and model.embed_dim == 32
    assert model.describe()["weights"] == str(tmp_path / "w2v")
    extra = json.loads(json.dumps(model.extra_config()))
    again = create_backbone("wav2vec2", checkpoint=str(tmp_path / "w2v"), **extra)
    assert again.extra_config() == model.extra_config()


def test_input_validation() -> None:
    qwen = create_backbone("qwen-audio-encoder-tiny")
    with pytest.raises(ValueError, match="too short"):
        qwen.forward_features(torch.randn(1, 300))
    with pytest.raises(ValueError, match="clip_seconds"):
        create_backbone("whisper-encoder-tiny", clip_seconds=31)
    with pytest.raises(ValueError, match="output_proj"):
        create_backbone("whisper-encoder-tiny", output_proj=True)
    with pytest.raises(ValueError, match="valid"):
        create_backbone("wav2vec2-tiny", hiden_size=3)


def test_sinusoids_match_whisper_definition() -> None:
    table = whisper_sinusoids(1500, 1280)
    assert table.shape == (1500, 1280)
    # position p, channel c < 640: sin(p * 10000 ** (-c / 639)); channel 640 + c: the cosine
    p, c = 777, 100
    angle = p * math.exp(-math.log(10000) * c / 639)
    assert abs(table[p, c].item() - math.sin(angle)) < 1e-5
    assert abs(table[p, 640 + c].item() - math.cos(angle)) < 1e-5
