"""A corpus of bad inputs generated in the tests: broken audio files and tampered artifacts.

:func:`write_audio_corpus` writes every kind of broken or unusual audio file next to a good clip;
:data:`EXPECTED` says which must be refused (and by which words of the error message) and which
must be scored. :func:`tamper` damages a saved detector folder in one of the ways a disk, a copy
or a person can.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000


def _tone(seconds: float, sr: int = SR) -> np.ndarray:
    t = np.arange(round(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def huge_flac(path: Path, hours: float = 1.0, sr: int = SR) -> Path:
    """A tiny FLAC whose STREAMINFO declares ``hours`` of audio (a decompression bomb's header).

    Half a second of silence is encoded, then the 36-bit total-samples field of STREAMINFO is
    set to ``hours`` (``fLaC``, block header, 10 bytes of block/frame sizes, then 64 bits: rate
    (20), channels - 1 (3), bits - 1 (5), total samples (36)).
    """
    sf.write(path, np.zeros(sr // 2, np.int16), sr, format="FLAC", subtype="PCM_16")
    data = bytearray(path.read_bytes())
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # first block is STREAMINFO
    (word,) = struct.unpack(">Q", data[18:26])
    total = round(hours * 3600 * sr)
    word = (word & ~((1 << 36) - 1)) | total
    data[18:26] = struct.pack(">Q", word)
    path.write_bytes(bytes(data))
    return path


def write_audio_corpus(folder: Path, good: np.ndarray | None = None) -> dict[str, Path]:
    """Write the bad-input corpus into ``folder``; returns ``{case: path}``.

    File names follow the DCASE test-clip form so that a detector resolves their section.
    """
    folder.mkdir(parents=True, exist_ok=True)
    good = _tone(1.0) if good is None else good.astype(np.float32)

    def name(i: int, case: str, ext: str = "wav") -> Path:
        return folder / f"section_00_source_test_normal_{i:04d}_{case}.{ext}"

    out: dict[str, Path] = {}
    out["good"] = name(0, "good")
    sf.write(out["good"], good, SR, subtype="PCM_16")
    out["truncated"] = name(1, "truncated")
    sf.write(out["truncated"], good, SR, subtype="PCM_16")
    raw = out["truncated"].read_bytes()
    out["truncated"].write_bytes(raw[: len(raw) // 2])
    out["nan"] = name(2, "nan")
    bad = good.copy()
    bad[len(bad) // 3] = np.nan
    sf.write(out["nan"], bad, SR, subtype="FLOAT")
    out["inf"] = name(3, "inf")
    bad = good.copy()
    bad[-1] = np.inf
    sf.write(out["inf"], bad, SR, subtype="FLOAT")
    out["huge"] = huge_flac(name(4, "huge", "flac"))
    out["rate8k"] = name(5, "rate8k")
    sf.write(out["rate8k"], good[::2], SR // 2, subtype="PCM_16")
    out["rate48k"] = name(6, "rate48k")
    sf.write(out["rate48k"], np.repeat(good, 3), SR * 3, subtype="PCM_16")
    out["text"] = name(7, "text")
    out["text"].write_text("this is not audio, just text renamed to .wav\n")
    out["empty"] = name(8, "empty")
    out["empty"].write_bytes(b"")
    out["one_sample"] = name(9, "one_sample")
    sf.write(out["one_sample"], good[:1], SR, subtype="PCM_16")
    out["loud_float"] = name(10, "loud_float")
    sf.write(out["loud_float"], good * 1e6, SR, subtype="FLOAT")
    for i, (case, spec) in enumerate(RATE_CHANNEL_BOMBS.items(), start=11):
        out[case] = bomb_flac(name(i, case, "flac"), *spec)
    return out


#: Cases that must be refused, with a word their error message contains (besides the file name).
REFUSED: dict[str, str] = {
    "truncated": "truncated",
    "nan": "not finite",
    "inf": "not finite",
    "text": "header",
    "empty": "empty",
    "one_sample": "1 samples",
    "bomb_96k_8ch": "samples",
    "bomb_384k_8ch": "samples",
}
#: Cases that are valid audio and must be scored.
SCORED = ("good", "rate8k", "rate48k", "loud_float")


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _threshold(value: float) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        path = folder / "thresholds.json"
        doc = json.loads(path.read_text())
        doc["thresholds"][0]["threshold"] = value
        # json writes NaN / Infinity literals, which Python's json reads back
        path.write_text(json.dumps(doc))

    return edit


#: Ways to damage a detector folder: ``name → (edit(folder), file the error must name)``.
TAMPERING: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated_head": (lambda d: _truncate(d / "head.safetensors"), "head.safetensors"),
    "truncated_backend": (lambda d: _truncate(d / "backend.safetensors"), "backend.safetensors"),
    "empty_config": (lambda d: (d / "config.json").write_text(""), "config.json"),
    "invalid_config": (lambda d: (d / "config.json").write_text("{not json"), "config.json"),
    "nan_threshold": (_threshold(float("nan")), "thresholds.json"),
    "inf_threshold": (_threshold(float("inf")), "thresholds.json"),
    "negative_threshold": (_threshold(-1.0), "thresholds.json"),
    "missing_manifest": (lambda d: (d / "manifest.json").unlink(), "manifest.json"),
    # rewritten with a fresh manifest, as an attacker with write access would: content checks
    "trust_in_overrides": (lambda d: _trust_override(d), "config.json"),
    "nan_bank_row": (lambda d: _edit_bank(d, nan=True), "backend.safetensors"),
    "wrong_dim_bank": (lambda d: _edit_bank(d, nan=False), "backend.safetensors"),
}


def _trust_override(folder: Path) -> None:
    """``trust_checkpoint`` smuggled into every dict the loader passes to the backbone."""
    from stetho.utils.io import write_manifest

    path = folder / "config.json"
    meta = json.loads(path.read_text())
    meta["experiment"]["backbone"]["overrides"] = {"trust_checkpoint": True}
    meta["backbone"]["extra_config"] = {
        **meta["backbone"]["extra_config"],
        "trust_checkpoint": True,
    }
    path.write_text(json.dumps(meta))
    write_manifest(folder)


def _edit_bank(folder: Path, *, nan: bool) -> None:
    """A NaN row, or a bank of another dimension, in ``backend.safetensors`` (manifest renewed)."""
    from safetensors.numpy import load_file, save_file

    from stetho.utils.io import write_manifest

    path = folder / "backend.safetensors"
    arrays = load_file(str(path))
    name = next(k for k, v in arrays.items() if v.size)
    if nan:
        arrays[name][0, 0] = np.nan
    else:
        arrays[name] = np.zeros((arrays[name].shape[0], arrays[name].shape[1] + 3), np.float32)
    save_file(arrays, str(path))
    write_manifest(folder)


def bomb_flac(path: Path, seconds: float, rate: int, channels: int) -> Path:
    """A tiny FLAC whose STREAMINFO declares ``seconds`` at ``rate`` Hz × ``channels`` (a decode
    bomb by rate × channels: 599 s × 96 kHz × 8 channels is 460 M samples in a few KB).

    A tenth of a second of silence is encoded, then the 36-bit total-samples field is patched
    (see :func:`huge_flac`).
    """
    sf.write(
        path, np.zeros((rate // 10, channels), np.int16), rate, format="FLAC", subtype="PCM_16"
    )
    data = bytearray(path.read_bytes())
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0
    (word,) = struct.unpack(">Q", data[18:26])
    word = (word & ~((1 << 36) - 1)) | round(seconds * rate)
    data[18:26] = struct.pack(">Q", word)
    path.write_bytes(bytes(data))
    return path


#: Decode bombs by rate × channels, ``case → (seconds, rate, channels)``: each is refused from
#: its header (:data:`stetho.data.audio.MAX_SAMPLES`), with "samples" in the message.
RATE_CHANNEL_BOMBS: dict[str, tuple[float, int, int]] = {
    "bomb_96k_8ch": (599.0, 96_000, 8),
    "bomb_384k_8ch": (599.0, 384_000, 8),
}

#: Watched-folder cases (tests/serving/test_folder_source.py): a writer pausing longer than
#: ``settle_seconds`` (header final or 0xFFFFFFFF placeholder), a file copied in with an old
#: mtime (``cp -p``, ``rsync -a``, ``mv``) while the monitor was stopped, a file whose scoring
#: raises (MemoryError) before a good one.
FOLDER_CASES = ("paused_writer_final_header", "paused_writer_open_header", "old_mtime", "raises")

#: HTTP bodies declared large and sent slowly (#22 item 5), ``case → declared Content-Length``:
#: five 50 MiB bodies and one of 6 MiB fill a 256 MiB budget reserved by declared length; the
#: service reserves what arrives and cuts bodies slower than its minimum rate with 408.
SLOW_BODIES: dict[str, int] = {
    **{f"slow_50mib_{i}": 50 * 2**20 for i in range(5)},
    "slow_6mib": 6 * 2**20,
}

#: Range bounds outside years 1..9999 once converted to UTC (#22 item 6): clamped, never a 500.
EXTREME_DATES = (
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999Z",
)


def corrupt_sqlite(path: Path, first_page: int = 10, every: int = 3, page: int = 4096) -> Path:
    """Damage every ``every``-th page of an SQLite file from ``first_page`` on (a disk or a
    copy gone wrong), leaving the header and schema pages readable (#22 item 6)."""
    data = bytearray(path.read_bytes())
    if len(data) <= (first_page + 1) * page:
        raise ValueError(f"{path}: too small to damage past page {first_page} ({len(data)} B)")
    for at in range(first_page * page, len(data) - page, every * page):
        data[at + 100 : at + 600] = b"\xa5" * 500
    path.write_bytes(bytes(data))
    return path
