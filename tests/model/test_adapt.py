"""Tests of stetho.model.adapt: strategies, LoRA targets/ranks via peft, state dicts, merging."""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
import torch
from torch import nn

from stetho.backbones import Backbone, PretrainedCfg, create_backbone, list_backbones
from stetho.model.adapt import (
    FinetuneConfig,
    LoRAConfig,
    adapted_modules,
    apply_finetuning,
    build_lora_config,
    freeze_norm_statistics,
    frozen_parameter_names,
    load_lora_state_dict,
    lora_state_dict,
    merge_lora,
    norm_stats_frozen,
    parse_pattern_key,
    plan_lora,
    trainable_parameter_count,
    valid_strategies,
)


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    # Tiny tensors: thread hand-offs cost far more than they save on a busy 2-core machine.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# -- a tiny backbone named like BEATs (encoder.layers.{i}.self_attn.{q,k,v,out}_proj, fc1, fc2) -----


class _Attn(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.softmax(self.q_proj(x) @ self.k_proj(x).transpose(1, 2) / x.shape[-1] ** 0.5, -1)
        return self.out_proj(a @ self.v_proj(x))


class _Layer(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.self_attn = _Attn(d)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, 2 * d)
        self.fc2 = nn.Linear(2 * d, d)
        self.final_layer_norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.self_attn_layer_norm(x + self.self_attn(x))
        return self.final_layer_norm(x + self.fc2(torch.nn.functional.gelu(self.fc1(x))))


class _Encoder(nn.Module):
    def __init__(self, d: int, n: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_Layer(d) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class TinyBEATsLike(Backbone):
    """12 layers of width 16 with BEATs' module names; input (B, N) viewed as (B, N/8, 8)."""

    lora_target_templates: ClassVar[dict[str, str]] = {
        "q": "encoder.layers.{i}.self_attn.q_proj",
        "k": "encoder.layers.{i}.self_attn.k_proj",
        "v": "encoder.layers.{i}.self_attn.v_proj",
        "out": "encoder.layers.{i}.self_attn.out_proj",
        "fc1": "encoder.layers.{i}.fc1",
        "fc2": "encoder.layers.{i}.fc2",
    }
    layers_pattern: ClassVar[str | None] = "layers"

    def __init__(self, width: int = 16, layers: int = 12) -> None:
        super().__init__(PretrainedCfg(name="tiny-beats-like", embed_dim=width))
        self._n = layers
        self.patch = nn.Linear(8, width)
        self.encoder = _Encoder(width, layers)

    @property
    def num_layers(self) -> int:
        return self._n

    def forward_features(self, wave: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.patch(wave.reshape(wave.shape[0], -1, 8)))  # (B, L, D)


class NoPatternBackbone(TinyBEATsLike):
    """Same model without a declared layers_pattern (derived from the templates)."""

    layers_pattern: ClassVar[str | None] = None


def tiny(seed: int = 0, **kw: int) -> TinyBEATsLike:
    torch.manual_seed(seed)
    return TinyBEATsLike(**kw).eval()


def names(matrix: str, layers: range | list[int]) -> set[str]:
    return {TinyBEATsLike.lora_target_templates[matrix].format(i=i) for i in layers}


def perturb_lora(model: nn.Module, seed: int = 1, std: float = 0.2) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_" in name:
                p.add_(torch.randn(p.shape, generator=g) * std)


@pytest.fixture
def wave() -> torch.Tensor:
    return torch.randn(3, 80, generator=torch.Generator().manual_seed(5))  # (B, N) -> 10 tokens


def lora(**kw: object) -> FinetuneConfig:
    return FinetuneConfig(strategy="lora", lora=LoRAConfig(**kw))  # type: ignore[arg-type]


# -- friendly key syntax -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "matrices", "layers"),
    [
        ("v@6-11", ("v",), (6, 7, 8, 9, 10, 11)),
        ("q,v@latter-half", ("q", "v"), "latter-half"),
        ("fc", ("fc1", "fc2"), "all"),
        (" k , out @ 0,2, 4-5 ", ("k", "out"), (0, 2, 4, 5)),
        ("v@all", ("v",), "all"),
        ("fc1@first-half", ("fc1",), "first-half"),
    ],
)
def test_parse_pattern_key(key: str, matrices: tuple[str, ...], layers: object) -> None:
    assert parse_pattern_key(key) == (matrices, layers)


@pytest.mark.parametrize("key", ["", "@3", "x@1", "v@", "v@3-1", "v@a", "v@1-2-3", "qv@1"])
def test_parse_pattern_key_rejects(key: str) -> None:
    with pytest.raises(ValueError, match="MATRICES"):
        parse_pattern_key(key)


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"r": 0}, "lora.r"),
        ({"alpha": 0}, "lora.alpha"),
        ({"dropout": 1.0}, "dropout"),
        ({"targets": ()}, "empty"),
        ({"targets": ("q", "query")}, "unknown matrix"),
        ({"layers": []}, "empty list"),
        ({"layers": [-1]}, "0-based"),
        ({"preset": "table6-4"}, "table6-1"),
        ({"rank_pattern": {"v@6-": 96}}, "MATRICES"),
        ({"rank_pattern": {"v": 0}}, "positive integer"),
        ({"alpha_pattern": {"v": -1.0}}, "positive"),
    ],
)
def test_lora_config_validation(kw: dict[str, object], msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        LoRAConfig(**kw)  # type: ignore[arg-type]


def test_finetune_config_roundtrip_and_choices(tmp_path) -> None:
    cfg = FinetuneConfig.from_dict(
        {
            "strategy": "lora",
            "lora": {"r": 8, "targets": ["q", "v"], "rank_pattern": {"v@6-11": 12}},
        }
    )
    assert cfg.lora.targets == ("q", "v") and cfg.lora.alpha == 64.0
    cfg.save(tmp_path / "ft.json")
    assert FinetuneConfig.load(tmp_path / "ft.json") == cfg
    with pytest.raises(ValueError, match="frozen"):
        FinetuneConfig.from_dict({"strategy": "partial"})


# -- planning and peft config --------------------------------------------------------------------


def test_strategy3_plan_and_peft_keys() -> None:
    model = tiny()
    cfg = LoRAConfig(r=64, alpha=64, preset="table6-3")
    plan = plan_lora(model, cfg)
    expected = {n: (64, 64.0) for n in names("q", range(12)) | names("v", range(6))}
    expected |= {n: (96, 96.0) for n in names("v", range(6, 12))}
    assert plan == expected
    pc = build_lora_config(model, cfg)
    assert pc.r == 64 and pc.lora_alpha == 64 and pc.lora_dropout == 0.0
    assert set(pc.target_modules) == {"self_attn.q_proj", "self_attn.v_proj"}
    assert pc.layers_pattern == "layers" and pc.layers_to_transform == list(range(12))
    assert list(pc.rank_pattern.values()) == [96] and list(pc.alpha_pattern.values()) == [96.0]
    # peft's own matching rule: re.match(r"(.*\.)?(<key>)$", name); only v of layers 6-11 match,
    # and the alternation must not leak into other layer numbers (1 vs 11, 6 vs 16).
    (key,) = pc.rank_pattern
    all_names = [n for n, _ in model.named_modules()] + [
        "encoder.layers.16.self_attn.v_proj",
        "encoder.layers.1.self_attn.v_proj",
        "encoder.layers.61.self_attn.v_proj",
        "encoder.layers.6.self_attn.v_proj_extra",
        "encoder.layers.6xself_attn.v_proj",
    ]
    hits = {n for n in all_names if re.match(rf"(.*\.)?({key})$", n)}
    assert hits == names("v", range(6, 12))


def test_alpha_not_scaled_when_disabled() -> None:
    plan = plan_lora(
        tiny(), LoRAConfig(r=64, alpha=64, preset="table6-3", scale_alpha_with_rank=False)
    )
    assert {a for _, a in plan.values()} == {64.0}
    assert {r for r, _ in plan.values()} == {64, 96}


@pytest.mark.parametrize(
    ("preset", "boosted"),
    [
        ("table6-1", names("v", range(12))),
        ("table6-2", names("q", range(6, 12)) | names("v", range(6, 12))),
        ("table6-3", names("v", range(6, 12))),
    ],
)
def test_presets(preset: str, boosted: set[str]) -> None:
    plan = plan_lora(tiny(), LoRAConfig(r=8, alpha=16, preset=preset))
    assert {n for n, (r, _) in plan.items() if r == 12} == boosted
    assert {n for n, (r, _) in plan.items() if r == 8} == set(plan) - boosted
    assert all(a / r == 2.0 for r, a in plan.values())


def test_pattern_entries_apply_in_order_and_peft_agrees() -> None:
    cfg = LoRAConfig(
        r=4,
        alpha=4,
        targets=("q", "v", "fc"),
        rank_pattern={"v": 8, "v@6-11": 12, "q,fc2@0-1": 2},
        alpha_pattern={"fc1@latter-half": 1.0},
    )
    model = tiny()
    plan = plan_lora(model, cfg)
    want_rank = {
        n: 4 for n in names("q", range(12)) | names("fc1", range(12)) | names("fc2", range(12))
    }
    want_rank |= {n: 8 for n in names("v", range(6))} | {n: 12 for n in names("v", range(6, 12))}
    want_rank |= {n: 2 for n in names("q", [0, 1]) | names("fc2", [0, 1])}
    assert {n: r for n, (r, _) in plan.items()} == want_rank
    assert {n for n, (_, a) in plan.items() if a == 1.0} == names("fc1", range(6, 12))
    apply_finetuning(model, FinetuneConfig(lora=cfg))
    assert adapted_modules(model) == plan  # what peft actually built
    from peft.tuners.lora import LoraLayer

    for name, m in model.named_modules():
        if isinstance(m, LoraLayer):
            r, a = plan[name]
            assert m.lora_A["default"].weight.shape == (r, m.in_features)
            assert m.scaling["default"] == pytest.approx(a / r)


def test_plan_errors() -> None:
    model = tiny()
    with pytest.raises(ValueError, match="not adapted"):
        plan_lora(model, LoRAConfig(targets=("q",), rank_pattern={"v": 8}))
    with pytest.raises(ValueError, match="not adapted"):
        plan_lora(model, LoRAConfig(targets=("v",), preset="table6-2"))
    with pytest.raises(ValueError, match="covers no adapted module"):
        plan_lora(model, LoRAConfig(layers=[0, 1], preset="table6-3"))
    with pytest.raises(ValueError, match="out of range"):
        plan_lora(model, LoRAConfig(rank_pattern={"v@12": 8}))
    with pytest.raises(ValueError, match="out of range"):
        plan_lora(model, LoRAConfig(layers=[3, 12]))


# -- applying ------------------------------------------------------------------------------------


def test_lora_is_noop_at_init_and_only_lora_trains(wave: torch.Tensor) -> None:
    model = tiny()
    before = model.embed(wave)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no peft warnings (unmatched pattern keys etc.)
        apply_finetuning(model, lora(r=4, alpha=4))
    assert torch.equal(model.embed(wave), before)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert {n.rsplit(".lora_", 1)[0] for n in trainable} == names("q", range(12)) | names(
        "v", range(12)
    )
    # 12 layers x 2 matrices x r(in + out) = 12 * 2 * 4 * 32
    assert trainable_parameter_count(model) == 3072
    # gradients reach LoRA B only (A gets none while B == 0)
    model.embed(wave).pow(2).sum().backward()
    grads = {
        n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0
    }
    assert grads and all(".lora_B." in n for n in grads)


def test_frozen_and_full() -> None:
    model = tiny()
    n_all = sum(p.numel() for p in model.parameters())
    apply_finetuning(model, FinetuneConfig(strategy="frozen"))
    assert trainable_parameter_count(model) == 0
    apply_finetuning(model, FinetuneConfig(strategy="full"))
    assert trainable_parameter_count(model) == n_all
    assert not adapted_modules(model)


def test_layers_subset_adapts_only_those_layers() -> None:
    model = tiny()
    apply_finetuning(model, lora(r=4, alpha=4, targets=("k", "out", "fc"), layers=[1, 5, 10]))
    got = adapted_modules(model)
    layers = [1, 5, 10]
    assert set(got) == names("k", layers) | names("out", layers) | names("fc1", layers) | names(
        "fc2", layers
    )


@pytest.mark.parametrize("target", ["q", "k", "v", "out", "fc1", "fc2"])
def test_each_single_target(target: str) -> None:
    model = tiny()
    apply_finetuning(model, lora(r=2, alpha=2, targets=(target,)))
    assert set(adapted_modules(model)) == names(target, range(12))


def test_layers_pattern_derived_when_not_declared() -> None:
    torch.manual_seed(0)
    model = NoPatternBackbone()
    assert build_lora_config(model, LoRAConfig(r=2, alpha=2)).layers_pattern == "layers"
    apply_finetuning(model, lora(r=2, alpha=2, layers=[0, 11]))
    assert set(adapted_modules(model)) == names("q", [0, 11]) | names("v", [0, 11])


def test_double_apply_and_non_transformer_errors() -> None:
    model = tiny()
    apply_finetuning(model, lora(r=2, alpha=2))
    with pytest.raises(ValueError, match="already has LoRA"):
        apply_finetuning(model, lora(r=2, alpha=2))
    for name, valid in (("efficientat-tiny", ["full", "frozen"]), ("logmel", ["frozen"])):
        if name not in list_backbones():
            continue
        bb = create_backbone(name)
        assert valid_strategies(bb) == valid
        with pytest.raises(ValueError, match=re.escape(f"valid strategies for it: {valid}")):
            apply_finetuning(bb, lora())
    if "logmel" in list_backbones():
        with pytest.raises(ValueError, match="no parameters"):
            apply_finetuning(create_backbone("logmel"), FinetuneConfig(strategy="full"))
        apply_finetuning(create_backbone("logmel"), FinetuneConfig(strategy="frozen"))


def test_unknown_target_for_backbone() -> None:
    class QOnly(TinyBEATsLike):
        lora_target_templates: ClassVar[dict[str, str]] = {
            "q": "encoder.layers.{i}.self_attn.q_proj"
        }

    torch.manual_seed(0)
    with pytest.raises(ValueError, match=r"no LoRA target\(s\) \['v'\]; valid: \['q'\]"):
        apply_finetuning(QOnly(), lora())


# -- state dicts and merging ---------------------------------------------------------------------


def test_lora_state_dict_roundtrip_via_safetensors(tmp_path, wave: torch.Tensor) -> None:
    from safetensors.torch import load_file, save_file

    cfg = lora(r=4, alpha=8, preset="table6-3")
    model = tiny(seed=0)
    apply_finetuning(model, cfg)
    perturb_lora(model)
    sd = lora_state_dict(model)
    assert len(sd) == 2 * 24
    assert all(
        re.fullmatch(r"encoder\.layers\.\d+\.self_attn\.[qv]_proj\.lora_[AB]\.weight", k)
        for k in sd
    )
    assert sd["encoder.layers.7.self_attn.v_proj.lora_A.weight"].shape == (6, 16)
    save_file(sd, str(tmp_path / "adapter.safetensors"))
    expected = model.embed(wave)

    other = tiny(seed=0)  # same base weights, fresh (zero-B) adapters
    apply_finetuning(other, cfg)
    assert not torch.allclose(other.embed(wave), expected)
    load_lora_state_dict(other, load_file(str(tmp_path / "adapter.safetensors")))
    assert torch.equal(other.embed(wave), expected)

    wrong = tiny(seed=0)
    apply_finetuning(wrong, lora(r=4, alpha=8))  # no preset -> v ranks differ
    with pytest.raises(ValueError, match="shape mismatch"):
        load_lora_state_dict(wrong, sd)
    with pytest.raises(ValueError, match="missing"):
        load_lora_state_dict(other, {k: v for k, v in sd.items() if "layers.0." not in k})
    with pytest.raises(ValueError, match="no LoRA layers"):
        lora_state_dict(tiny())


@pytest.mark.float_sensitive
def test_merge_matches_unmerged_and_restores_names(wave: torch.Tensor) -> None:
    model = tiny()
    original_keys = list(model.state_dict())
    apply_finetuning(model, lora(r=4, alpha=8, targets=("q", "v", "fc"), preset="table6-1"))
    assert any(".base_layer." in k for k in model.state_dict())
    perturb_lora(model, std=0.3)
    # the maths: in float64, x(W + s·BA) equals xW + s·(xB)A to round-off (~1e-14 here)
    model64 = copy.deepcopy(model).double()
    unmerged64 = model64.embed(wave.double())
    merge_lora(model64)
    scale = unmerged64.abs().max().item()
    assert (model64.embed(wave.double()) - unmerged64).abs().max().item() <= 1e-10 * scale
    # float32: the two orders of operations round differently, and the network amplifies it
    # (measured 5e-6·scale on AVX-512 and AVX2 kernels); a wrong merge is off by O(scale)
    unmerged = model.embed(wave)
    merge_lora(model)
    merged = model.embed(wave)
    diff = (merged - unmerged).abs().max().item()
    assert diff <= 1e-4 * scale, diff
    assert not torch.equal(merged, tiny().embed(wave))  # the LoRA update is really in the weights
    assert list(model.state_dict()) == original_keys
    assert not adapted_modules(model) and not hasattr(model, "peft_config")
    assert all(
        type(m) is nn.Linear
        for n, m in model.named_modules()
        if n.endswith(("_proj", "fc1", "fc2"))
    )
    merge_lora(model)  # no-op without LoRA layers
    apply_finetuning(model, lora(r=2, alpha=2))  # a fresh LoRA can go on top
    assert len(adapted_modules(model)) == 24


# -- real backbones (registered by the backbone engineers) ---------------------------------------


def _need(name: str) -> None:
    if name not in list_backbones():
        pytest.skip(f"backbone {name!r} not registered")


def _strategy3_expected(template_q: str, template_v: str) -> dict[str, tuple[int, float]]:
    out = {template_q.format(i=i): (64, 64.0) for i in range(12)}
    out |= {template_v.format(i=i): (64, 64.0) for i in range(6)}
    out |= {template_v.format(i=i): (96, 96.0) for i in range(6, 12)}
    return out


@pytest.mark.parametrize(
    ("name", "q", "v"),
    [
        ("beats", "encoder.layers.{i}.self_attn.q_proj", "encoder.layers.{i}.self_attn.v_proj"),
        ("ced-base", "blocks.{i}.attn.q_proj", "blocks.{i}.attn.v_proj"),
    ],
)
def test_full_size_strategy3_counts_on_meta(name: str, q: str, v: str) -> None:
    """Spec §5.2: r=64 q,v gives 2,359,296 trainable; strategy (3) gives 2,654,208."""
    _need(name)
    counts = {}
    for preset in (None, "table6-3"):
        with torch.device("meta"):
            model = create_backbone(name)
        apply_finetuning(model, lora(r=64, alpha=64, preset=preset))
        counts[preset] = trainable_parameter_count(model)
        if preset:
            assert adapted_modules(model) == _strategy3_expected(q, v)
    assert counts == {None: 2_359_296, "table6-3": 2_654_208}


@pytest.mark.parametrize(
    ("name", "kw", "q", "v"),
    [
        (
            "beats-tiny",
            {"encoder_layers": 12},
            "encoder.layers.{i}.self_attn.q_proj",
            "encoder.layers.{i}.self_attn.v_proj",
        ),
        ("ced-test", {"depth": 12}, "blocks.{i}.attn.q_proj", "blocks.{i}.attn.v_proj"),
    ],
)
def test_tiny_real_backbones(name: str, kw: dict[str, Any], q: str, v: str) -> None:
    _need(name)
    torch.manual_seed(0)
    model = create_backbone(name, **kw)
    assert model.num_layers == 12
    wave = torch.randn(2, model.sample_rate, generator=torch.Generator().manual_seed(3))  # 1 s
    before = model.embed(wave)
    cfg = lora(r=64, alpha=64, preset="table6-3")
    if name == "ced-test":
        assert build_lora_config(model, cfg.lora).layers_pattern == "blocks"
    apply_finetuning(model, cfg)
    assert adapted_modules(model) == _strategy3_expected(q, v)
    assert torch.equal(model.embed(wave), before)
    assert all(".lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    perturb_lora(model, std=0.05)
    sd = lora_state_dict(model)
    unmerged = model.embed(wave)
    assert not torch.allclose(unmerged, before)

    torch.manual_seed(0)
    fresh = create_backbone(name, **kw)
    apply_finetuning(fresh, cfg)
    load_lora_state_dict(fresh, sd)
    assert torch.equal(fresh.embed(wave), unmerged)

    merge_lora(model)
    diff = (model.embed(wave) - unmerged).abs().max().item()
    assert diff <= 1e-5, diff
    assert not any(".base_layer." in k or ".lora_" in k for k in model.state_dict())


@pytest.mark.parametrize(
    "name", ["wav2vec2-tiny", "whisper-encoder-tiny", "qwen-audio-encoder-tiny"]
)
def test_hf_tiny_backbones_roundtrip_and_merge(name: str) -> None:
    _need(name)
    torch.manual_seed(0)
    model = create_backbone(name)
    wave = torch.randn(2, model.sample_rate // 2, generator=torch.Generator().manual_seed(3))
    before = model.embed(wave)
    cfg = lora(r=4, alpha=8, targets=("q", "v", "fc"), preset="table6-2")
    apply_finetuning(model, cfg)
    n = model.num_layers
    assert len(adapted_modules(model)) == 4 * n
    assert torch.equal(model.embed(wave), before)
    perturb_lora(model, std=0.05)
    adapted = model.embed(wave)
    torch.manual_seed(0)
    fresh = create_backbone(name)
    apply_finetuning(fresh, cfg)
    load_lora_state_dict(fresh, lora_state_dict(model))
    assert torch.equal(fresh.embed(wave), adapted)
    merge_lora(model)
    assert (model.embed(wave) - adapted).abs().max().item() <= 1e-5


# -- parameters frozen by design, BatchNorm statistics ---------------------------------------------


@pytest.mark.parametrize("name", list_backbones())
def test_full_keeps_parameters_frozen_by_design(name: str) -> None:
    """Every registered backbone (built on the meta device: architecture only, no memory)."""
    with torch.device("meta"):
        model = create_backbone(name)
    names = [n for n, _ in model.named_parameters()]
    born_frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    if name.startswith(("whisper-encoder", "qwen-audio-encoder")):
        # transformers builds the sinusoidal position table with requires_grad=False
        assert born_frozen == {"encoder.embed_positions.weight"}
    if "full" not in valid_strategies(model):
        assert not names  # only parameter-free backbones (logmel) cannot be fine-tuned fully
        return
    # a "frozen" pass first must not make the design-frozen set look like "everything"
    apply_finetuning(model, FinetuneConfig(strategy="frozen"))
    assert trainable_parameter_count(model) == 0
    apply_finetuning(model, FinetuneConfig(strategy="full"))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(names) - born_frozen
    assert frozen_parameter_names(model) == born_frozen


def test_full_on_whisper_tiny_trains_all_but_position_table() -> None:
    if "whisper-encoder-tiny" not in list_backbones():
        pytest.skip("whisper-encoder-tiny not registered")
    torch.manual_seed(0)
    model = create_backbone("whisper-encoder-tiny")
    apply_finetuning(model, FinetuneConfig(strategy="full"))
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    wave = torch.randn(2, model.sample_rate // 2, generator=torch.Generator().manual_seed(1))
    model.embed(wave).pow(2).mean().backward()
    opt.step()
    after = model.state_dict()
    assert torch.equal(
        after["encoder.embed_positions.weight"], before["encoder.embed_positions.weight"]
    )
    moved = [k for k in before if not torch.equal(after[k], before[k])]
    assert len(moved) > len(before) // 2


def test_full_refuses_a_backbone_frozen_before_the_first_call() -> None:
    model = tiny()
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="would train nothing"):
        apply_finetuning(model, FinetuneConfig(strategy="full"))


def test_freeze_norm_statistics_and_config() -> None:
    conv, bn1, bn2 = nn.Conv1d(1, 2, 3), nn.BatchNorm1d(2), nn.BatchNorm2d(2)
    model = nn.Sequential(conv, bn1, nn.Sequential(bn2))
    model.train()
    assert freeze_norm_statistics(model) == 2
    assert model.training and conv.training
    assert not bn1.training and not bn2.training
    assert all(p.requires_grad for p in model.parameters())  # affine weights still train
    assert FinetuneConfig().freeze_norm_stats is False
    assert not norm_stats_frozen(FinetuneConfig(strategy="full"))
    assert norm_stats_frozen(FinetuneConfig(strategy="full", freeze_norm_stats=True))
    assert not norm_stats_frozen(FinetuneConfig(strategy="full", freeze_norm_stats=False))
    for strategy in ("frozen", "lora"):  # the base model stays fixed whatever the flag
        assert norm_stats_frozen(FinetuneConfig(strategy=strategy, freeze_norm_stats=False))  # type: ignore[arg-type]
    cfg = FinetuneConfig.from_dict({"strategy": "full", "freeze_norm_stats": False})
    assert cfg.freeze_norm_stats is False
