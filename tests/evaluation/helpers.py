"""Test helpers: synthetic sections with prescribed Mann–Whitney counts, official-style reference.

``build_section`` constructs scores for a (machine, section) with given clip counts such that
AUC_source·N_s⁻·N⁺, AUC_target·N_t⁻·N⁺ and the McClish-inverted partial area take prescribed
whole counts — i.e. a score set that *must* reproduce a published value if, and only if, our
metric definitions are the official ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

P = 0.1


def spread(total: int, n: int, lo: int, hi: int) -> list[int]:
    """n integers in [lo, hi] summing to total (as even as possible)."""
    if n == 0:
        assert total == 0
        return []
    assert n * lo <= total <= n * hi, (total, n, lo, hi)
    base, extra = divmod(total - n * lo, n)
    vals = [lo + base + (1 if i < extra else 0) for i in range(n)]
    assert all(lo <= v <= hi for v in vals) and sum(vals) == total
    return vals


def whole(x: float, tol: float = 1e-6) -> int:
    """x rounded to an integer, asserting it is one (within tol)."""
    r = round(x)
    assert abs(x - r) < tol, f"{x!r} is not a whole count"
    return int(r)


def pauc_count(pauc: float, n_neg: int, n_pos: int) -> float:
    """Inverse McClish: partial area A times N⁻·N⁺ (a whole multiple of the FPR step fraction)."""
    area = P * P / 2 + (2 * pauc - 1) * (P - P * P / 2)
    return area * n_neg * n_pos


@dataclass
class Synthetic:
    names: list[str]
    labels: np.ndarray  # (N,)
    domains: np.ndarray  # (N,)
    scores: np.ndarray  # (N,)


def build_section(
    counts: tuple[int, int, int, int], auc_s: float, auc_t: float, pauc: float
) -> Synthetic:
    """Scores with SN/SA/TN/TA = ``counts`` reproducing the given AUC_s, AUC_t (domain normals vs
    ALL anomalies) and whole-section McClish pAUC (p = 0.1).

    Anomalies get scores 2, 4, …, 2N⁺; a normal that must have c anomalies above it gets
    2(N⁺ − c) + 1. AUC is then Σc / (N⁻·N⁺) and the partial area depends only on the c of the
    top ⌈p·N⁻⌉ normals.
    """
    sn, sa, tn, ta = counts
    n_pos = sa + ta
    n_neg = sn + tn
    u_s = whole(auc_s * sn * n_pos)
    u_t = whole(auc_t * tn * n_pos)
    k_float = P * n_neg
    k = math.floor(k_float + 1e-9)
    frac = round(k_float - k, 6)
    target = pauc_count(pauc, n_neg, n_pos)  # = Σ_{j≤k} c_j + frac·c_{k+1}
    n_top = k + (1 if frac else 0)  # normals that touch FPR ∈ [0, p]
    sol = None
    for c_cap in range(n_pos, -1, -1):  # largest c among the top normals
        rest = target - frac * c_cap
        if abs(rest - round(rest)) > 1e-6 or not 0 <= round(rest) <= k * c_cap:
            continue
        top = spread(round(rest), k, 0, c_cap) + ([c_cap] if frac else [])
        floor_c = max(top)  # the other normals rank below the top ones
        for a in range(n_top + 1):  # how many of the top normals are source normals
            src_top, tgt_top = top[:a], top[a:]
            rem_s, rem_t = sn - len(src_top), tn - len(tgt_top)
            need_s, need_t = u_s - sum(src_top), u_t - sum(tgt_top)
            if (
                rem_s >= 0
                and rem_t >= 0
                and rem_s * floor_c <= need_s <= rem_s * n_pos
                and rem_t * floor_c <= need_t <= rem_t * n_pos
            ):
                sol = (
                    src_top + spread(need_s, rem_s, floor_c, n_pos),
                    tgt_top + spread(need_t, rem_t, floor_c, n_pos),
                )
                break
        if sol:
            break
    assert sol is not None, "no synthetic section satisfies the counts"
    c_src, c_tgt = sol
    names, labels, domains, scores = [], [], [], []
    for i in range(n_pos):
        dom = "source" if i < sa else "target"
        names.append(f"section_00_{dom}_test_anomaly_{i:04d}_x.wav")
        labels.append(1)
        domains.append(0 if dom == "source" else 1)
        scores.append(2.0 * (i + 1))
    for dom, cs in (("source", c_src), ("target", c_tgt)):
        for j, c in enumerate(cs):
            names.append(f"section_00_{dom}_test_normal_{j:04d}_x.wav")
            labels.append(0)
            domains.append(0 if dom == "source" else 1)
            scores.append(2.0 * (n_pos - c) + 1.0)
    return Synthetic(names, np.array(labels), np.array(domains), np.array(scores))


@dataclass
class GtClip:
    """One clip of a synthetic ground truth: anonymised name, label, domain, revealed name."""

    anon: str
    label: int
    domain: int
    full: str  # revealed name without ".wav" (as in ground_truth_attributes column 2)


def make_gt_clips(n: int, seed: int, attrs: str = "mode_A") -> list[GtClip]:
    """n anonymised clips with random labels/domains (both classes in both domains)."""
    rng = np.random.default_rng(seed)
    clips = []
    for i in range(n):
        label = int(i % 2) if i < 4 else int(rng.integers(0, 2))
        domain = int((i // 2) % 2) if i < 4 else int(rng.integers(0, 2))
        dom = ("source", "target")[domain]
        lab = ("normal", "anomaly")[label]
        clips.append(
            GtClip(
                f"section_00_{i:04d}.wav",
                label,
                domain,
                f"section_00_{dom}_test_{lab}_{i:04d}_{attrs}",
            )
        )
    return clips


def write_gt_folder(
    root,
    sections: dict[tuple[str, str], list[GtClip]],
    *,
    three_columns: frozenset[str] = frozenset(),
) -> None:
    """Write a synthetic 2022–2025-layout ground-truth folder (our own made-up data).

    Machines in ``three_columns`` get 2024-style 3-column attribute files: anon, the
    ``noAttribute`` form, and the full-attribute name with ``.wav``.
    """
    from pathlib import Path

    root = Path(root)
    for sub in ("ground_truth_data", "ground_truth_domain", "ground_truth_attributes"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for (m, s), clips in sections.items():
        fname = f"ground_truth_{m}_section_{s}_test.csv"
        clips = sorted(clips, key=lambda c: c.anon)
        (root / "ground_truth_data" / fname).write_text(
            "".join(f"{c.anon},{c.label}\n" for c in clips)
        )
        (root / "ground_truth_domain" / fname).write_text(
            "".join(f"{c.anon},{c.domain}\n" for c in clips)
        )
        if m in three_columns:
            rows = [f"{c.anon},{noattr(c.full)},{c.full}.wav\n" for c in clips]
        else:
            rows = [f"{c.anon},{c.full}\n" for c in clips]
        (root / "ground_truth_attributes" / fname).write_text("".join(rows))


def noattr(full: str) -> str:
    """The concealed-attribute form of a revealed name (tail replaced by ``noAttribute``)."""
    head = "_".join(full.split("_")[:6])
    return f"{head}_noAttribute"
