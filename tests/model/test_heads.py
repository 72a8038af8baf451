"""Tests of stetho.model.heads: ArcFace maths, projection, linear head, training signal."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from stetho.model.heads import HeadConfig, ProxyHead, arcface_logits


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    # Tiny tensors: thread hand-offs cost far more than they save on a busy 2-core machine.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_defaults_and_config_roundtrip(tmp_path) -> None:
    cfg = HeadConfig()
    assert (cfg.kind, cfg.embed_dim, cfg.scale, cfg.margin, cfg.easy_margin) == (
        "arcface",
        128,
        30.0,
        0.5,
        False,
    )
    cfg2 = HeadConfig(kind="linear", embed_dim=None, scale=16.0)
    cfg2.save(tmp_path / "head.json")
    assert HeadConfig.load(tmp_path / "head.json") == cfg2
    with pytest.raises(ValueError, match="arcface"):
        HeadConfig.from_dict({"kind": "cosface"})
    for bad in ({"embed_dim": 0}, {"scale": 0.0}, {"margin": -0.1}, {"margin": 2.0}):
        with pytest.raises(ValueError):
            HeadConfig(**bad)  # type: ignore[arg-type]


def test_arcface_logits_match_angle_formula() -> None:
    s, m = 30.0, 0.5
    theta = torch.tensor([[0.3, 1.0, 2.0], [1.2, 0.1, 2.5], [2.9, 1.5, 0.7]])  # radians
    cos = torch.cos(theta)
    labels = torch.tensor([0, 2, 0])
    out = arcface_logits(cos, labels, s, m)
    th = math.pi - m
    for b in range(3):
        for c in range(3):
            t = theta[b, c].item()
            if c == labels[b]:
                want = s * math.cos(t + m) if t < th else s * (math.cos(t) - m * math.sin(m))
            else:
                want = s * math.cos(t)
            assert out[b, c].item() == pytest.approx(want, abs=1e-4), (b, c)
    # row 2's target has θ = 2.9 > π − m: the monotone fallback, not cos(θ + m) (which would rise)
    assert out[2, 0].item() < s * math.cos(2.9)
    # without labels: plain scaled cosine
    assert torch.allclose(arcface_logits(cos, None, s, m), s * cos, atol=1e-4)


def test_easy_margin() -> None:
    cos = torch.tensor([[0.8, -0.4], [-0.2, 0.6]])
    labels = torch.tensor([0, 0])
    out = arcface_logits(cos, labels, 10.0, 0.5, easy_margin=True)
    assert out[0, 0].item() == pytest.approx(10 * math.cos(math.acos(0.8) + 0.5), abs=1e-5)
    assert out[1, 0].item() == pytest.approx(10 * -0.2, abs=1e-5)  # cos <= 0: no margin
    hard = arcface_logits(cos, labels, 10.0, 0.5, easy_margin=False)
    assert hard[1, 0].item() == pytest.approx(10 * math.cos(math.acos(-0.2) + 0.5), abs=1e-5)


def test_margin_only_lowers_the_target_logit() -> None:
    head = ProxyHead(24, 5, HeadConfig(embed_dim=8))
    x = torch.randn(6, 24, generator=_gen())
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    plain = head(x)
    marg = head(x, labels)
    target = F.one_hot(labels, 5).bool()
    assert torch.equal(marg[~target], plain[~target])
    assert (marg[target] < plain[target]).all()
    assert plain.abs().max() <= 30.0 + 1e-4  # |s·cos| ≤ s


def test_project_shapes_and_identity() -> None:
    x = torch.randn(4, 24, generator=_gen(1))
    head = ProxyHead(24, 3, HeadConfig(embed_dim=8))
    assert head.project(x).shape == (4, 8) and head(x).shape == (4, 3)
    ident = ProxyHead(24, 3, HeadConfig(embed_dim=None))
    assert torch.equal(ident.project(x), x)
    assert ident.weight.shape == (3, 24)
    lin = ProxyHead(24, 3, HeadConfig(kind="linear", embed_dim=8))
    assert lin.weight is None and lin(x).shape == (4, 3)
    assert torch.equal(lin(x), lin(x, torch.tensor([0, 1, 2, 0])))  # labels ignored


def test_loss_equals_cross_entropy_of_margin_logits() -> None:
    head = ProxyHead(16, 4, HeadConfig(embed_dim=8, scale=20.0, margin=0.3))
    x = torch.randn(5, 16, generator=_gen(2))
    y = torch.tensor([0, 1, 2, 3, 1])
    z = F.normalize(head.project(x), dim=-1)
    w = F.normalize(head.weight, dim=-1)
    theta = torch.acos((z @ w.t()).clamp(-1, 1))
    logits = 20.0 * torch.where(F.one_hot(y, 4).bool(), torch.cos(theta + 0.3), torch.cos(theta))
    assert head.loss(x, y).item() == pytest.approx(F.cross_entropy(logits, y).item(), abs=1e-4)
    with pytest.raises(ValueError, match="labels must have shape"):
        head.loss(x, y[:3])


def test_gradients_finite_at_cos_one() -> None:
    head = ProxyHead(8, 3, HeadConfig(embed_dim=None))
    with torch.no_grad():
        head.weight.copy_(torch.eye(3, 8))
    x = torch.eye(3, 8).clone().requires_grad_(True)  # each embedding == its class centre: cos = 1
    loss = head.loss(x, torch.tensor([0, 1, 2]))
    loss.backward()
    assert (
        torch.isfinite(loss)
        and torch.isfinite(x.grad).all()
        and torch.isfinite(head.weight.grad).all()
    )


@pytest.mark.parametrize("kind", ["arcface", "linear"])
def test_head_learns_separable_classes(kind: str) -> None:
    torch.manual_seed(0)
    centres = torch.randn(4, 12, generator=_gen(3)) * 3
    y = torch.arange(4).repeat_interleave(16)
    x = centres[y] + 0.3 * torch.randn(64, 12, generator=_gen(4))
    head = ProxyHead(12, 4, HeadConfig(kind=kind, embed_dim=6))  # type: ignore[arg-type]
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    first = head.loss(x, y).item()
    for _ in range(60):
        opt.zero_grad()
        loss = head.loss(x, y)
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    assert (head(x).argmax(1) == y).float().mean().item() == 1.0


def test_bf16_autocast_keeps_fp32_cosines() -> None:
    head = ProxyHead(16, 4, HeadConfig(embed_dim=8))
    x = torch.randn(3, 16, generator=_gen(5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(x, torch.tensor([0, 1, 2]))
    assert out.dtype == torch.float32
    assert torch.allclose(out, head(x, torch.tensor([0, 1, 2])), atol=0.5)
