"""Few-shot, one machine: every real clip in ``$STETHO_SHARED/data``, one protocol, many systems.

Protocol (defined once):

* A *unit* is one machine (DCASE 2023 mini: machine type; DCASE 2020: machine type + ID; MIMII
  fan extra: the one fan; MIMII 8-channel: one machine, its 8 microphones taken as 8 clips).
* Bank = the unit's normal *training* clips where they exist (DCASE 2023 mini; DCASE 2020 slider
  id_00); otherwise leave-one-out among the unit's normal clips: each normal is scored against a
  bank of the other normals, each anomaly against that same bank (one fold per normal).
* Per unit: the (normal × anomaly) matrix of correctly ordered pairs (1, ½ for a tie, 0); its
  mean is the unit's AUC. pAUC (FPR ≤ 0.1, McClish) where a fixed bank exists.
* Pooled figures: **macro AUC** = mean over units with ≥ 4 normals and ≥ 3 anomalies ("enough to
  tell"), also over all units with one clip of each; **pair AUC** = fraction of correctly ordered
  (anomaly, normal) pairs of the same unit over all units.
* **Noise band**: a paired bootstrap over clips (normals and anomalies resampled with
  replacement within each unit, the same resamples for every system), 2,000 rounds: the 95 %
  interval of each figure and of its difference from the first system (the default).

Peers run on the same folds: pyod's ``EmbeddingOD.for_audio("fast" | "balanced")`` and
``AudioAE`` and audio-anomaly's ``Monitor`` (the bank's clips concatenated as its known-good
reference; score = the highest frame score). They are optional: skipped with a message when
the package is not installed.

Features are cached under ``benchmarks/.cache/`` (git-ignored), so reruns take seconds.

Usage::

    python benchmarks/real_fewshot.py [--shared ../shared] [--markdown table.md] [--systems 1,3]
        [--list] [--boot 2000]
    python benchmarks/real_fewshot.py --false-alarms [--alpha 0.1] [--no-pretrained]

``--false-alarms`` fits the real detector of ``stetho train`` (and ``--pretrained``) on a bank of
each unit with >= 5 held-out normals and reports, per unit and pooled, the false-alarm rate on
the normals not in the bank and the fraction of anomalies flagged, with Clopper-Pearson 95 %
intervals (protocol in :func:`false_alarm_folds`).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stetho.backbones.features import FeatureConfig, FeatureExtractor
from stetho.data import load_audio
from stetho.evaluation.metrics import pauc_score
from stetho.pipelines.fewshot import DEFAULT_MEMBERS
from stetho.scoring.bank import BackendConfig, BankBackend
from stetho.scoring.ensemble import combine_scores
from stetho.scoring.selection import SelectionConfig, choose_members, rank_auc

CACHE = Path(__file__).resolve().parent / ".cache" / "real_fewshot2"
MN04 = "weights/efficientat_mn04_as_mAP_432.pt"
SR = 16000

log = logging.getLogger("real_fewshot")


@dataclass
class Clip:
    path: Path
    channel: int | None
    label: int  # 1 anomaly
    role: str  # "bank" (training normal) or "test"


@dataclass
class Unit:
    name: str
    clips: list[Clip] = field(default_factory=list)

    @property
    def has_bank(self) -> bool:
        return any(c.role == "bank" for c in self.clips)


def _units(data: Path) -> list[Unit]:
    units: dict[str, Unit] = {}

    def add(name: str, clip: Clip) -> None:
        units.setdefault(name, Unit(name)).clips.append(clip)

    for p in sorted((data / "dcase2023t2_mini/dev_data/raw").glob("*/*/*.wav")):
        role = "bank" if p.parent.name == "train" else "test"
        add(f"2023 {p.parent.parent.name}", Clip(p, None, int("_anomaly_" in p.name), role))
    pat = re.compile(r"(normal|anomaly)_id_(\d\d)_")
    for sub in ("dcase2020t2_mini", "dcase2020t2_extra"):
        for p in sorted((data / sub / "dev_data").glob("*/*/*.wav")):
            m = pat.match(p.name)
            if m is None:
                continue
            role = "bank" if p.parent.name == "train" else "test"
            add(f"2020 {p.parent.parent.name} id_{m.group(2)}",
                Clip(p, None, int(m.group(1) == "anomaly"), role))  # fmt: skip
    for lab in ("normal", "abnormal"):
        for p in sorted((data / "mimii_fan_extra" / lab).glob("*.wav")):
            add("MIMII fan (extra)", Clip(p, None, int(lab == "abnormal"), "test"))
    for p in sorted((data / "mimii_8ch").glob("*.wav")):
        machine, lab = p.stem.split("_")
        for ch in range(8):
            add(f"MIMII {machine} 8ch", Clip(p, ch, int(lab == "abnormal"), "test"))
    return list(units.values())


def _clip_id(c: Clip) -> str:
    rel = "_".join(c.path.parts[-4:]).replace(".wav", "")
    return rel + (f"_ch{c.channel}" if c.channel is not None else "")


# -- feature sources (one cached array per clip and source) ---------------------------------------
#: Weight-free views (pooled [mean | std | max] per token dimension by the logmel backbone).
VIEWS: dict[str, dict[str, Any]] = {
    "slaney": {},
    "htk": {"mel_scale": "htk"},
    "cep": {"mel_scale": "htk", "view": "cepstrum"},
    "shape": {"view": "shape"},
    "mod": {"mel_scale": "htk", "view": "modulation"},
}
#: Frames of the frame-level member: HTK log-mel averaged over this many frames (≈ 128 ms).
FRAME_POOL = 4


class Sources:
    """Lazily built extractors; per-clip features cached on disk."""

    def __init__(self, shared: Path) -> None:
        self.shared = shared
        self._fx: dict[str, Any] = {}
        self._mem: dict[tuple[str, str], np.ndarray] = {}

    def _extractor(self, name: str) -> Any:
        if name not in self._fx:
            if name in VIEWS or name == "frames":
                over = VIEWS.get(name, {"mel_scale": "htk"})
                self._fx[name] = FeatureExtractor(FeatureConfig(backbone="logmel", overrides=over))
            elif name == "mn04":
                self._fx[name] = FeatureExtractor(FeatureConfig(
                    backbone="efficientat-mn04", checkpoint=str(self.shared / MN04), pool="mean"))  # fmt: skip
            elif name == "pyod":
                from pyod.utils.encoders.audio import AudioFeatureEncoder

                self._fx[name] = AudioFeatureEncoder()
            elif name == "ae":
                from pyod.models.audio_ae import _logmel_windows

                self._fx[name] = _logmel_windows
        return self._fx[name]

    def _compute(self, name: str, c: Clip) -> np.ndarray:
        fx = self._extractor(name)
        if name in ("pyod", "ae"):  # the peers' own front-ends at their default rate
            wave, _ = load_audio(c.path, sr=22050, channel=c.channel)
            if name == "pyod":
                return np.asarray(fx.encode([np.asarray(wave, np.float64)], show_progress=False)[0])
            return np.asarray(fx(np.asarray(wave, np.float32), 22050, 64, 5, 512), np.float32)
        wave, _ = load_audio(c.path, sr=fx.sample_rate, channel=c.channel)
        if name == "frames":
            import torch

            with torch.inference_mode():
                tok = fx.backbone.forward_features(torch.as_tensor(wave).reshape(1, -1))[0]
            t = tok.shape[0] // FRAME_POOL * FRAME_POOL
            return tok[:t].reshape(-1, FRAME_POOL, tok.shape[1]).mean(1).numpy().astype(np.float32)
        if name in VIEWS:
            import torch

            with torch.inference_mode():
                return fx.backbone.embed(torch.as_tensor(wave).reshape(1, -1))[0].double().numpy()
        return fx.extract([wave])[0]

    def get(self, name: str, c: Clip) -> np.ndarray:
        key = (name, _clip_id(c))
        if key not in self._mem:
            f = CACHE / name / f"{key[1]}.npy"
            if f.is_file():
                self._mem[key] = np.load(f)
            else:
                arr = self._compute(name, c)
                f.parent.mkdir(parents=True, exist_ok=True)
                np.save(f, arr)
                self._mem[key] = arr
        return self._mem[key]


def _stats(arr: np.ndarray, which: str) -> np.ndarray:
    """Slice ``[mean | std | max]`` pooled view features: ``mean+max``, ``mean+std``, ``all``;
    ``dctK``: the first K orthonormal DCT-II coefficients of the mean and of the max."""
    d = arr.shape[-1] // 3
    parts = {"mean": arr[..., :d], "std": arr[..., d : 2 * d], "max": arr[..., 2 * d :]}
    if which == "all":
        return arr
    if which.startswith("dct"):
        from scipy.fft import dct

        k = int(which[3:])
        return np.concatenate([dct(parts[p], norm="ortho", axis=-1)[..., :k]
                               for p in ("mean", "max")], axis=-1)  # fmt: skip
    return np.concatenate([parts[p] for p in which.split("+")], axis=-1)


# -- systems --------------------------------------------------------------------------------------
#: A scorer: (sources, unit clips, bank indices, query indices) -> scores of the queries.
Scorer = Callable[[Sources, list[Clip], list[int], list[int]], np.ndarray]


def _bk(
    kind: str = "knn", std: str = "std", k: int = 1, metric: str = "euclidean"
) -> BackendConfig:
    return BackendConfig(kind=kind, k=k, metric=metric, standardise=std)  # type: ignore[arg-type]


@dataclass
class Member:
    source: str
    stats: str = "mean+max"
    backend: BackendConfig = field(default_factory=_bk)

    def x(self, src: Sources, clips: list[Clip], idx: list[int]) -> np.ndarray:
        rows = [src.get(self.source, clips[i]) for i in idx]
        if self.source in VIEWS:
            rows = [_stats(r, self.stats) for r in rows]
        return np.stack(rows)


def ensemble(members: list[Member], how: str = "mean", weighting: str = "equal") -> Scorer:
    """stetho's ensemble path: BankBackend per member, label-free weights, combine_scores."""

    def score(src: Sources, clips: list[Clip], bank: list[int], query: list[int]) -> np.ndarray:
        names = [f"{i}:{m.source}" for i, m in enumerate(members)]
        z, loo = [], []
        for m in members:
            be = BankBackend(m.backend).fit(m.x(src, clips, bank))
            z.append(be.score(m.x(src, clips, query)))
            loo.append(be.loo_scores())
        cfg = (SelectionConfig(enabled=False) if weighting == "equal"
               else SelectionConfig(weighting=weighting))  # type: ignore[arg-type]  # fmt: skip
        choice = choose_members(names, loo, [{} for _ in members], cfg)
        w = choice["weights"]
        assert isinstance(w, dict)
        return combine_scores(np.stack(z), np.array([w[n] for n in names]), how)

    return score


def frame_knn(top: float = 0.1) -> Scorer:
    """Frame-level evidence: each ≈128 ms HTK log-mel window of a query scored by its Euclidean
    distance to the nearest bank window (standardised on the bank's windows), pooled by the mean
    of the top ``top`` fraction of windows; z-normalised by the bank's leave-one-clip-out scores.
    """

    def pooled(d: np.ndarray) -> float:
        k = max(1, round(top * d.size))
        return float(np.sort(d)[-k:].mean())

    def score(src: Sources, clips: list[Clip], bank: list[int], query: list[int]) -> np.ndarray:
        frames = [src.get("frames", clips[i]).astype(np.float64) for i in bank]
        owner = np.concatenate([np.full(len(f), j) for j, f in enumerate(frames)])
        b = np.concatenate(frames)
        mu, sd = b.mean(0), b.std(0) + 1e-6
        b = (b - mu) / sd
        b2 = (b**2).sum(1)

        def dists(q: np.ndarray, skip: int = -1) -> np.ndarray:
            q = (q - mu) / sd
            d2 = (q**2).sum(1)[:, None] + b2[None] - 2 * q @ b.T
            if skip >= 0:
                d2[:, owner == skip] = np.inf
            return np.sqrt(np.maximum(d2.min(1), 0))

        if len(frames) > 1:
            loo = np.array([pooled(dists(f, j)) for j, f in enumerate(frames)])
            mean, scale = loo.mean(), (loo.std() if len(loo) >= 3 else abs(loo.mean())) + 1e-12
        else:
            mean, scale = 0.0, 1.0
        raw = np.array(
            [pooled(dists(src.get("frames", clips[i]).astype(np.float64))) for i in query]
        )
        return (raw - mean) / scale

    return score


def frame_gmm(components: int = 8, top: float = 0.1) -> Scorer:
    """Frame-level density: a diagonal GMM (``components``) on the bank's ≈128 ms HTK log-mel
    windows (standardised on them); a clip's score is the mean negative log-likelihood of its
    top ``top`` fraction of windows; z-normalised by the bank's leave-one-clip-out scores."""
    from stetho.scoring.gaussian import DiagonalGMM

    def fitted(frames: list[np.ndarray]) -> tuple[DiagonalGMM, np.ndarray, np.ndarray]:
        b = np.concatenate(frames)
        mu, sd = b.mean(0), b.std(0) + 1e-6
        return DiagonalGMM(components=components).fit((b - mu) / sd), mu, sd

    def pooled(model: tuple[DiagonalGMM, np.ndarray, np.ndarray], q: np.ndarray) -> float:
        gmm, mu, sd = model
        nll = gmm.score((q - mu) / sd)
        k = max(1, round(top * nll.size))
        return float(np.sort(nll)[-k:].mean())

    def score(src: Sources, clips: list[Clip], bank: list[int], query: list[int]) -> np.ndarray:
        frames = [src.get("frames", clips[i]).astype(np.float64) for i in bank]
        model = fitted(frames)
        if len(frames) > 1:
            loo = np.array([pooled(fitted(frames[:j] + frames[j + 1 :]), f)
                            for j, f in enumerate(frames)])  # fmt: skip
            mean, scale = loo.mean(), (loo.std() if len(loo) >= 3 else abs(loo.mean())) + 1e-12
        else:
            mean, scale = 0.0, 1.0
        raw = np.array([pooled(model, src.get("frames", clips[i]).astype(np.float64))
                        for i in query])  # fmt: skip
        return (raw - mean) / scale

    return score


def _peer_embed(quality: str) -> Scorer:
    def score(src: Sources, clips: list[Clip], bank: list[int], query: list[int]) -> np.ndarray:
        from pyod.models.embedding import EmbeddingOD
        from pyod.models.knn import KNN

        x_bank = [src.get("pyod", clips[i]) for i in bank]
        x_query = [src.get("pyod", clips[i]) for i in query]
        kw: dict[str, Any] = {"encoder": lambda xs: np.stack(xs)}  # the cached 74-d features
        if quality == "balanced" and len(bank) <= 5:  # KNN's default k = 5 needs > 5 rows
            kw["detector"] = KNN(n_neighbors=max(1, len(bank) - 1))
        od = EmbeddingOD.for_audio(quality, random_state=0, **kw)
        if len(bank) < 2:
            return np.zeros(len(query))
        od.fit(x_bank)
        return np.asarray(od.decision_function(x_query), dtype=np.float64)

    return score


def _peer_ae() -> Scorer:
    def score(src: Sources, clips: list[Clip], bank: list[int], query: list[int]) -> np.ndarray:
        from pyod.models.audio_ae import AudioAE

        class Cached(AudioAE):  # type: ignore[misc]
            def _extract(self, X: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
                idx = [np.full(len(w), i, dtype=np.int64) for i, w in enumerate(X)]
                return np.concatenate(X), np.concatenate(idx)

        ae = Cached(random_state=0, device="cpu")
        ae.fit([src.get("ae", clips[i]) for i in bank])
        return np.asarray(ae.decision_function([src.get("ae", clips[i]) for i in query]))

    return score


def _peer_audio_anomaly() -> Scorer:
    def score(src: Sources, clips: list[Clip], bank: list[int], query: list[int]) -> np.ndarray:
        import audio_anomaly

        def wave(i: int) -> np.ndarray:
            return load_audio(clips[i].path, sr=SR, channel=clips[i].channel)[0]

        ref = np.concatenate([wave(i) for i in bank])
        mon = audio_anomaly.Monitor(ref, sample_rate=SR)
        return np.array([mon.check(wave(i)).max_score for i in query], dtype=np.float64)

    return score


SLANEY = Member("slaney")
HTK = Member("htk")
CEP = Member("cep", "mean+std")
#: The default's members, read from the library (stetho.pipelines.fewshot.DEFAULT_MEMBERS) so
#: the benchmark cannot drift from what `stetho train` fits; Fisher-combined below.
DEFAULT = [Member(next(k for k, v in VIEWS.items() if v == over), pool)
           for _, over, pool in DEFAULT_MEMBERS]  # fmt: skip
SHAPE = Member("shape", "mean+std")
MOD = Member("mod", "mean+max")
VIEWS5 = [Member("slaney"), HTK, CEP, SHAPE, MOD]
SYSTEMS: dict[str, tuple[Scorer, str | None]] = {
    # name: (scorer, package needed)
    "stetho default: Fisher(log-mel Slaney mean+max, log-mel HTK mean+max, cepstrum mean+std), "
    "each std, 1-NN, held-out z-norm": (ensemble(DEFAULT, "fisher"), None),
    "log-mel (Slaney) mean+max, std, 1-NN, LOO z-norm (the default before #23)": (
        ensemble([SLANEY]), None),
    "log-mel HTK mean+max (issue #23 anchor)": (ensemble([HTK]), None),
    "cepstrum (DCT of HTK log-mel, 20) mean+std": (ensemble([CEP]), None),
    "cepstrum mean+max": (ensemble([Member("cep")]), None),
    "spectral shape mean+std": (ensemble([SHAPE]), None),
    "temporal modulation mean+max": (ensemble([MOD]), None),
    "frame-level HTK k-NN, top-10 % windows": (frame_knn(0.1), None),
    "frame-level HTK k-NN, max window": (frame_knn(0.0), None),
    "fusion mean: Slaney + HTK": (ensemble([Member("slaney"), HTK]), None),
    "fusion mean: HTK + cepstrum": (ensemble([HTK, CEP]), None),
    "fusion mean: HTK + cepstrum + shape": (ensemble([HTK, CEP, SHAPE]), None),
    "fusion mean: 5 views": (ensemble(VIEWS5), None),
    "fusion max: 5 views": (ensemble(VIEWS5, "max"), None),
    "fusion robust-z (1/MAD of LOO): 5 views": (ensemble(VIEWS5, weighting="robust"), None),
    "fusion mean: Slaney + HTK + cepstrum": (ensemble(DEFAULT), None),
    "fusion Fisher: Slaney + cepstrum": (ensemble([SLANEY, CEP], "fisher"), None),
    "fusion Fisher: Slaney + HTK + DCT(20) of the Slaney mean and max": (
        ensemble([SLANEY, HTK, Member("slaney", "dct20")], "fisher"), None),
    "fusion Fisher: Slaney + HTK + cepstrum + shape": (
        ensemble([SLANEY, HTK, CEP, SHAPE], "fisher"), None),
    "frozen mn04, whitened 1-NN (`--pretrained` member)": (
        ensemble([Member("mn04", backend=_bk(std="whiten"))]), None),
    "pyod EmbeddingOD.for_audio('balanced') (MFCC/chroma/spectral → KNN)": (_peer_embed("balanced"), "pyod"),
    "pyod EmbeddingOD.for_audio('fast') (same features → IForest)": (_peer_embed("fast"), "pyod"),
    "pyod AudioAE (log-mel context windows → autoencoder)": (_peer_ae(), "pyod"),
    "audio-anomaly 0.1.0 Monitor (bank as reference, max frame score)": (_peer_audio_anomaly(), "audio_anomaly"),
}  # fmt: skip


def _sum_of(*scorers: Scorer) -> Scorer:
    """Mean of already z-normalised scorers (each normalised by its own bank LOO scores)."""

    def score(src: Sources, clips: list[Clip], bank: list[int], query: list[int]) -> np.ndarray:
        return np.mean([s(src, clips, bank, query) for s in scorers], axis=0)

    return score


SYSTEMS["fusion mean: HTK + frame-level"] = (_sum_of(ensemble([HTK]), frame_knn(0.1)), None)


# -- the default's members weighted by a label-free proxy: EQ bumps of the bank's own clips ------
EQ_LADDER = (2.0, 4.0, 8.0)  # dB
EQ_COPIES = 6
_EQ_CACHE: dict[tuple[str, str, str], dict[float, np.ndarray]] = {}


def _eq_bump(wave: np.ndarray, rng: np.random.Generator, gain_db: float) -> np.ndarray:
    """``wave`` through a smooth EQ bump: ±gain_db at a log-uniform 50-7500 Hz centre, a
    triangle 1/6-1 octave wide on each side (zero-phase, whole clip at once)."""
    spec = np.fft.rfft(wave)
    f = np.fft.rfftfreq(len(wave), 1 / SR)
    centre = np.exp(rng.uniform(np.log(50.0), np.log(7500.0)))
    width, sign = rng.uniform(1 / 6, 1.0), rng.choice([-1.0, 1.0])
    octaves = np.abs(np.log2(np.maximum(f, 1.0) / centre))
    gain = np.clip(1 - octaves / width, 0, None) * sign * gain_db
    return np.fft.irfft(spec * 10 ** (gain / 20), len(wave)).astype(np.float32)


def _eq_features(src: Sources, c: Clip, m: Member) -> dict[float, np.ndarray]:
    key = (_clip_id(c), m.source, m.stats)
    if key not in _EQ_CACHE:
        import torch

        wave = np.asarray(load_audio(c.path, sr=SR, channel=c.channel)[0], np.float64)
        fx = src._extractor(m.source)
        seed = int.from_bytes(key[0].encode()[-8:].rjust(8, b"\0"), "little")
        out = {}
        for g in EQ_LADDER:
            rng = np.random.default_rng(seed)  # the same bumps at every strength
            batch = np.stack([_eq_bump(wave, rng, g) for _ in range(EQ_COPIES)])
            with torch.inference_mode():
                emb = fx.backbone.embed(torch.as_tensor(batch))
            out[g] = _stats(emb.double().numpy(), m.stats)
        _EQ_CACHE[key] = out
    return _EQ_CACHE[key]


def eq_proxy_fisher(members: list[Member]) -> Scorer:
    """Fisher fusion with weights ∝ (proxy AUC − 0.5): how well each member tells the bank's
    held-out normals from EQ-bumped copies of the same clips (each copy scored without its
    original), averaged over 2, 4 and 8 dB; weak bumps keep the proxy from saturating."""

    def score(src: Sources, clips: list[Clip], bank: list[int], query: list[int]) -> np.ndarray:
        z, w = [], []
        for m in members:
            be = BankBackend(m.backend).fit(m.x(src, clips, bank))
            z.append(be.score(m.x(src, clips, query)))
            aucs = []
            for g in EQ_LADDER:
                pos = [be.score_without(_eq_features(src, clips[i], m)[g], np.full(EQ_COPIES, j))
                       for j, i in enumerate(bank)]  # fmt: skip
                aucs.append(rank_auc(be.loo_scores(), np.concatenate(pos)))
            w.append(max(float(np.mean(aucs)) - 0.5, 0.01))
        return combine_scores(np.stack(z), np.array(w), "fisher")

    return score


SYSTEMS["fusion Fisher: Slaney + HTK + cepstrum, weights from EQ-bump pseudo-anomalies"] = (
    eq_proxy_fisher(DEFAULT), None)  # fmt: skip
SYSTEMS["frame-level GMM (8 diagonal components, HTK log-mel 128 ms windows), top-10 % NLL"] = (
    frame_gmm(), None)  # fmt: skip
SYSTEMS["log-mel Slaney mean+max, Ledoit-Wolf whitened, 1-NN"] = (
    ensemble([Member("slaney", backend=_bk(std="whiten"))]), None)  # fmt: skip
SYSTEMS["log-mel Slaney mean+max, Mahalanobis (Ledoit-Wolf Gaussian)"] = (
    ensemble([Member("slaney", backend=_bk(kind="mahalanobis"))]), None)  # fmt: skip
SYSTEMS["log-mel HTK mean+max, Mahalanobis (Ledoit-Wolf Gaussian)"] = (
    ensemble([Member("htk", backend=_bk(kind="mahalanobis"))]), None)  # fmt: skip
SYSTEMS["DCT(128) of the Slaney mean and max (all coefficients), std, 1-NN"] = (
    ensemble([Member("slaney", "dct128")]), None)  # fmt: skip
SYSTEMS["fusion Fisher: Slaney + HTK + cepstrum + frozen mn04 whitened"] = (
    ensemble([*DEFAULT, Member("mn04", backend=_bk(std="whiten"))], "fisher"), None)  # fmt: skip


# -- the real detector: `stetho train` and `stetho train --pretrained` ----------------------------
def _wav_of(c: Clip) -> Path:
    """A mono file of the clip (one channel of a multichannel file is written once to the cache)."""
    if c.channel is None:
        return c.path
    out = CACHE / "wav8ch" / f"{c.path.stem}_ch{c.channel}.wav"
    if not out.is_file():
        import soundfile as sf

        wave, sr = load_audio(c.path, sr=None, channel=c.channel)
        out.parent.mkdir(parents=True, exist_ok=True)
        sf.write(out, np.asarray(wave, np.float32), sr, subtype="PCM_16")
    return out


def _stetho_clips(clips: list[Clip], idx: list[int], unit: str) -> list[Any]:
    from stetho.data import Clip as StethoClip

    machine = re.sub(r"[^A-Za-z0-9]+", "-", unit).strip("-")
    return [
        StethoClip(path=_wav_of(clips[i]), name=_wav_of(clips[i]).name, machine=machine,
                   section="00", domain=None, label="anomaly" if clips[i].label else "normal",
                   split="train", partition="dev", year=None, attributes=None)
        for i in idx
    ]  # fmt: skip


def _cached_detector_class() -> type:
    """EnsembleDetector whose member features are cached on disk by waveform hash (the
    detector's maths unchanged; pseudo-anomalies of each fold are new waveforms, computed)."""
    import hashlib
    import json

    from stetho.detector.ensemble import EnsembleDetector

    class CachedEnsemble(EnsembleDetector):
        def _member_features(self, m: Any, waves: list[np.ndarray]) -> np.ndarray:
            tag = hashlib.sha1(json.dumps(m.feature.to_dict(), sort_keys=True).encode()).hexdigest()
            keys = [hashlib.sha1(np.ascontiguousarray(w, np.float32).tobytes()).hexdigest()
                    for w in waves]  # fmt: skip
            files = [CACHE / "detector" / tag[:12] / f"{k}.npy" for k in keys]
            miss = [i for i, f in enumerate(files) if not f.is_file()]
            if miss:
                got = super()._member_features(m, [waves[i] for i in miss])
                files[0].parent.mkdir(parents=True, exist_ok=True)
                for i, row in zip(miss, got):
                    np.save(files[i], row)
            return np.stack([np.load(f) for f in files])

    return CachedEnsemble


def _detector_config(shared: Path, pretrained: bool) -> Any:
    from stetho.pipelines.recipes import default_config

    return default_config(pretrained=str(shared / MN04) if pretrained else None)


def detector_scorer(pretrained: bool, **selection: Any) -> Scorer:
    """The real detector (``EnsembleDetector(default_config(...)).fit(bank)``), raw scores;
    ``selection`` overrides fields of ``cfg.ensemble.selection``."""

    def score(src: Sources, clips: list[Clip], bank: list[int], query: list[int]) -> np.ndarray:
        cfg = _detector_config(src.shared, pretrained)
        assert cfg.ensemble is not None
        cfg.ensemble.selection = cfg.ensemble.selection.replace(**selection)
        det = _cached_detector_class()(cfg)
        fitted = det.fit(_stetho_clips(clips, bank, "unit"))
        machine, section = fitted.keys[0]
        paths = [c.path for c in _stetho_clips(clips, query, "unit")]
        return np.asarray(fitted.score_files(paths, machine, section), dtype=np.float64)

    return score


SYSTEMS["stetho `train` (EnsembleDetector, default_config())"] = (detector_scorer(False), None)
SYSTEMS["stetho `train --pretrained mn04` (EnsembleDetector)"] = (detector_scorer(True), None)
SYSTEMS["`--pretrained`, selection off (equal-weight mean of z)"] = (
    detector_scorer(True, enabled=False),
    None,
)
SYSTEMS["`--pretrained` with the pseudo-anomaly choice (weighting proxy)"] = (
    detector_scorer(True, weighting="proxy"),
    None,
)


# -- false alarms at alpha ------------------------------------------------------------------------
#: Units need at least this many held-out normals for the false-alarm table.
MIN_HELD_OUT = 5
#: Folds of a unit with a training bank (slider id_00: 75 normals → banks of 50).
BANK_FOLDS = 3


def false_alarm_folds(u: Unit) -> list[tuple[list[int], list[int], list[int]]]:
    """(bank, held-out normals, anomalies) of each fold of a unit; [] when too few normals.

    A unit with training normals: ``BANK_FOLDS`` folds over them (fold f's training normals and
    the unit's normal test clips held out, the rest is the bank). Otherwise one fold per normal
    test clip (the others are the bank), as in the AUC protocol.
    """
    normals = [i for i, c in enumerate(u.clips) if c.role == "test" and c.label == 0]
    anomalies = [i for i, c in enumerate(u.clips) if c.role == "test" and c.label == 1]
    train = [i for i, c in enumerate(u.clips) if c.role == "bank"]
    if u.has_bank:
        if len(train) < 3 * BANK_FOLDS or len(train) // BANK_FOLDS + len(normals) < MIN_HELD_OUT:
            return []
        return [([i for i in train if i not in train[f::BANK_FOLDS]], train[f::BANK_FOLDS]
                 + normals, anomalies) for f in range(BANK_FOLDS)]  # fmt: skip
    if len(normals) < MIN_HELD_OUT:
        return []
    return [([n for n in normals if n != i], [i], anomalies) for i in normals]


def false_alarms(shared: Path, pretrained: bool, alpha: float = 0.1) -> dict[str, dict[str, Any]]:
    """Per unit: decisions of the real detector on held-out normals and anomalies at ``alpha``."""
    from stetho.scoring.threshold import ThresholdConfig, fit_threshold_info

    cfg = _detector_config(shared, pretrained)
    cfg.threshold = ThresholdConfig(false_alarm=alpha)
    out: dict[str, dict[str, Any]] = {}
    for u in _units(shared / "data"):
        folds = false_alarm_folds(u)
        if not folds:
            continue
        r: dict[str, Any] = {"fa": 0, "normals": 0, "hits": 0, "anomalies": 0, "expected": [],
                             "bank": sorted({len(b) for b, _, _ in folds})}  # fmt: skip
        t0 = time.monotonic()
        for bank, held, anom in folds:
            det = _cached_detector_class()(cfg).fit(_stetho_clips(u.clips, bank, u.name))
            key = det.keys[0]
            paths = [c.path for c in _stetho_clips(u.clips, held + anom, u.name)]
            dec = np.asarray(det.decide(det.score_files(paths, *key), key))
            r["fa"] += int(dec[: len(held)].sum())
            r["normals"] += len(held)
            r["hits"] += int(dec[len(held) :].sum())
            r["anomalies"] += len(anom)
            fit = fit_threshold_info(det.held_out[key].scores, cfg.threshold)
            r["expected"] += [fit.expected_rate] * len(held)
        r["expected"] = float(np.mean(r["expected"]))
        out[u.name] = r
        log.info("%s %s: %d/%d false alarms, %d/%d anomalies (%.0f s)", "pretrained" if pretrained
                 else "default", u.name, r["fa"], r["normals"], r["hits"], r["anomalies"],
                 time.monotonic() - t0)  # fmt: skip
    return out


def _band(k: int, n: int) -> str:
    """Clopper-Pearson 95 % interval of a binomial proportion k/n."""
    from scipy.stats import beta

    lo = 0.0 if k == 0 else float(beta.ppf(0.025, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(0.975, k + 1, n - k))
    return f"[{lo:.2f}, {hi:.2f}]"


def false_alarm_table(results: dict[str, dict[str, dict[str, Any]]], alpha: float) -> str:
    """Markdown: per unit and pooled, false-alarm and detection rates of each system."""
    names = list(results)
    head = "| unit | bank | expected rate |" + "".join(
        f" {n}: false alarms [95 %] | {n}: anomalies flagged [95 %] |" for n in names
    )
    lines = [head, "|---|---|---:|" + "---:|---:|" * len(names)]
    units = list(next(iter(results.values())))

    def cells(rows: list[dict[str, Any]]) -> str:
        fa, nn = sum(r["fa"] for r in rows), sum(r["normals"] for r in rows)
        hit, na = sum(r["hits"] for r in rows), sum(r["anomalies"] for r in rows)
        return (f" {fa}/{nn} = {fa / nn:.3f} {_band(fa, nn)} |"
                f" {hit}/{na} = {hit / na:.3f} {_band(hit, na)} |")  # fmt: skip

    for u in units:
        first = results[names[0]][u]
        sizes = first["bank"]
        bank = str(sizes[0]) if len(sizes) == 1 else f"{sizes[0]}–{sizes[-1]}"
        lines.append(f"| {u} | {bank} | {first['expected']:.3f} |"
                     + "".join(cells([results[n][u]]) for n in names))  # fmt: skip
    groups = {"pooled, all units": units,
              f"pooled, banks large enough for α = {alpha} (≥ {int(np.ceil(1 / alpha - 1))})":
              [u for u in units if min(results[names[0]][u]["bank"]) >= np.ceil(1 / alpha - 1)]}  # fmt: skip
    for label, us in groups.items():
        if not us:
            continue
        exp = np.average([results[names[0]][u]["expected"] for u in us],
                         weights=[results[names[0]][u]["normals"] for u in us])  # fmt: skip
        lines.append(f"| **{label}** | | {exp:.3f} |"
                     + "".join(cells([results[n][u] for u in us]) for n in names))  # fmt: skip
    return "\n".join(lines)


# -- evaluation -----------------------------------------------------------------------------------
def _pairs(s_anom: np.ndarray, s_norm: np.ndarray) -> np.ndarray:
    d = s_anom[None, :] - s_norm[:, None]  # (normal, anomaly)
    return (d > 0) + 0.5 * (d == 0)


def evaluate_unit(u: Unit, src: Sources, scorer: Scorer) -> dict[str, Any]:
    """Pair matrix (normals × anomalies), counts and pAUC of one unit."""
    tests = [i for i, c in enumerate(u.clips) if c.role == "test"]
    normals = [i for i in tests if u.clips[i].label == 0]
    anomalies = [i for i in tests if u.clips[i].label == 1]
    out: dict[str, Any] = {"normal": len(normals), "anomaly": len(anomalies), "C": None,
                           "pauc": None}  # fmt: skip
    if u.has_bank:
        bank = [i for i, c in enumerate(u.clips) if c.role == "bank"]
        out["bank"] = len(bank)
        if normals and anomalies:
            s = scorer(src, u.clips, bank, normals + anomalies)
            sn, sa = s[: len(normals)], s[len(normals) :]
            out["C"] = _pairs(sa, sn)
            if len(normals) > 1:
                lab = np.r_[np.zeros(len(sn)), np.ones(len(sa))]
                out["pauc"] = float(pauc_score(lab, s, 0.1))
        return out
    out["bank"] = len(normals) - 1
    if not anomalies or len(normals) < 2:
        return out
    rows = []
    for i in normals:
        s = scorer(src, u.clips, [n for n in normals if n != i], [i, *anomalies])
        rows.append(_pairs(s[1:], s[:1])[0])
    out["C"] = np.array(rows)
    return out


#: "Enough clips to tell": units with at least this many normal and anomalous test clips.
MIN_NORMAL, MIN_ANOMALY = 4, 3


def _figures(per_unit: dict[str, dict[str, Any]], picks: dict[str, tuple[np.ndarray, np.ndarray]]
             | None = None) -> tuple[float, float, float]:  # fmt: skip
    """(macro AUC of the big units, macro AUC of all, pair AUC); ``picks`` resamples clips."""
    big, every, correct, pairs = [], [], 0.0, 0
    for name, v in per_unit.items():
        c = v["C"]
        if c is None:
            continue
        if picks is not None:
            r, a = picks[name]
            c = c[np.ix_(r, a)]
        auc = float(c.mean())
        every.append(auc)
        if v["normal"] >= MIN_NORMAL and v["anomaly"] >= MIN_ANOMALY:
            big.append(auc)
        correct += float(c.sum())
        pairs += c.size
    return float(np.mean(big)), float(np.mean(every)), correct / pairs


def bootstrap(results: dict[str, dict[str, dict[str, Any]]], rounds: int, seed: int = 0
              ) -> dict[str, np.ndarray]:  # fmt: skip
    """Per system, (rounds, 3) resampled figures; the same clip resamples for every system."""
    rng = np.random.default_rng(seed)
    first = next(iter(results.values()))
    out: dict[str, list[tuple[float, float, float]]] = {s: [] for s in results}
    for _ in range(rounds):
        picks = {
            n: (rng.integers(0, v["C"].shape[0], v["C"].shape[0]),
                rng.integers(0, v["C"].shape[1], v["C"].shape[1]))
            for n, v in first.items() if v["C"] is not None
        }  # fmt: skip
        for s, per in results.items():
            out[s].append(_figures(per, picks))
    return {s: np.array(v) for s, v in out.items()}


def run(shared: Path, systems: list[str]) -> tuple[list[str], dict[str, dict[str, dict[str, Any]]], dict[str, float]]:  # fmt: skip
    units = _units(shared / "data")
    src = Sources(shared)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    seconds: dict[str, float] = {}
    for name in systems:
        scorer, package = SYSTEMS[name]
        if package is not None:
            try:
                __import__(package)
            except ImportError:
                log.warning("%s: %s is not installed (pip install %s); skipped", name, package,
                            package.replace("_", "-"))  # fmt: skip
                continue
        if "mn04" in name and not (shared / MN04).is_file():
            log.warning("%s: %s missing; skipped", name, shared / MN04)
            continue
        t0 = time.monotonic()
        results[name] = {u.name: evaluate_unit(u, src, scorer) for u in units}  # type: ignore[arg-type]
        seconds[name] = time.monotonic() - t0
        log.info("%-70s %.1f s", name[:70], seconds[name])
    return [u.name for u in units], results, seconds


def _f(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


def tables(
    unit_names: list[str], results: dict[str, dict[str, dict[str, Any]]], rounds: int
) -> str:
    first_name = next(iter(results))
    first = results[first_name]
    boots = bootstrap(results, rounds) if rounds else {}
    n_big = sum(1 for v in first.values() if v["C"] is not None and v["normal"] >= MIN_NORMAL
                and v["anomaly"] >= MIN_ANOMALY)  # fmt: skip
    n_all = sum(1 for v in first.values() if v["C"] is not None)
    n_pairs = sum(v["C"].size for v in first.values() if v["C"] is not None)
    lines = [
        f"| # | system | macro AUC ({n_big} units) [95 % CI] | Δ vs #1 [95 % CI] "
        f"| macro AUC (all {n_all}) | pair AUC ({n_pairs} pairs) [95 % CI] | Δ pair vs #1 [95 % CI] |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for i, (name, per) in enumerate(results.items()):
        m, a, p = _figures(per)
        cells = [f"{m:.3f}", "", f"{a:.3f}", f"{p:.3f}", ""]
        if boots:
            b, b0 = boots[name], boots[first_name]
            ci = lambda x: f"[{np.percentile(x, 2.5):.3f}, {np.percentile(x, 97.5):.3f}]"  # noqa: E731
            dm, dp = m - _figures(first)[0], p - _figures(first)[2]
            cells = [f"{m:.3f} {ci(b[:, 0])}", f"{dm:+.3f} {ci(b[:, 0] - b0[:, 0])}" if i else "–",
                     f"{a:.3f}", f"{p:.3f} {ci(b[:, 2])}",
                     f"{dp:+.3f} {ci(b[:, 2] - b0[:, 2])}" if i else "–"]  # fmt: skip
        lines.append(f"| {i + 1} | {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Macro AUC: mean over units with ≥ {MIN_NORMAL} normal and ≥ {MIN_ANOMALY} anomalous "
        "test clips (and over all units with one of each); pair AUC: correctly ordered "
        "(anomaly, normal) pairs of the same unit, all units. CI: paired bootstrap over clips "
        f"within units ({rounds} rounds).",
        "",
        "Per unit, AUC (bank / normal / anomaly clips; pAUC in brackets where the unit has a fixed "
        "bank and more than one normal):",
        "",
    ]
    short = list(results)
    lines.append("| unit | clips | " + " | ".join(f"#{i + 1}" for i in range(len(short))) + " |")
    lines.append("|---|---|" + "---:|" * len(short))
    for u in unit_names:
        v = first[u]
        cells = []
        for sname in short:
            r = results[sname][u]
            cell = _f(None if r["C"] is None else float(r["C"].mean()))
            if r["pauc"] is not None:
                cell += f" ({_f(r['pauc'])})"
            cells.append(cell)
        lines.append(
            f"| {u} | {v['bank']}/{v['normal']}/{v['anomaly']} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", default=os.environ.get("STETHO_SHARED", "../shared"))
    ap.add_argument("--systems", default=None, help="comma-separated indices (1-based) of SYSTEMS")
    ap.add_argument("--list", action="store_true", help="list the systems and exit")
    ap.add_argument("--markdown", default=None, help="write the tables to this file")
    ap.add_argument("--boot", type=int, default=2000, help="bootstrap rounds (0: none)")
    ap.add_argument(
        "--false-alarms",
        action="store_true",
        help="false alarms and detections of the real detector at --alpha instead",
    )
    ap.add_argument("--alpha", type=float, default=0.1)
    ap.add_argument("--no-pretrained", action="store_true", help="false alarms: default only")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    names = list(SYSTEMS)
    if args.list:
        print("\n".join(f"{i + 1:2d} {n}" for i, n in enumerate(names)))
        return 0
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    if args.false_alarms:
        shared = Path(args.shared)
        runs = (
            {"default": False} if args.no_pretrained else {"default": False, "--pretrained": True}
        )
        fa = {n: false_alarms(shared, p, args.alpha) for n, p in runs.items()}
        text = false_alarm_table(fa, args.alpha)
        print(text)
        if args.markdown:
            Path(args.markdown).write_text(text + "\n", encoding="utf-8")
        return 0
    if args.systems:
        names = [names[int(i) - 1] for i in args.systems.split(",")]
    unit_names, results, _ = run(Path(args.shared), names)
    text = tables(unit_names, results, args.boot)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
