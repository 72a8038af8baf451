"""Few-shot, one machine: every real clip in ``$STETHO_SHARED/data``, one protocol, many systems.

Protocol (defined once):

* A *unit* is one machine (DCASE 2023 mini: machine type; DCASE 2020: machine type + ID; MIMII
  fan extra: the one fan; MIMII 8-channel: one machine, its 8 microphones taken as 8 clips).
* Bank = the unit's normal *training* clips where they exist (DCASE 2023 mini; DCASE 2020 slider
  id_00); otherwise leave-one-out among the unit's normal clips: each normal is scored against a
  bank of the other normals, each anomaly against all normals.
* Per unit: AUC and pAUC (FPR ≤ 0.1, McClish) with the bank / normal / anomaly counts.
* Pooled figures: **macro AUC / pAUC** = mean over units with ≥ 2 normals and ≥ 2 anomalies
  ("enough to tell"); **pair AUC** = fraction of correctly ordered (anomaly, normal) pairs of the
  same unit over all units (every unit with one clip of each class counts, weighted by pairs).

Features are cached under ``benchmarks/.cache/`` (git-ignored), so reruns take seconds.

Usage::

    python benchmarks/real_fewshot.py [--shared ../shared] [--markdown table.md] [--systems a,b]
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stetho.backbones.features import FeatureConfig, FeatureExtractor
from stetho.data import load_audio
from stetho.evaluation.metrics import pauc_score
from stetho.scoring.bank import BackendConfig, BankBackend
from stetho.scoring.ensemble import combine_scores
from stetho.scoring.selection import SelectionConfig, choose_members, pseudo_anomaly

CACHE = Path(__file__).resolve().parent / ".cache" / "real_fewshot"
MN04 = "weights/efficientat_mn04_as_mAP_432.pt"
MN04_BLOCKS = list(range(17))
KINDS = ["tone", "clicks", "notch", "speed"]

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


def _needs_pseudo(u: Unit) -> set[int]:
    """Clips whose pseudo-anomalies the label-free choice uses: at most ``max_clips`` bank
    clips, and only in units whose banks are large enough for a choice (``min_bank``)."""
    sel = SelectionConfig()
    bank = [i for i, c in enumerate(u.clips) if c.role == "bank"]
    if not bank:  # leave-one-out: every normal is a bank clip of the other folds
        bank = [i for i, c in enumerate(u.clips) if c.label == 0]
        return set(bank) if len(bank) - 1 >= sel.min_bank else set()
    return set(bank[: sel.max_clips]) if len(bank) >= sel.min_bank else set()


def _clip_id(c: Clip) -> str:
    rel = "_".join(c.path.parts[-4:]).replace(".wav", "")
    return rel + (f"_ch{c.channel}" if c.channel is not None else "")


def _features(
    c: Clip, extractors: dict[str, FeatureExtractor], pseudo: bool
) -> dict[str, np.ndarray]:
    f = CACHE / f"{_clip_id(c)}.npz"
    out: dict[str, np.ndarray] = dict(np.load(f)) if f.is_file() else {}
    want_pseudo = pseudo and c.label == 0
    if out and (not want_pseudo or f"logmel/{KINDS[-1]}" in out):
        return out
    for name, fx in extractors.items():
        wave, _ = load_audio(c.path, sr=fx.sample_rate, channel=c.channel)
        tags = ["clean"] if f"{name}/clean" not in out else []
        tags += [k for k in KINDS if want_pseudo and f"{name}/{k}" not in out]
        if not tags:
            continue
        waves = [
            wave if t == "clean" else pseudo_anomaly(wave, fx.sample_rate, t, seed=KINDS.index(t))
            for t in tags
        ]
        feats = fx.extract(waves)
        for j, tag in enumerate(tags):
            out[f"{name}/{tag}"] = feats[j]
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(f, **out)
    return out


def _slice(feat: np.ndarray, name: str) -> np.ndarray:
    """Feature vectors of member ``name`` from the cached arrays."""
    if name == "logmel":
        return feat  # mean+max per band (256)
    if name.startswith("mn04_b"):
        sizes = _MN04_SIZES
        blocks = [int(b) for b in name[6:].split("+")]
        starts = np.cumsum([0, *sizes])
        return np.concatenate([feat[..., starts[b] : starts[b + 1]] for b in blocks], axis=-1)
    if name == "mn04_emb":  # mean-pooled last conv = the frozen mn04 embedding
        starts = np.cumsum([0, *_MN04_SIZES])
        return feat[..., starts[16] : starts[16] + _MN04_SIZES[16] // 2]
    raise KeyError(name)


_MN04_SIZES: list[int] = []
SOURCE = {"logmel": "logmel"}

# system = (members [(feature, backend)], selection); COMBINE: id(members) -> how (default mean)
COMBINE: dict[int, str] = {}
Member = tuple[str, BackendConfig]


def _bk(kind: str = "knn", std: str = "std", k: int = 1, metric: str = "euclidean",
        znorm: bool = True) -> BackendConfig:  # fmt: skip
    return BackendConfig(kind=kind, k=k, metric=metric, standardise=std, znorm=znorm)  # type: ignore[arg-type]


def _with(how: str, members: list[Member]) -> list[Member]:
    COMBINE[id(members)] = how
    return members


LOGMEL_STATS = ("logmel", _bk())
MN04_WHITE = ("mn04_emb", _bk(std="whiten"))
SYSTEMS: dict[str, tuple[list[Member], bool]] = {
    "logmel mean+max, std, 1-NN, LOO z-norm (baseline config)": ([LOGMEL_STATS], False),
    "logmel mean+max, raw, 1-NN": ([("logmel", _bk(std="none", znorm=False))], False),
    "frozen mn04, 1-NN cosine": ([("mn04_emb", _bk(std="none", metric="cosine"))], False),
    "frozen mn04, 1-NN Euclidean": ([("mn04_emb", _bk(std="none"))], False),
    "frozen mn04, whitened 1-NN": ([MN04_WHITE], False),
    "logmel, Mahalanobis (LW)": ([("logmel", _bk(kind="mahalanobis", std="none"))], False),
    "logmel, std, GMM": ([("logmel", _bk(kind="gmm"))], False),
    "logmel, std, 3-NN": ([("logmel", _bk(k=3))], False),
    "mn04 blocks 11+16 mean+max, std 1-NN": ([("mn04_b11+16", _bk())], False),
    "mn04 block 16 mean+max, std 1-NN": ([("mn04_b16", _bk())], False),
    "mn04 block 16 mean+max, whitened 1-NN": ([("mn04_b16", _bk(std="whiten"))], False),
    "ensemble: logmel std + mn04 whitened": ([LOGMEL_STATS, MN04_WHITE], False),
    "ensemble: logmel std + mn04 b16 std": ([LOGMEL_STATS, ("mn04_b16", _bk())], False),
    "ensemble: logmel std + mn04 whitened + mn04 b11 std": (
        [LOGMEL_STATS, MN04_WHITE, ("mn04_b11", _bk())], False),
    "ensemble: logmel std + mn04 whitened, max": (_with("max", [LOGMEL_STATS, MN04_WHITE]), False),
    "ensemble: logmel std + mn04 whitened, min": (_with("min", [LOGMEL_STATS, MN04_WHITE]), False),
    "ensemble: logmel std + mn04 cosine": ([LOGMEL_STATS, ("mn04_emb", _bk(std="none", metric="cosine"))], False),
    "ensemble: logmel std + logmel GMM + mn04 whitened": ([LOGMEL_STATS, ("logmel", _bk(kind="gmm")), MN04_WHITE], False),
    "ensemble: logmel std + logmel Mahalanobis": (
        [LOGMEL_STATS, ("logmel", _bk(kind="mahalanobis", std="none"))], False),
    "ensemble: logmel std + logmel GMM": ([LOGMEL_STATS, ("logmel", _bk(kind="gmm"))], False),
    "label-free choice of logmel std / mn04 whitened (mean of kept)": (
        [LOGMEL_STATS, MN04_WHITE], True),
    "ensemble + label-free choice: logmel std, mn04 whitened, mn04 b11 std, logmel Mahalanobis": (
        [LOGMEL_STATS, MN04_WHITE, ("mn04_b11", _bk()),
         ("logmel", _bk(kind="mahalanobis", std="none"))], True),
}  # fmt: skip


def _member_scores(
    feats: list[dict[str, np.ndarray]], bank_idx: list[int], query_idx: list[int], m: Member
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    src = "logmel" if m[0] == "logmel" else "mn04"
    get = lambda i, tag="clean": _slice(feats[i][f"{src}/{tag}"], m[0])  # noqa: E731
    be = BankBackend(m[1]).fit(np.stack([get(i) for i in bank_idx]))
    q = be.score(np.stack([get(i) for i in query_idx]))
    have = [j for j, i in enumerate(bank_idx) if f"{src}/{KINDS[-1]}" in feats[i]]
    pseudo: dict[str, np.ndarray] = {}
    if have:
        own = np.array(have)
        pseudo = {
            k: be.score_without(np.stack([get(bank_idx[j], k) for j in have]), own) for k in KINDS
        }
    return q, be.loo_scores(), pseudo


def _score_system(
    feats: list[dict[str, np.ndarray]], bank_idx: list[int], query_idx: list[int],
    members: list[Member], select: bool,
) -> tuple[np.ndarray, dict[str, float]]:  # fmt: skip
    names = [f"{i}:{m[0]}:{m[1].label()}" for i, m in enumerate(members)]
    parts = [_member_scores(feats, bank_idx, query_idx, m) for m in members]
    choice = choose_members(
        names, [p[1] for p in parts], [p[2] for p in parts], SelectionConfig(enabled=select)
    )
    weights = choice["weights"]
    assert isinstance(weights, dict)
    w = np.array([weights[n] for n in names])
    return combine_scores(
        np.stack([p[0] for p in parts]), w, COMBINE.get(id(members), "mean")
    ), weights


def _evaluate_unit(
    u: Unit, feats: list[dict[str, np.ndarray]], members: list[Member], select: bool
) -> dict[str, object]:
    """AUC (and pAUC where a fixed bank exists) of one unit, with its clip counts."""
    idx_bank = [i for i, c in enumerate(u.clips) if c.role == "bank"]
    tests = [i for i, c in enumerate(u.clips) if c.role == "test"]
    labels = np.array([u.clips[i].label for i in tests])
    n_norm, n_anom = int((labels == 0).sum()), int((labels == 1).sum())
    out: dict[str, object] = {"normal": n_norm, "anomaly": n_anom, "pairs": n_norm * n_anom,
                              "auc": None, "pauc": None, "correct": 0.0}  # fmt: skip
    if u.has_bank:
        s, w = _score_system(feats, idx_bank, tests, members, select)
        out.update(bank=len(idx_bank), weights=w)
        if n_norm and n_anom:
            auc = _auc(labels, s)
            out.update(auc=auc, pauc=float(pauc_score(labels, s, 0.1)),
                       correct=(auc or 0.0) * n_norm * n_anom)  # fmt: skip
        return out
    # leave-one-out: fold i = bank of the other normals; normal i and every anomaly are scored
    # by that same bank, and only pairs (anomaly, normal i) scored in the same fold are compared
    normals = [i for i in tests if u.clips[i].label == 0]
    anomalies = [i for i in tests if u.clips[i].label == 1]
    out.update(bank=len(normals) - 1, weights={})
    if not anomalies or len(normals) < 2:
        return out
    correct = 0.0
    for i in normals:
        bank = [n for n in normals if n != i]
        s, w = _score_system(feats, bank, [i, *anomalies], members, select)
        correct += float((s[1:] > s[0]).sum() + 0.5 * (s[1:] == s[0]).sum())
        out["weights"] = w
    out.update(auc=correct / (n_norm * n_anom), correct=correct)
    return out


def _auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    pos, neg = scores[labels == 1], scores[labels == 0]
    if not pos.size or not neg.size:
        return None
    d = pos[:, None] - neg[None, :]
    return float(((d > 0).sum() + 0.5 * (d == 0).sum()) / d.size)


def run(
    shared: Path, systems: list[str], pseudo: bool = False
) -> tuple[list[str], dict[str, dict[str, object]]]:
    units = _units(shared / "data")
    mn04 = shared / MN04
    extractors = {
        "logmel": FeatureExtractor(FeatureConfig(backbone="logmel")),
        "mn04": FeatureExtractor(
            FeatureConfig(backbone="efficientat-mn04", checkpoint=str(mn04), layers=MN04_BLOCKS)
        ),
    }
    t0 = time.monotonic()
    feats = {u.name: [_features(c, extractors, pseudo and i in _needs_pseudo(u))
                      for i, c in enumerate(u.clips)] for u in units}  # fmt: skip
    log.info("features of %d clips in %.1f s", sum(len(u.clips) for u in units),
             time.monotonic() - t0)  # fmt: skip
    backbone = extractors["mn04"].backbone
    import torch

    with torch.no_grad():
        maps = backbone.embed_layers(torch.zeros(1, 32000), MN04_BLOCKS)
    _MN04_SIZES[:] = [2 * m.shape[-1] for m in maps]
    results: dict[str, dict[str, object]] = {}
    for sys_name in systems:
        members, select = SYSTEMS[sys_name]
        if select and not pseudo:
            log.warning("%s: label-free choice needs --pseudo; skipped", sys_name)
            continue
        per_unit: dict[str, object] = {}
        for u in units:
            per_unit[u.name] = _evaluate_unit(u, feats[u.name], members, select)
        results[sys_name] = per_unit
    return [u.name for u in units], results


#: "Enough clips to tell": units with at least this many normal and anomalous test clips.
MIN_NORMAL, MIN_ANOMALY = 4, 3


def _pooled(per_unit: dict[str, dict[str, object]]) -> dict[str, float]:
    rows = [v for v in per_unit.values() if v["auc"] is not None]
    big = [v for v in rows if int(v["normal"]) >= MIN_NORMAL and int(v["anomaly"]) >= MIN_ANOMALY]  # type: ignore[call-overload]
    pairs = sum(int(v["pairs"]) for v in rows)  # type: ignore[call-overload]
    return {
        "macro_auc": float(np.mean([v["auc"] for v in big])),
        "macro_all": float(np.mean([v["auc"] for v in rows])),
        "pair_auc": sum(float(v["correct"]) for v in rows) / pairs,  # type: ignore[arg-type]
        "units": len(big),
        "units_all": len(rows),
        "pairs": pairs,
    }


def _f(v: object) -> str:
    return "–" if v is None else f"{float(v):.3f}"  # type: ignore[arg-type]


def tables(unit_names: list[str], results: dict[str, dict[str, object]]) -> str:
    first = next(iter(results.values()))
    p0 = _pooled(first)  # type: ignore[arg-type]
    lines = [
        f"| system | macro AUC ({p0['units']} units) | macro AUC (all {p0['units_all']}) "
        f"| pair AUC ({p0['pairs']} pairs) |",
        "|---|---:|---:|---:|",
    ]
    for name, per in results.items():
        p = _pooled(per)  # type: ignore[arg-type]
        lines.append(
            f"| {name} | {p['macro_auc']:.3f} | {p['macro_all']:.3f} | {p['pair_auc']:.3f} |"
        )
    lines += [
        "",
        f"Macro AUC: mean over units with ≥ {MIN_NORMAL} normal and ≥ {MIN_ANOMALY} anomalous "
        "test clips (and over all units with one of each); pair AUC: fraction of correctly "
        "ordered (anomaly, normal) pairs of the same unit, all units.",
        "",
        "Per unit, AUC (bank / normal / anomaly clips; pAUC where the unit has a fixed bank):",
        "",
    ]
    short = list(results)
    lines.append("| unit | clips | " + " | ".join(f"S{i + 1}" for i in range(len(short))) + " |")
    lines.append("|---|---|" + "---:|" * len(short))
    for u in unit_names:
        v = first[u]
        cnt = f"{v['bank']}/{v['normal']}/{v['anomaly']}"  # type: ignore[index]
        cells = []
        for sname in short:
            r = results[sname][u]
            cell = _f(r["auc"])  # type: ignore[index]
            if r["pauc"] is not None and int(r["normal"]) > 1:  # type: ignore[index]
                cell += f" ({_f(r['pauc'])})"  # type: ignore[index]
            cells.append(cell)
        lines.append(f"| {u} | {cnt} | " + " | ".join(cells) + " |")
    lines += [""] + [f"S{i + 1} = {s}" for i, s in enumerate(short)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", default=os.environ.get("STETHO_SHARED", "../shared"))
    ap.add_argument("--systems", default=None, help="comma-separated indices (1-based) of SYSTEMS")
    ap.add_argument("--markdown", default=None, help="write the tables to this file")
    ap.add_argument(
        "--pseudo",
        action="store_true",
        help="also cache pseudo-anomaly features (needed by label-free choice)",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))  # small ops: threads only thrash
    names = list(SYSTEMS)
    if args.systems:
        names = [names[int(i) - 1] for i in args.systems.split(",")]
    unit_names, results = run(Path(args.shared), names, args.pseudo)
    text = tables(unit_names, results)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
