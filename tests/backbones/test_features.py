"""Pooled (multi-layer) features and ``stetho backbones fetch``."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from stetho.backbones import create_backbone
from stetho.backbones.checkpoint import CheckpointError
from stetho.backbones.features import FeatureConfig, FeatureExtractor, pool_tokens
from stetho.backbones.fetch import fetch_weights
from stetho.utils.config import ConfigError


def test_pool_tokens() -> None:
    t = torch.arange(12.0).reshape(1, 3, 4)
    assert pool_tokens(t, "mean").tolist() == [[4.0, 5.0, 6.0, 7.0]]
    assert pool_tokens(t, "max").tolist() == [[8.0, 9.0, 10.0, 11.0]]
    assert pool_tokens(t, "mean+max").shape == (1, 8)


def test_logmel_features_are_band_mean_and_max() -> None:
    wave = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    fx = FeatureExtractor(FeatureConfig(backbone="logmel"))
    feats = fx.extract([wave])
    frames = fx.backbone.frontend(torch.from_numpy(wave)[None])[0].double()  # (128, T)
    ref = torch.cat([frames.mean(1), frames.amax(1)]).numpy()
    np.testing.assert_allclose(feats[0], ref, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="final tokens"):
        FeatureExtractor(FeatureConfig(backbone="logmel", layers=[0])).extract([wave])


def test_efficientat_layers_match_a_manual_forward() -> None:
    model = create_backbone("efficientat-mn04").eval()  # random weights: shapes and wiring only
    wave = torch.randn(1, 32000)
    with torch.no_grad():
        maps = model.embed_layers(wave, [3, -1])
        x = model.frontend(wave).unsqueeze(1)
        for i, block in enumerate(model.features):
            x = block(x)
            if i == 3:
                ref3 = x.flatten(2).transpose(1, 2)
        torch.testing.assert_close(maps[0], ref3)
        torch.testing.assert_close(maps[1], model.forward_features(wave))
    with pytest.raises(ValueError, match="block indices"):
        model.embed_layers(wave, [99])


def test_pretrained_member_without_weights_names_the_fetch_command() -> None:
    with pytest.raises(ConfigError, match="stetho backbones fetch efficientat-mn04"):
        FeatureExtractor(FeatureConfig(backbone="efficientat-mn04"))
    with pytest.raises(CheckpointError, match="stetho backbones fetch efficientat-mn04"):
        FeatureExtractor(FeatureConfig(backbone="efficientat-mn04", checkpoint="absent_file.pt"))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    finally:
        httpd.shutdown()


def test_fetch_verifies_sha256(
    server: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, root = server
    monkeypatch.delenv("STETHO_OFFLINE", raising=False)
    (root / "mn04_as_mAP_432.pt").write_bytes(b"not the weights")
    cache = tmp_path / "cache"
    with pytest.raises(CheckpointError, match=r"(?i)sha-?256"):
        fetch_weights("efficientat-mn04", url=f"{url}/mn04_as_mAP_432.pt", cache=cache)
    assert not (cache / "mn04_as_mAP_432.pt").exists()


def test_fetch_real_weights_into_the_cache(
    server: tuple[str, Path], tmp_path: Path, mn04_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, root = server
    monkeypatch.delenv("STETHO_OFFLINE", raising=False)
    data = mn04_checkpoint.read_bytes()
    (root / "mirror.pt").write_bytes(data)
    cache = tmp_path / "cache"
    path = fetch_weights("efficientat-mn04", url=f"{url}/mirror.pt", cache=cache)
    assert path == cache / "mn04_as_mAP_432.pt"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    (root / "mirror.pt").unlink()  # a second call is served from the cache
    assert fetch_weights("efficientat-mn04", url=f"{url}/mirror.pt", cache=cache) == path
