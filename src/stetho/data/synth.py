"""Synthetic DCASE-2023-format machine-sound dataset (our own generator, for tests and demos).

Layout written under ``out_root`` (protocol §1.2–1.4, §4.1)::

    dev_data/raw/<m>/train/section_XX_<source|target>_train_normal_NNNN_spd_<v>_ld_<v>.wav
    dev_data/raw/<m>/test/section_XX_<domain>_test_<normal|anomaly>_NNNN_spd_<v>_ld_<v>.wav
    dev_data/raw/<m>/attributes_XX.csv
    eval_data/raw/<m>/train/...              (only with ``eval_machines``)
    eval_data/raw/<m>/test/section_XX_NNNN.wav   (anonymised)
    ground_truth/ground_truth_{data,domain,attributes}/ground_truth_<m>_section_XX_test.csv
    stetho_synthetic.json                    (generator parameters)

Sounds: a rotating machine (harmonics of a rotation frequency that depends on the ``spd``
attribute, harmonic weights that depend on the ``ld`` attribute, slow speed jitter), optional
gear-mesh tone with sidebands and valve-like clicks, coloured broadband noise. The target domain
uses other speed/load values and a different background (tilt, level, hum) and has only a few
train clips. Anomalies (test only): bearing-defect impulses, imbalance amplitude modulation,
rubbing noise bursts, or a shifted rotation frequency.

Every clip has its own random stream derived from (seed, machine, section, partition, group,
index), so the same seed gives byte-identical files.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from stetho.utils.io import atomic_write_bytes, atomic_write_text

__all__ = ["ANOMALY_KINDS", "MARKER_FILE", "generate_synthetic_dataset", "synthesize_clip"]

logger = logging.getLogger(__name__)

MARKER_FILE = "stetho_synthetic.json"
ANOMALY_KINDS: tuple[str, ...] = ("bearing", "imbalance", "rubbing", "shift")
_MACHINE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_SUPPORTED_YEARS = (2022, 2023, 2024, 2025)

# Attribute grids (speed value -> speed factor = v / 30; load 1..3).
_SPD = {"source": (27, 30, 33), "target": (38, 41)}
_LD = {"source": (1, 2), "target": (3,)}


@dataclass(frozen=True)
class _Profile:
    f_rot: float  # rotation frequency at speed factor 1 (Hz)
    n_harm: int
    decay: float  # harmonic amplitude ratio
    teeth: int  # gear mesh (0: none)
    clicks: float  # valve clicks per second (0: none)
    tilt: float  # noise spectral slope (1/f^tilt)
    noise: float  # noise RMS relative to the tonal part
    resonance: float  # bearing/structure resonance (Hz)


_KNOWN: dict[str, _Profile] = {
    "fan": _Profile(48.0, 14, 0.80, 0, 0.0, 0.6, 0.5, 2600.0),
    "gearbox": _Profile(31.0, 10, 0.70, 23, 0.0, 0.9, 0.35, 3300.0),
    "valve": _Profile(22.0, 6, 0.60, 0, 3.0, 1.2, 0.25, 4100.0),
    "bearing": _Profile(41.0, 8, 0.75, 0, 0.0, 0.8, 0.4, 3800.0),
    "slider": _Profile(17.0, 12, 0.82, 0, 1.0, 1.0, 0.45, 2900.0),
    "pump": _Profile(59.0, 9, 0.72, 7, 0.0, 1.1, 0.5, 2100.0),
    "ToyCar": _Profile(83.0, 12, 0.78, 11, 0.0, 0.7, 0.3, 3500.0),
    "ToyTrain": _Profile(26.0, 10, 0.76, 0, 2.0, 0.9, 0.35, 3000.0),
}


def _profile(machine: str, section: str) -> _Profile:
    base = _KNOWN.get(machine)
    h = zlib.crc32(machine.encode())
    if base is None:
        base = _Profile(
            f_rot=18.0 + (h % 700) / 10.0,
            n_harm=6 + h % 9,
            decay=0.6 + ((h >> 8) % 25) / 100.0,
            teeth=(0, 0, 9, 13, 17)[(h >> 12) % 5],
            clicks=(0.0, 0.0, 0.0, 2.0)[(h >> 16) % 4],
            tilt=0.5 + ((h >> 18) % 10) / 10.0,
            noise=0.25 + ((h >> 22) % 30) / 100.0,
            resonance=2000.0 + (h >> 4) % 2500,
        )
    s = int(section) if section.isdigit() else zlib.crc32(section.encode()) % 7
    # each section: a slightly different machine of the same type
    return _Profile(
        f_rot=base.f_rot * (1.0 + 0.13 * s),
        n_harm=base.n_harm,
        decay=base.decay,
        teeth=base.teeth + (2 * s if base.teeth else 0),
        clicks=base.clicks,
        tilt=base.tilt,
        noise=base.noise,
        resonance=base.resonance * (1.0 + 0.05 * s),
    )


def _shaped_noise(rng: np.random.Generator, n: int, sr: int, gain_fn: Any) -> np.ndarray:
    """White noise shaped in the frequency domain by ``gain_fn(freqs_hz)``; unit RMS, (n,)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / sr)
    out = np.fft.irfft(spec * gain_fn(freqs), n)
    return out / (np.sqrt(np.mean(out**2)) + 1e-12)


def synthesize_clip(
    rng: np.random.Generator,
    machine: str,
    section: str,
    domain: str,
    spd: int,
    ld: int,
    anomaly: str | None,
    *,
    seconds: float,
    sr: int,
) -> np.ndarray:
    """One synthetic clip, float64 ``(N,)`` with peak ≤ 0.9.

    Args:
        rng: Random stream of this clip.
        machine, section: Select the machine profile.
        domain: "source" or "target" (background conditions).
        spd, ld: Attribute values (speed ×30, load level).
        anomaly: None for a normal clip, else one of :data:`ANOMALY_KINDS`.
        seconds, sr: Length and rate.
    """
    prof = _profile(machine, section)
    n = round(seconds * sr)
    t = np.arange(n) / sr  # (N,)
    speed = spd / 30.0
    if anomaly == "shift":
        speed *= float(rng.choice([-1.0, 1.0])) * rng.uniform(0.05, 0.09) + 1.0
    f_rot = prof.f_rot * speed
    # slow speed wander: phase of f_rot * (1 + eps * sin(2π f_w t + φ))
    f_w, eps = rng.uniform(0.2, 0.6), rng.uniform(0.002, 0.006)
    phase = (
        2
        * np.pi
        * f_rot
        * (t - eps / (2 * np.pi * f_w) * np.cos(2 * np.pi * f_w * t + rng.uniform(0, 2 * np.pi)))
    )  # (N,)
    k = np.arange(1, prof.n_harm + 1)  # (K,)
    load_tilt = 0.04 * (ld - 1)  # heavier load: stronger upper harmonics
    amps = (prof.decay + load_tilt) ** (k - 1) * rng.uniform(0.8, 1.2, size=k.size)  # (K,)
    amps = np.where(k * f_rot * 1.1 < sr / 2, amps, 0.0)
    # Σ_k a_k sin(k·phase + φ_k) via powers of exp(i·phase) (cheaper than K sin evaluations)
    coef = amps * np.exp(1j * rng.uniform(0, 2 * np.pi, size=k.size))  # (K,)
    z = np.exp(1j * phase)  # (N,)
    zk = z.copy()
    acc = coef[0] * zk
    for c in coef[1:]:
        zk *= z
        acc += c * zk
    tones = acc.imag  # (N,)
    if prof.teeth and prof.teeth * f_rot * 1.2 < sr / 2:
        mesh = prof.teeth * phase
        tones += 0.5 * np.sin(mesh) * (1.0 + 0.4 * np.sin(phase))  # mesh tone + sidebands
    if anomaly == "imbalance":
        depth = rng.uniform(0.5, 0.8)
        tones = tones * (1.0 + depth * np.sin(phase + rng.uniform(0, 2 * np.pi)))
        tones += rng.uniform(1.5, 2.5) * amps[0] * np.sin(phase)
    tones /= np.sqrt(np.mean(tones**2)) + 1e-12

    # background: coloured noise; the target domain has another tilt/level and a mains-like hum
    tilt = prof.tilt + (0.5 if domain == "target" else 0.0)
    noise_level = prof.noise * (1.6 if domain == "target" else 1.0) * (1.0 + 0.15 * (ld - 1))
    sig = tones + noise_level * _shaped_noise(
        rng, n, sr, lambda f: 1.0 / np.maximum(f, 20.0) ** (tilt / 2)
    )
    if domain == "target":
        sig += 0.3 * np.sin(2 * np.pi * 100.0 * t + rng.uniform(0, 2 * np.pi))
    if prof.clicks:
        sig += _clicks(rng, prof, n, sr, seconds)
    sig += _mechanical_fault(rng, prof, anomaly, f_rot, phase, t, n, sr, seconds)
    sig *= 0.08 * 10 ** (rng.uniform(-1.0, 1.0) / 20)  # about -22 dBFS RMS, ±1 dB
    peak = float(np.max(np.abs(sig)))
    if peak > 0.9:
        sig *= 0.9 / peak
    return sig


def _clicks(rng: np.random.Generator, prof: Any, n: int, sr: int, seconds: float) -> np.ndarray:
    """Valve-like clicks: short decaying bursts at a roughly constant rate, (N,)."""
    onsets = np.cumsum(rng.uniform(0.7, 1.3, size=int(seconds * prof.clicks) + 2)) / prof.clicks
    env = np.zeros(n)
    kern = np.exp(-np.arange(int(0.08 * sr)) / (0.01 * sr))
    for o in onsets[onsets < seconds]:
        i0 = int(o * sr)
        seg = kern[: n - i0]
        env[i0 : i0 + seg.size] += seg
    return 1.5 * env * _shaped_noise(rng, n, sr, lambda f: (f > 500) & (f < 6000))


def _mechanical_fault(
    rng: np.random.Generator,
    prof: Any,
    anomaly: str | None,
    f_rot: float,
    phase: np.ndarray,
    t: np.ndarray,
    n: int,
    sr: int,
    seconds: float,
) -> np.ndarray | float:
    """The added sound of a ``bearing`` or ``rubbing`` fault, (N,); 0 for other kinds."""
    if anomaly == "bearing":
        # periodic impacts at a defect frequency, each ringing at a structural resonance
        f_def = f_rot * rng.uniform(3.2, 5.3)
        times = np.arange(rng.uniform(0, 1 / f_def), seconds, 1 / f_def)
        times = times + rng.normal(0, 0.02 / f_def, size=times.size)
        imp = np.zeros(n)
        idx = np.clip((times * sr).astype(int), 0, n - 1)
        np.add.at(imp, idx, rng.uniform(0.6, 1.0, size=idx.size))
        kt = np.arange(int(0.012 * sr)) / sr
        f_res = prof.resonance * rng.uniform(0.9, 1.1)
        kernel = np.exp(-kt / 0.0015) * np.sin(2 * np.pi * f_res * kt)
        ring = np.fft.irfft(np.fft.rfft(imp, 2 * n) * np.fft.rfft(kernel, 2 * n), 2 * n)[:n]
        return rng.uniform(0.6, 1.2) * ring / (np.sqrt(np.mean(ring**2)) + 1e-12)
    if anomaly == "rubbing":
        # friction noise bursts, band-limited, modulated at the rotation rate
        band_lo = rng.uniform(1200.0, 2200.0)
        rub = _shaped_noise(rng, n, sr, lambda f: (f > band_lo) & (f < band_lo + 1800.0))
        gate = (np.sin(2 * np.pi * rng.uniform(0.8, 2.0) * t + rng.uniform(0, 6.3)) > -0.3).astype(
            float
        )
        mod = (0.5 + 0.5 * np.sin(phase)) ** 2
        return rng.uniform(0.5, 0.9) * rub * mod * gate
    if anomaly not in (None, "imbalance", "shift"):
        raise ValueError(f"unknown anomaly kind {anomaly!r}; valid: {', '.join(ANOMALY_KINDS)}")
    return 0.0


def _wav_bytes(x: np.ndarray, sr: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _clip_rng(seed: int, *keys: str | int) -> np.random.Generator:
    words = [seed] + [k if isinstance(k, int) else zlib.crc32(k.encode()) for k in keys]
    return np.random.default_rng(words)


@dataclass(frozen=True)
class _Spec:
    part: str
    machine: str
    section: str
    domain: str
    label: str
    split: str
    index: int

    def render(
        self, seed: int, seconds: float, sr: int
    ) -> tuple[str, np.ndarray, tuple[tuple[str, str], ...]]:
        """(revealed file name, audio (N,), attribute pairs) of this clip."""
        rng = _clip_rng(
            seed, self.part, self.machine, self.section, self.domain, self.label, self.split,
            self.index,
        )  # fmt: skip
        spd = int(rng.choice(_SPD[self.domain]))
        ld = int(rng.choice(_LD[self.domain]))
        kind = str(rng.choice(ANOMALY_KINDS)) if self.label == "anomaly" else None
        x = synthesize_clip(
            rng, self.machine, self.section, self.domain, spd, ld, kind, seconds=seconds, sr=sr
        )
        name = (
            f"section_{self.section}_{self.domain}_{self.split}_{self.label}_{self.index:04d}"
            f"_spd_{spd}_ld_{ld}.wav"
        )
        return name, x, (("spd", str(spd)), ("ld", str(ld)))


def _attribute_csv(rows: list[tuple[str, tuple[tuple[str, str], ...]]]) -> str:
    n_attr = max((len(a) for _, a in rows), default=0)
    header = ["file_name"] + [f"d{j}{c}" for j in range(1, n_attr + 1) for c in "pv"]
    lines = [",".join(header)]
    for rel, attrs in rows:
        cells = [rel] + [x for pair in attrs for x in pair]
        lines.append(",".join(cells + [""] * (len(header) - len(cells))))
    return "\n".join(lines) + "\n"


def _check_arguments(
    machines: Sequence[str],
    eval_machines: Sequence[str],
    sections: Sequence[str],
    year: int,
    counts: tuple[int, int, int],
    seconds: float,
    sr: int,
) -> None:
    if year not in _SUPPORTED_YEARS:
        raise ValueError(f"year {year} not supported; valid: {_SUPPORTED_YEARS}")
    for m in (*machines, *eval_machines):
        if not _MACHINE_RE.fullmatch(m):
            raise ValueError(
                f"invalid machine name {m!r}: use letters, digits and '-' (no '_', no '/')"
            )
    if set(machines) & set(eval_machines):
        raise ValueError("machines and eval_machines must be disjoint (as in the official data)")
    for s in sections:
        if not re.fullmatch(r"\d{2}", s):
            raise ValueError(f"invalid section {s!r}: expected two digits like '00'")
    if min(counts) < 0 or seconds <= 0 or sr <= 0:
        raise ValueError("counts must be >= 0 and seconds, sr > 0")
    if not machines and not eval_machines:
        raise ValueError("no machine types given")


def _clear_previous(out: Path, overwrite: bool) -> None:
    """Refuse foreign data; remove a previous synthetic dataset when ``overwrite``."""
    marker = out / MARKER_FILE
    ours = [out / "dev_data", out / "eval_data", out / "ground_truth"]
    if any(p.exists() for p in ours):
        if not marker.is_file():
            raise FileExistsError(
                f"{out} already contains data not written by the synthetic generator; "
                "choose an empty folder"
            )
        if not overwrite:
            raise FileExistsError(f"{out} already holds a synthetic dataset; pass overwrite=True")
        for p in ours:
            if p.exists():
                shutil.rmtree(p)
        marker.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _write_section(
    out: Path,
    part: str,
    m: str,
    sec: str,
    counts: tuple[int, int, int],
    seed: int,
    seconds: float,
    sr: int,
) -> None:
    """Clips, attribute file (and, for eval, the ground truth) of one machine section."""
    n_src, n_tgt, n_test = counts
    mdir = out / f"{part}_data" / "raw" / m
    gdir = out / "ground_truth"
    specs = [
        _Spec(part, m, sec, dom, "normal", "train", i)
        for dom, count in (("source", n_src), ("target", n_tgt))
        for i in range(count)
    ]
    specs += [
        _Spec(part, m, sec, dom, lab, "test", i)
        for dom in ("source", "target")
        for lab in ("normal", "anomaly")
        for i in range(n_test)
    ]
    attr_rows: list[tuple[str, tuple[tuple[str, str], ...]]] = []
    gt: list[tuple[str, str, str, str]] = []  # (anon, full w/o .wav, label, domain)
    if part == "eval":
        test_specs = [sp for sp in specs if sp.split == "test"]
        order = _clip_rng(seed, "anonymise", m, sec).permutation(len(test_specs))
        anon_of = {test_specs[int(j)]: k for k, j in enumerate(order)}
    for sp in specs:
        name, x, attrs = sp.render(seed, seconds, sr)
        if part == "dev" or sp.split == "train":
            atomic_write_bytes(mdir / sp.split / name, _wav_bytes(x, sr))
            attr_rows.append((f"{m}/{sp.split}/{name}", attrs))
        else:
            anon = f"section_{sec}_{anon_of[sp]:04d}.wav"
            atomic_write_bytes(mdir / "test" / anon, _wav_bytes(x, sr))
            gt.append((anon, name[: -len(".wav")],
                       "1" if sp.label == "anomaly" else "0",
                       "1" if sp.domain == "target" else "0"))  # fmt: skip
    atomic_write_text(mdir / f"attributes_{sec}.csv", _attribute_csv(attr_rows))
    if part == "eval":
        gt.sort()
        fname = f"ground_truth_{m}_section_{sec}_test.csv"
        for sub, col in (("data", 2), ("domain", 3), ("attributes", 1)):
            atomic_write_text(
                gdir / f"ground_truth_{sub}" / fname,
                "".join(f"{row[0]},{row[col]}\n" for row in gt),
            )


def generate_synthetic_dataset(
    out_root: str | os.PathLike[str],
    *,
    machines: Sequence[str] = ("fan", "gearbox", "valve"),
    sections: Sequence[str] = ("00",),
    n_train_source: int = 50,
    n_train_target: int = 10,
    n_test_per_group: int = 10,
    seconds: float = 2.0,
    sr: int = 16000,
    seed: int = 0,
    year: int = 2023,
    eval_machines: Sequence[str] = (),
    overwrite: bool = False,
) -> Path:
    """Write a synthetic dataset in the DCASE 2023 Task 2 layout and return ``out_root``.

    Args:
        out_root: Output folder (created).
        machines: Dev machine types (no ``_`` in names).
        sections: Two-digit sections per machine type.
        n_train_source, n_train_target: Normal train clips per section and domain.
        n_test_per_group: Test clips per (domain × label) and section.
        seconds, sr: Clip length and sampling rate.
        seed: Same seed → byte-identical files.
        year: Name format year (2022–2025 share the 2023 format); recorded in the marker file.
        eval_machines: If given, also write ``eval_data`` (train + anonymised test) for these
            types and the official ground-truth folders under ``<out_root>/ground_truth``.
        overwrite: Replace a previous synthetic dataset in ``out_root`` (only one this function
            wrote, recognised by its marker file).

    Raises:
        FileExistsError: ``out_root`` already holds data (and ``overwrite`` is False, or it was
            not written by this generator).
        ValueError: invalid arguments.
    """
    _check_arguments(
        machines, eval_machines, sections, year, (n_train_source, n_train_target, n_test_per_group),
        seconds, sr,
    )  # fmt: skip
    out = Path(out_root)
    marker = out / MARKER_FILE
    _clear_previous(out, overwrite)
    for part, part_machines in (("dev", machines), ("eval", eval_machines)):
        for m in part_machines:
            for sec in sections:
                counts = (n_train_source, n_train_target, n_test_per_group)
                _write_section(out, part, m, sec, counts, seed, seconds, sr)
    params = {
        "generator": "stetho.data.synth",
        "format_version": 1,
        "machines": list(machines),
        "eval_machines": list(eval_machines),
        "sections": list(sections),
        "n_train_source": n_train_source,
        "n_train_target": n_train_target,
        "n_test_per_group": n_test_per_group,
        "seconds": seconds,
        "sr": sr,
        "seed": seed,
        "year": year,
    }
    atomic_write_text(marker, json.dumps(params, indent=2) + "\n")
    logger.info("synthetic dataset written to %s", out)
    return out
