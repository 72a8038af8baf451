"""The report's figures, drawn with matplotlib (Agg backend, imported lazily) and returned as PNG bytes.

Every function takes plain arrays, so the figures can be drawn from any source (a run folder, a
submission folder, Python objects) and tested without files.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from stetho.evaluation import MAX_FPR, MetricError, auc_score, pauc_score
from stetho.evaluation.metrics import roc_curve

if TYPE_CHECKING:
    from stetho.reporting.explain import Explanation

__all__ = [
    "plot_embedding_map",
    "plot_explanation",
    "plot_histograms",
    "plot_robustness",
    "plot_roc",
    "plot_sweep",
    "plot_training_curves",
]

_DPI = 96
_DOMAIN_COLOURS = {"source": "tab:blue", "target": "tab:orange"}
_LABEL_COLOURS = {"normal": "tab:green", "anomaly": "tab:red"}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def _domain_mask(domains: np.ndarray | None, labels: np.ndarray, d: int) -> np.ndarray:
    """Official AUC subset of domain ``d``: its normals and **all** anomalies (2022+)."""
    if domains is None:
        return np.ones_like(labels, dtype=bool)
    return (domains == d) | (labels == 1)


def plot_roc(
    labels: np.ndarray,
    scores: np.ndarray,
    domains: np.ndarray | None,
    title: str,
    max_fpr: float = MAX_FPR,
) -> bytes:
    """ROC curves of one section: source and target (domain normals vs all anomalies, the
    official AUC subsets) and the whole section, whose pAUC region (FPR ≤ ``max_fpr``) is shaded.

    Args:
        labels: (N,) 0 = normal, 1 = anomaly.
        scores: (N,) anomaly scores.
        domains: (N,) 0 = source, 1 = target, or None (one curve).
        title: Figure title.
        max_fpr: The pAUC limit p.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    ax.plot([0, 1], [0, 1], color="0.75", lw=0.8, ls=":")
    try:
        fpr, tpr = roc_curve(labels, scores)
        pauc = pauc_score(labels, scores, max_fpr)
        upto = np.append(fpr[fpr <= max_fpr], max_fpr)
        ax.fill_between(
            upto,
            np.interp(upto, fpr, tpr),
            color="0.6",
            alpha=0.35,
            step=None,
            label=f"pAUC region (FPR ≤ {max_fpr:g}): {pauc:.3f}",
        )
        ax.plot(fpr, tpr, color="0.3", lw=1.0, ls="--", label="whole section")
    except MetricError:
        pass
    for d, name in enumerate(("source", "target")):
        mask = _domain_mask(domains, labels, d)
        if domains is None and d == 1:
            break
        try:
            fpr, tpr = roc_curve(labels[mask], scores[mask])
            auc = auc_score(labels[mask], scores[mask])
        except MetricError:
            continue
        ax.plot(fpr, tpr, color=_DOMAIN_COLOURS[name], lw=1.8, label=f"{name}: AUC {auc:.3f}")
    ax.axvline(max_fpr, color="0.4", lw=0.6)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate")
    ax.set_title(title, fontsize=10)
    if ax.get_legend_handles_labels()[1]:
        ax.legend(loc="lower right", fontsize=7)
    else:
        ax.text(0.5, 0.6, "ROC undefined:\nneeds normal and anomalous clips", ha="center",
                va="center", fontsize=9, transform=ax.transAxes)  # fmt: skip
    return _png(fig)


def _log_axis(ax: Any) -> None:
    """Log x axis with plain-number labels at 1-2-5 steps and no crowded minor labels."""
    from matplotlib.ticker import LogLocator, NullFormatter, StrMethodFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=12))
    ax.xaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def plot_histograms(
    labels: np.ndarray,
    scores: np.ndarray,
    domains: np.ndarray | None,
    threshold: float | None,
    title: str,
) -> bytes:
    """Score histograms of normal vs anomalous clips, one panel per domain, with the threshold."""
    plt = _plt()
    if domains is not None and not (domains == 1).any():  # one domain: no empty target panel
        domains = None
    names = ["source", "target"] if domains is not None else ["all clips"]
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 2.8), squeeze=False)
    finite = scores[np.isfinite(scores)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if threshold is not None and math.isfinite(threshold):
        lo, hi = min(lo, threshold), max(hi, threshold)
    log = lo > 0 and hi / lo > 20  # k-NN distances: long right tails read better on a log axis
    bins = np.geomspace(lo, hi, 21) if log else np.linspace(lo, hi if hi > lo else lo + 1e-9, 21)
    for d, (ax, name) in enumerate(zip(axes[0], names)):
        in_dom = np.ones_like(labels, dtype=bool) if domains is None else domains == d
        for lab, colour in _LABEL_COLOURS.items():
            sel = in_dom & (labels == (1 if lab == "anomaly" else 0))
            ax.hist(scores[sel], bins=bins, alpha=0.6, color=colour, label=f"{lab} ({sel.sum()})")
        if threshold is not None and math.isfinite(threshold):
            ax.axvline(threshold, color="k", lw=1.2, ls="--", label="threshold")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("anomaly score" + (" (log scale)" if log else ""))
        if log:
            _log_axis(ax)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("clips")
    fig.suptitle(title, fontsize=10, y=1.02)
    return _png(fig)


def _scatter_groups(
    ax: Any, xy: np.ndarray, groups: Sequence[str], title: str, colours: dict[str, str] | None
) -> None:
    cmap = _plt().get_cmap("tab10")
    for i, g in enumerate(sorted(set(groups))):
        sel = np.array([x == g for x in groups])
        colour = (colours or {}).get(g, cmap(i % 10))
        ax.scatter(xy[sel, 0], xy[sel, 1], s=14, color=colour, label=g, alpha=0.85, lw=0)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    _, labs = ax.get_legend_handles_labels()
    if len(labs) <= 12:
        ax.legend(fontsize=6, loc="best", markerscale=1.2)


def plot_embedding_map(
    xy_test: np.ndarray,
    domains: Sequence[str],
    labels: Sequence[str],
    attributes: Sequence[str],
    xy_bank: np.ndarray,
    bank_domains: Sequence[str],
    title: str,
) -> bytes:
    """A 2-D map of test embeddings coloured by domain, label and attribute (three panels), with
    the memory bank's (normal training) embeddings marked as grey crosses (◇ for the target bank).
    """
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(11.5, 3.6))
    for ax, groups, name, colours in zip(
        axes,
        (domains, labels, attributes),
        ("domain", "label", "attribute"),
        (_DOMAIN_COLOURS, _LABEL_COLOURS, None),
    ):
        for dom, marker in (("source", "x"), ("target", "D")):
            sel = np.array([d == dom for d in bank_domains], dtype=bool)
            if sel.any():
                ax.scatter(
                    xy_bank[sel, 0],
                    xy_bank[sel, 1],
                    s=12 if marker == "x" else 10,
                    marker=marker,
                    color="0.55",
                    lw=0.8 if marker == "x" else 0,
                    alpha=0.7,
                    label=f"bank ({dom})",
                )
        _scatter_groups(ax, xy_test, list(groups), f"coloured by {name}", colours)
    fig.suptitle(title, fontsize=10)
    return _png(fig)


def plot_training_curves(rows: Sequence[dict[str, Any]], title: str = "training") -> bytes:
    """Loss, learning rate and validation Ω over training from ``metrics.csv`` rows."""
    plt = _plt()

    def series(kind: str, col: str, x: str = "step") -> tuple[list[float], list[float]]:
        pts = [
            (float(r[x]), float(r[col]))
            for r in rows
            if r.get("kind") == kind and r.get(col) not in (None, "") and r.get(x) not in (None, "")
        ]
        return [p[0] for p in pts], [p[1] for p in pts]

    fig, axes = plt.subplots(1, 3, figsize=(11.5, 3.0))
    xs, ys = series("step", "loss")
    axes[0].plot(xs, ys, lw=0.8, color="tab:blue", alpha=0.6, label="step")
    xs, ys = series("epoch", "loss")
    axes[0].plot(xs, ys, "o-", color="tab:blue", label="epoch mean")
    axes[0].set(title="loss", xlabel="step")
    axes[0].legend(fontsize=7)
    xs, ys = series("step", "lr")
    if not xs:
        xs, ys = series("epoch", "lr")
    axes[1].plot(xs, ys, color="tab:purple")
    axes[1].set(title="learning rate", xlabel="step")
    axes[1].ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    xs, ys = series("epoch", "val_official_score", "epoch")
    if xs:
        axes[2].plot(xs, ys, "o-", color="tab:green")
    else:
        axes[2].text(
            0.5, 0.5, "no validation", ha="center", va="center", transform=axes[2].transAxes
        )
    axes[2].set(title="validation Ω", xlabel="epoch")
    fig.suptitle(title, fontsize=10, y=1.04)
    return _png(fig)


def plot_sweep(rows: Sequence[dict[str, Any]], title: str = "sweep") -> bytes:
    """One comparison figure across configs: Ω, a-mean and the per-metric h-means."""
    plt = _plt()
    metrics = [
        ("official_score", "Ω"),
        ("arithmetic_mean", "a-mean"),
        ("auc_source_hmean", "AUC src (h)"),
        ("auc_target_hmean", "AUC tgt (h)"),
        ("pauc_hmean", "pAUC (h)"),
    ]
    names = [str(r["name"]) for r in rows]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(names) + 3), 3.4))
    width = 0.8 / len(metrics)
    x = np.arange(len(names))
    for j, (key, label) in enumerate(metrics):
        vals = [float(r[key]) if r.get(key) not in (None, "") else np.nan for r in rows]
        ax.bar(x + (j - (len(metrics) - 1) / 2) * width, vals, width, label=label)
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("score")
    ax.axhline(0.5, color="0.5", lw=0.6, ls=":")
    ax.legend(fontsize=7, ncol=len(metrics), loc="upper center", bbox_to_anchor=(0.5, -0.25))
    ax.set_title(title, fontsize=10)
    return _png(fig)


def plot_robustness(rows: Sequence[dict[str, Any]], title: str = "robustness to noise") -> bytes:
    """Ω (and the AUC/pAUC h-means) against SNR; the clean score as a dashed line."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.0, 3.2))
    noisy = sorted(
        (r for r in rows if not math.isinf(float(r["snr_db"]))), key=lambda r: r["snr_db"]
    )
    clean = [r for r in rows if math.isinf(float(r["snr_db"]))]
    snr = [float(r["snr_db"]) for r in noisy]
    for key, label, style in (
        ("official_score", "Ω", "o-"),
        ("auc_source_hmean", "AUC src (h)", ".--"),
        ("auc_target_hmean", "AUC tgt (h)", ".--"),
        ("pauc_hmean", "pAUC (h)", ".--"),
    ):
        vals = [np.nan if r.get(key) is None else float(r[key]) for r in noisy]
        if not np.isnan(vals).all():  # e.g. no target clips: no AUC target line
            ax.plot(snr, vals, style, label=label, lw=1.6 if key == "official_score" else 0.9)
    if clean and clean[0].get("official_score") is not None:
        ax.axhline(float(clean[0]["official_score"]), color="k", ls="--", lw=0.9, label="Ω clean")
    ax.axhline(0.5, color="0.6", lw=0.6, ls=":")
    ax.set(xlabel="SNR (dB)", ylabel="score", ylim=(0, 1.02))
    ax.invert_xaxis()  # louder noise to the right
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=10)
    return _png(fig)


def _mel_axis(ax: Any, spec: np.ndarray, sr: int, duration: float, title: str) -> None:
    """Log-mel spectrogram (n_mels, T) with Hz ticks (bins are evenly spaced in mel)."""
    from stetho.frontend.librosa_mel import hz_to_mel, mel_to_hz

    ax.imshow(
        spec,
        origin="lower",
        aspect="auto",
        cmap="magma",
        extent=(0.0, duration, 0.0, float(spec.shape[0])),
        vmin=float(np.percentile(spec, 5)),
        vmax=float(spec.max()),
    )
    mels = np.linspace(0.0, float(hz_to_mel(sr / 2.0)), 5)
    ax.set_yticks(np.linspace(0, spec.shape[0], 5))
    ax.set_yticklabels([f"{float(mel_to_hz(m)) / 1000:.1f}k" for m in mels], fontsize=7)
    ax.set_ylabel("Hz", fontsize=7)
    ax.set_xlabel("time (s)")
    ax.set_title(title, fontsize=9)


def _outline_peak(ax_s: Any, ax_t: Any, ex: Explanation) -> np.ndarray:
    """Outline the peak window and band on the spectrogram, only where making them normal
    lowers the score; returns the band edges in mel bins."""
    from stetho.frontend.librosa_mel import hz_to_mel

    plt = _plt()
    t0, t1 = ex.peak_seconds() if ex.time_localised else (0.0, ex.duration)
    n_mels = ex.spectrogram.shape[0]
    top_mel = float(hz_to_mel(ex.sample_rate / 2.0))
    mel_pos = np.asarray(hz_to_mel(ex.band_edges)) / top_mel * n_mels  # band edges in bins
    g = ex.peak_band
    m0, m1 = (mel_pos[g], mel_pos[g + 1]) if ex.band_localised else (mel_pos[0], mel_pos[-1])
    if ex.time_localised or ex.band_localised:
        ax_s.add_patch(plt.Rectangle((t0, m0), t1 - t0, m1 - m0, fill=False, ec="cyan", lw=1.5))
    if ex.time_localised:
        ax_s.axvspan(t0, t1, color="cyan", alpha=0.12)
    else:
        ax_t.text(0.01, 0.08, "no single window stands out: what is unusual spans the clip",
                  transform=ax_t.transAxes, fontsize=7,
                  bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "none"})  # fmt: skip
    return mel_pos


def plot_explanation(ex: Explanation) -> bytes:
    """The clip's log-mel spectrogram with, above it, the window scores (threshold dashed) and the
    score drop when each window is made normal, beside it the drop per band group (the peak
    window and band outlined), and the nearest normal clip's spectrogram on the right."""
    plt = _plt()
    fig = plt.figure(figsize=(11.5, 5.2))
    grid = fig.add_gridspec(
        3, 3, width_ratios=[4, 1, 4], height_ratios=[0.9, 0.9, 2.6], wspace=0.08, hspace=0.12
    )
    ax_w = fig.add_subplot(grid[0, 0])
    ax_t = fig.add_subplot(grid[1, 0], sharex=ax_w)
    ax_s = fig.add_subplot(grid[2, 0], sharex=ax_w)
    ax_f = fig.add_subplot(grid[2, 1], sharey=ax_s)
    ax_n = fig.add_subplot(grid[2, 2])
    centres = ex.window_starts + ex.window_seconds / 2
    ax_w.plot(centres, ex.window_scores, "o-", color="tab:red", ms=3)
    if ex.threshold is not None and math.isfinite(ex.threshold):
        ax_w.axhline(ex.threshold, color="k", lw=0.8, ls="--", label="threshold")
        ax_w.legend(fontsize=6, loc="upper right")
    ax_w.set_ylabel("window\nscore", fontsize=8)
    ax_w.tick_params(labelbottom=False, labelsize=7)
    ax_w.set_title(f"{ex.name} — {ex.machine}/{ex.section}, score {ex.score:.4g}", fontsize=9)
    imp_t = ex.time_importance
    ax_t.bar(centres, imp_t, width=ex.hop_seconds * 0.9,
             color=["tab:red" if v > 0 else "tab:blue" for v in imp_t])  # fmt: skip
    ax_t.axhline(0, color="k", lw=0.6)
    ax_t.set_ylabel("drop when\nmade normal", fontsize=7)
    ax_t.tick_params(labelbottom=False, labelsize=7)
    _mel_axis(ax_s, ex.spectrogram, ex.sample_rate, ex.duration, "")
    mel_pos = _outline_peak(ax_s, ax_t, ex)
    imp = ex.band_importance
    colours = ["tab:red" if v > 0 else "tab:blue" for v in imp]
    ax_f.barh((mel_pos[:-1] + mel_pos[1:]) / 2, imp, height=np.diff(mel_pos) * 0.9, color=colours)
    ax_f.axvline(0, color="k", lw=0.6)
    ax_f.tick_params(labelleft=False, labelsize=6)
    ax_f.xaxis.set_major_locator(plt.MaxNLocator(2))
    ax_f.set_xlabel("drop when band\nmade normal", fontsize=7)
    if ex.nearest_spectrogram is not None:
        dur = ex.nearest_spectrogram.shape[1] * 512 / ex.sample_rate
        _mel_axis(ax_n, ex.nearest_spectrogram, ex.sample_rate, dur, "")
        ax_n.yaxis.tick_right()  # clear of the band panel on its left
        ax_n.yaxis.set_label_position("right")
        ax_n.set_title(
            f"nearest normal: {ex.nearest_name}\n({ex.nearest_domain} bank, distance "
            f"{ex.nearest_distance:.4g})",
            fontsize=8,
        )
    else:
        ax_n.axis("off")
        if ex.nearest_domain is None:
            what = (
                "no bank clip\n(this detector keeps no normal recordings;\n"
                "bands made normal from the clip's own median)"
            )
        else:
            near = ex.nearest_name or f"a {ex.nearest_domain} bank clip"
            what = f"nearest normal: {near}\n(audio not available)"
        ax_n.text(0.5, 0.5, what, ha="center", va="center", fontsize=8,
                  transform=ax_n.transAxes)  # fmt: skip
    return _png(fig)
