"""``stetho monitor``: a folder receiving files while it runs, alarms, restarts, failing sources,
a growing WAV resumed after a restart, and one clip scored the same through ``detect``,
``monitor`` (folder, growing WAV, stdin) and ``watch``."""

from __future__ import annotations

import csv
import io
import itertools
import json
import shutil
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stetho.cli.main import main
from stetho.data import ClipTable
from stetho.detector import Detector
from stetho.serving import score_pcm_stream
from stetho.serving.monitor import Monitor
from stetho.serving.monitor_config import MonitorConfig, SourceConfig, load_monitor_config
from stetho.serving.sources import read_wav_header
from stetho.store import ScoreStore
from stetho.utils.config import ConfigError

SR = 16000


def wait_for(pred: Callable[[], bool], timeout: float = 90.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@contextmanager
def running(monitor: Monitor) -> Iterator[list[str]]:
    lines: list[str] = []
    t = threading.Thread(target=monitor.run, kwargs={"status": lines.append}, daemon=True)
    t.start()
    try:
        yield lines
    finally:
        monitor.stop()
        t.join(60)
        assert not t.is_alive()


@pytest.fixture(scope="module")
def detector_dir(detector: Detector, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return detector.save(tmp_path_factory.mktemp("monitor_det") / "detector")


@pytest.fixture(scope="module")
def loaded(detector_dir: Path) -> Detector:
    return Detector.load(detector_dir)


@pytest.fixture(scope="module")
def normal_waves(serving_data: tuple[Path, ClipTable]) -> list[np.ndarray]:
    _, table = serving_data
    clips = table.filter(split="train", machine="fan")
    return [sf.read(c.path, dtype="float32")[0] for c in clips][:4]


def noise(seed: int, seconds: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.3 * rng.standard_normal(int(seconds * SR))).astype(np.float32)


def wav_bytes(wave: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, SR, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def config(tmp: Path, det: Path, sources: list[dict], **kw: object) -> MonitorConfig:
    data = {
        "detector": str(det),
        "db": str(tmp / "scores.db"),
        "alarm": {"k": 2, "n": 3, "clear_k": 0},
        "poll_seconds": 0.05,
        "status_seconds": 0.2,
        "retry_seconds": 0.2,
        "sources": sources,
        **kw,
    }
    return MonitorConfig.from_dict(data)


def test_folder_receiving_files_opens_and_closes_an_alarm(
    tmp_path: Path, detector_dir: Path, loaded: Detector, normal_waves: list[np.ndarray]
) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    cfg = config(
        tmp_path,
        detector_dir,
        [
            {
                "kind": "folder",
                "path": str(inbox),
                "machine": "fan",
                "section": 0,
                "settle_seconds": 1.5,  # 15x the writer's pause below: holds on a loaded machine
            }
        ],
    )
    waves = [
        normal_waves[0],
        normal_waves[1],
        noise(1),
        noise(2),
        noise(3),
        normal_waves[2],
        normal_waves[3],
        normal_waves[0],
    ]
    store = ScoreStore.open(cfg.db)
    monitor = Monitor(cfg, store)
    paths = []
    with running(monitor) as status:
        for i, w in enumerate(waves):
            path = inbox / f"rec_{i:03d}.wav"
            data = wav_bytes(w)
            with open(path, "wb") as fh:  # the recorder writes the file in two steps
                fh.write(data[: len(data) // 2])
                fh.flush()
                time.sleep(0.1)  # << settle_seconds: the half file must not be scored
                fh.write(data[len(data) // 2 :])
            paths.append(path)
            wait_for(lambda n=i + 1: len(store.scores("fan", "00")) == n, what=f"file {i}")
        wait_for(lambda: any("open alarms: none" in s for s in status[-3:]), what="status")
    rows = store.scores("fan", "00")
    assert len(rows) == len(waves)  # each file scored once, as a whole
    expected = loaded.score_files(paths, "fan", "00")
    np.testing.assert_allclose([r.score for r in rows], expected, rtol=0, atol=1e-6)
    decisions = [r.decision for r in rows]
    assert decisions == [0, 0, 1, 1, 1, 0, 0, 0]
    ident = loaded.describe()
    assert {(r.detector_id, r.detector_version) for r in rows} == {(ident["id"], 1)}
    assert all(r.window_start == 0.0 and r.window_end == pytest.approx(1.0) for r in rows)
    assert [r.source for r in rows] == [str(p) for p in paths]  # each window names its file
    (alarm,) = store.alarms(machine="fan")
    assert alarm.opened == rows[3].time  # 2 of the last 3 anomalous
    assert alarm.closed == rows[7].time  # none of the last 3 anomalous
    assert alarm.n_windows == 3 and alarm.peak_score == pytest.approx(max(expected[2:5]))
    assert monitor.stats[f"folder:{inbox}"].alarms_opened == 1
    assert json.loads(store.last_position(f"folder:{inbox}") or "{}")["name"] == "rec_007.wav"
    store.close()


def test_a_restart_scores_only_new_files(
    tmp_path: Path, detector_dir: Path, normal_waves: list[np.ndarray]
) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    cfg = config(
        tmp_path,
        detector_dir,
        [{"kind": "folder", "path": str(inbox), "machine": "fan", "settle_seconds": 0.1}],
    )
    for i in range(3):
        (inbox / f"a{i}.wav").write_bytes(wav_bytes(normal_waves[i]))
    with ScoreStore.open(cfg.db) as store:
        with running(Monitor(cfg, store)):
            wait_for(lambda: len(store.scores("fan")) == 3)
        time.sleep(0.05)
        for i in range(2):  # arrive while the monitor is down
            (inbox / f"b{i}.wav").write_bytes(wav_bytes(noise(10 + i)))
        with running(Monitor(cfg, store)):
            wait_for(lambda: len(store.scores("fan")) == 5)
            time.sleep(0.5)  # nothing else comes
        rows = store.scores("fan")
    assert len(rows) == 5
    assert [r.decision for r in rows] == [0, 0, 0, 1, 1]


def test_a_failing_source_never_stops_the_others(
    tmp_path: Path, detector_dir: Path, normal_waves: list[np.ndarray]
) -> None:
    good = tmp_path / "good"
    good.mkdir()
    (good / "x.wav").write_bytes(wav_bytes(normal_waves[0]))
    cfg = config(
        tmp_path,
        detector_dir,
        [
            {"kind": "folder", "path": str(tmp_path / "missing"), "machine": "fan"},
            {"kind": "folder", "path": str(good), "machine": "pump", "name": "unknown-key"},
            {"kind": "soundcard", "machine": "fan", "rate": SR},
            {"kind": "folder", "path": str(good), "machine": "fan", "settle_seconds": 0},
        ],
    )
    with ScoreStore.open(cfg.db) as store:
        monitor = Monitor(cfg, store)
        with running(monitor) as status:
            wait_for(lambda: len(store.scores("fan")) == 1)
            wait_for(lambda: monitor.stats[f"folder:{tmp_path / 'missing'}"].errors >= 2)
            wait_for(lambda: "FAILED" in (status[-1] if status else ""), what="status line")
    st = monitor.stats
    assert "no such folder" in st[f"folder:{tmp_path / 'missing'}"].state
    assert "no model for pump/00" in st["unknown-key"].state
    try:
        import sounddevice  # noqa: F401
    except (ImportError, OSError):
        assert "stetho[sounddevice]" in st["soundcard:default"].state
    assert st[f"folder:{good}"].windows == 1 and st[f"folder:{good}"].errors == 0


def test_stdin_pcm_source_scores_rolling_windows_until_the_stream_ends(
    tmp_path: Path, detector_dir: Path, loaded: Detector, normal_waves: list[np.ndarray]
) -> None:
    signal = np.concatenate([normal_waves[0], noise(5), normal_waves[1]])  # 3 s
    pcm = (np.clip(signal, -1, 1 - 1 / 32768) * 32768).astype("<i2").tobytes()
    cfg = config(
        tmp_path,
        detector_dir,
        [{"kind": "stdin", "machine": "fan", "rate": SR, "block_seconds": 0.1}],
        window_seconds=1.0,
        hop_seconds=0.5,
    )
    with ScoreStore.open(cfg.db) as store:
        monitor = Monitor(cfg, store, stdin=io.BytesIO(pcm))
        assert monitor.run(status=lambda _: None) == 0  # returns at the end of the stream
        rows = store.scores("fan")
    assert [(r.window_start, r.window_end) for r in rows] == [
        (0.5 * k, 0.5 * k + 1.0) for k in range(5)
    ]
    x = np.frombuffer(pcm, "<i2").astype(np.float32) * np.float32(1 / 32768)
    ref = loaded.score_waveforms([x[k * 8000 : k * 8000 + SR] for k in range(5)], "fan", "00")
    np.testing.assert_allclose([r.score for r in rows], ref, rtol=0, atol=1e-6)
    assert all(r.source == "stdin" for r in rows)


def test_config_file_validation_and_relative_paths(tmp_path: Path) -> None:
    path = tmp_path / "monitor.yaml"
    path.write_text(
        "detector: det\ndb: runs/plant.db\nsources:\n"
        "  - {kind: folder, path: incoming, machine: fan, section: 00}\n"
    )
    cfg = load_monitor_config(path)
    assert cfg.detector == str(tmp_path / "det") and cfg.db == str(tmp_path / "runs/plant.db")
    assert cfg.sources[0].path == str(tmp_path / "incoming") and cfg.sources[0].section == "00"
    for bad, match in [
        ("sources: []\n", "no sources"),
        ("detector: d\nsources: [{kind: folder, machine: fan}]\n", "needs a path"),
        ("detector: d\nsources: [{kind: tape, machine: fan}]\n", "tape"),
        (
            "detector: d\nsources: [{kind: stdin, machine: a}, {kind: stdin, machine: b, "
            "name: x}]\n",
            "one source can read stdin",
        ),
        (
            "detector: d\nalarm: {k: 2, n: 3, clear_k: 2}\nsources: [{kind: stdin, machine: a}]\n",
            "clear_k",
        ),
        ("detector: d\nsources: [{kind: stdin, machine: a, colour: red}]\n", "colour"),
        ("sources: [{kind: stdin, machine: a}]\n", "no detector"),
    ]:
        path.write_text(bad)
        with pytest.raises(ConfigError, match=match):
            load_monitor_config(path)
    assert SourceConfig(kind="wav", path="/x.wav", machine="m").label == "wav:/x.wav"


def streaming_header(rate: int = SR, channels: int = 1) -> bytes:
    """A 16-bit PCM WAV header as a recorder writes it before it knows the length (sizes 0)."""
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * 2 * channels, 2 * channels, 16)
    return (
        b"RIFF"
        + struct.pack("<I", 0)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", 16)
        + fmt
        + (b"data" + struct.pack("<I", 0))
    )


def to_pcm(x: np.ndarray) -> bytes:
    return (np.clip(x, -1, 1 - 1 / 32768) * 32768).astype("<i2").tobytes()


def test_wav_header_parser_reads_streaming_and_extensible_headers(tmp_path: Path) -> None:
    fmt = read_wav_header(io.BytesIO(streaming_header()))
    assert fmt is not None and (fmt.dtype, fmt.channels, fmt.rate, fmt.data_offset) == (
        "int16",
        1,
        SR,
        44,
    )
    assert fmt.data_end(44 + 10) == 44 + 10 and fmt.data_end(44 + 11) == 44 + 10
    assert read_wav_header(io.BytesIO(streaming_header()[:30])) is None  # still being written
    path = tmp_path / "x.wav"
    sf.write(path, np.zeros((100, 3), np.float32), 8000, subtype="FLOAT")  # extensible, 3 ch
    with open(path, "rb") as fh:
        fmt = read_wav_header(fh)
    assert fmt is not None and (fmt.dtype, fmt.channels, fmt.rate) == ("float32", 3, 8000)
    assert fmt.data_end(path.stat().st_size) == fmt.data_offset + 100 * 12


def test_growing_wav_is_followed_and_a_restart_resumes_on_the_window_grid(
    tmp_path: Path, detector_dir: Path, loaded: Detector, normal_waves: list[np.ndarray]
) -> None:
    signal = np.concatenate([normal_waves[0], noise(7), normal_waves[1], noise(8)])  # 4 s
    pcm = to_pcm(signal)
    wav = tmp_path / "live.wav"
    wav.write_bytes(streaming_header())
    cfg = MonitorConfig.from_dict(
        {
            "detector": str(detector_dir),
            "db": str(tmp_path / "s.db"),
            "poll_seconds": 0.05,
            "status_seconds": 0,
            "window_seconds": 1.0,
            "hop_seconds": 0.5,
            "sources": [{"kind": "wav", "path": str(wav), "machine": "fan"}],
        }
    )
    cut1, cut2 = int(1.6 * SR) * 2, int(3.0 * SR) * 2
    with ScoreStore.open(cfg.db) as store:
        with running(Monitor(cfg, store)):
            with open(wav, "ab") as fh:
                fh.write(pcm[:cut1])
            wait_for(lambda: len(store.scores("fan")) == 2)  # windows ending at 1.0 and 1.5 s
            with open(wav, "ab") as fh:
                fh.write(pcm[cut1:cut2])
            wait_for(lambda: len(store.scores("fan")) == 5)
        with open(wav, "ab") as fh:  # recorded while the monitor was down
            fh.write(pcm[cut2:])
        with running(Monitor(cfg, store)):
            wait_for(lambda: len(store.scores("fan")) == 7)
            time.sleep(0.3)
        rows = store.scores("fan")
    spans = [(r.window_start, r.window_end) for r in rows]
    assert spans == [(0.5 * k, 0.5 * k + 1.0) for k in range(7)]  # no gap, no duplicate
    x = np.frombuffer(pcm, "<i2").astype(np.float32) * np.float32(1 / 32768)
    ref = loaded.score_waveforms([x[k * 8000 : k * 8000 + SR] for k in range(7)], "fan", "00")
    np.testing.assert_allclose([r.score for r in rows], ref, rtol=0, atol=1e-6)
    assert [r.decision for r in rows] == [int(s > loaded.thresholds[("fan", "00")]) for s in ref]


def test_one_clip_scores_the_same_through_detect_monitor_and_watch(
    tmp_path: Path, detector_dir: Path, shared_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clips = sorted((shared_dir / "data/dcase2023t2_mini/dev_data/raw/fan/train").glob("*.wav"))
    if not clips:
        pytest.skip("no real fan clip in the shared folder")
    clip = clips[0]
    wave, rate = sf.read(clip, dtype="int16")
    assert rate == SR and wave.ndim == 1
    seconds = wave.shape[0] / SR  # one window = the whole clip
    pcm = wave.astype("<i2").tobytes()

    # detect (the CLI, scores written with repr precision)
    out = tmp_path / "detect.csv"
    assert main(
        [
            "detect",
            str(clip),
            "--detector",
            str(detector_dir),
            "--machine",
            "fan",
            "--section",
            "00",
            "--csv",
            str(out),
            "--db",
            str(tmp_path / "detect.db"),
        ]
    ) in (0,)
    capsys.readouterr()
    with open(out) as fh:
        detect_score = float(next(csv.DictReader(fh))["score"])
    with ScoreStore.open(tmp_path / "detect.db") as store:
        (stored,) = store.scores("fan", "00")
    assert stored.score == detect_score and stored.source == str(clip.absolute())
    assert stored.window_end == pytest.approx(wave.shape[0] / SR) and stored.detector_version == 1

    # watch (the library generator `stetho watch` prints)
    det = Detector.load(detector_dir)
    (event,) = list(
        score_pcm_stream(
            io.BytesIO(pcm),
            SR,
            1,
            "int16",
            detector=det,
            machine="fan",
            section="00",
            window_seconds=seconds,
        )
    )
    watch_score = event.score

    # monitor: a folder receiving the clip, the clip as a growing WAV, and its PCM on stdin
    inbox = tmp_path / "in"
    inbox.mkdir()
    cfg = MonitorConfig.from_dict(
        {
            "detector": str(detector_dir),
            "db": str(tmp_path / "s.db"),
            "poll_seconds": 0.05,
            "status_seconds": 0,
            "window_seconds": seconds,
            "sources": [
                {"kind": "folder", "path": str(inbox), "machine": "fan", "settle_seconds": 0.1},
                {"kind": "wav", "path": str(tmp_path / "live.wav"), "machine": "fan"},
                {"kind": "stdin", "machine": "fan", "rate": SR},
            ],
        }
    )
    with ScoreStore.open(cfg.db) as store:
        monitor = Monitor(cfg, store, stdin=io.BytesIO(pcm))
        t = threading.Thread(target=monitor.run, kwargs={"status": lambda _: None}, daemon=True)
        t.start()
        try:
            shutil.copy(clip, inbox / clip.name)
            shutil.copy(clip, tmp_path / "live.wav")
            wait_for(lambda: len({r.source for r in store.scores("fan")}) == 3)
        finally:
            monitor.stop()
            t.join(60)
        by_source = {r.source: r.score for r in store.scores("fan")}
    # the folder's window names its file, the streams their source
    monitor_scores = [
        by_source[str(inbox / clip.name)],
        *(by_source[s.label] for s in cfg.sources[1:]),
    ]
    np.testing.assert_allclose(
        [detect_score, watch_score, *monitor_scores], detect_score, rtol=0, atol=1e-6
    )
    print(
        f"1 real clip ({clip.name}): detect {detect_score!r}, watch {watch_score!r}, monitor "
        f"{monitor_scores!r}"
    )


def test_calibrating_while_monitoring_records_the_new_version(
    tmp_path: Path, detector_dir: Path, normal_waves: list[np.ndarray]
) -> None:
    from stetho.detector import calibrate_folder

    det_dir = tmp_path / "det"
    shutil.copytree(detector_dir, det_dir)
    inbox = tmp_path / "in"
    inbox.mkdir()
    cfg = config(
        tmp_path,
        det_dir,
        [{"kind": "folder", "path": str(inbox), "machine": "fan", "settle_seconds": 0}],
    )
    hum = [
        (0.5 * normal_waves[i] + 0.3 * np.sin(2 * np.pi * 1500 * np.arange(SR) / SR + i)).astype(
            np.float32
        )
        for i in range(4)
    ]
    with ScoreStore.open(cfg.db) as store:
        monitor = Monitor(cfg, store)
        with running(monitor):
            (inbox / "a.wav").write_bytes(wav_bytes(hum[0]))
            wait_for(lambda: len(store.scores("fan")) == 1)
            new_normal = tmp_path / "new_normal"
            new_normal.mkdir()
            paths = []
            for i in range(1, 4):
                paths.append(new_normal / f"n{i}.wav")
                paths[-1].write_bytes(wav_bytes(hum[i]))
            calibrate_folder(det_dir, {("fan", "00"): paths})  # in place, version 2
            monitor.reload_detectors()
            (inbox / "b.wav").write_bytes(wav_bytes(hum[0]))
            wait_for(lambda: len(store.scores("fan")) == 2)
        first, second = store.scores("fan")
    assert (first.detector_version, second.detector_version) == (1, 2)
    assert first.detector_id == second.detector_id
    assert second.score < first.score  # the same sound, closer to the recalibrated bank


def _monitor_one_clip(
    tmp_path: Path, detector_dir: Path, wave: np.ndarray, *stetho_args: str
) -> tuple[int, str]:
    """``stetho [ARGS] monitor`` on a folder until one clip is scored, then SIGTERM; returns
    (exit code, stderr)."""
    import os
    import signal as sig
    import subprocess
    import sys

    inbox = tmp_path / "in"
    inbox.mkdir()
    cfg_path = tmp_path / "monitor.yaml"
    cfg_path.write_text(
        f"detector: {detector_dir}\ndb: plant.db\npoll_seconds: 0.1\nstatus_seconds: 0.5\n"
        "sources:\n  - {kind: folder, path: in, machine: fan, section: 00, settle_seconds: 0}\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "stetho", *stetho_args, "monitor", str(cfg_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        (tmp_path / "x.wav").write_bytes(wav_bytes(wave))
        (tmp_path / "x.wav").rename(inbox / "x.wav")  # arrives whole

        def scored() -> bool:
            if not (tmp_path / "plant.db").exists():
                return False
            with ScoreStore.open(tmp_path / "plant.db") as s:
                return len(s.scores("fan")) == 1

        wait_for(scored, what="a score from the CLI")
    finally:
        proc.send_signal(sig.SIGTERM)
        try:
            _, err = proc.communicate(timeout=300)  # generous: a loaded machine
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    return proc.returncode, err


def test_cli_monitor_runs_until_sigterm(
    tmp_path: Path, detector_dir: Path, normal_waves: list[np.ndarray]
) -> None:
    code, err = _monitor_one_clip(tmp_path, detector_dir, normal_waves[0])
    assert code == 0, err
    # the last status line is written after the sources stopped, so it counts the window even
    # when SIGTERM arrived between the store write and the source's counters (#22 item 11)
    assert "SIGTERM, stopping" in err
    status_lines = [line for line in err.splitlines() if "open alarms:" in line]
    assert status_lines and "1 win, last" in status_lines[-1], err


def test_folder_windows_mode_scores_rolling_windows_stamped_by_the_file_time(
    tmp_path: Path, detector_dir: Path, loaded: Detector, normal_waves: list[np.ndarray]
) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    x = np.concatenate([normal_waves[0], noise(3)])  # 2 s
    cfg = config(
        tmp_path,
        detector_dir,
        [
            {
                "kind": "folder",
                "path": str(inbox),
                "machine": "fan",
                "mode": "windows",
                "settle_seconds": 0,
                "window_seconds": 1.0,
                "hop_seconds": 0.5,
            }
        ],
    )
    path = inbox / "long.wav"
    path.write_bytes(wav_bytes(x))
    with ScoreStore.open(cfg.db) as store:
        with running(Monitor(cfg, store)):
            wait_for(lambda: len(store.scores("fan")) == 3)
        rows = store.scores("fan")
    assert [(r.window_start, r.window_end) for r in rows] == [(0.0, 1.0), (0.5, 1.5), (1.0, 2.0)]
    end = path.stat().st_mtime
    assert [r.time.timestamp() for r in rows] == pytest.approx(
        [end - 1.0, end - 0.5, end], abs=1e-3
    )
    xq = np.frombuffer(wav_bytes(x)[44:], "<i2").astype(np.float32) / 32768
    ref = loaded.score_waveforms([xq[k * 8000 : k * 8000 + SR] for k in range(3)], "fan", "00")
    np.testing.assert_allclose([r.score for r in rows], ref, rtol=0, atol=1e-6)


def _check_config(tmp_path: Path, detector_dir: Path, sources: str) -> Path:
    """``monitor.yaml`` for ``stetho monitor --check``: the detector, ``plant.db``, ``sources``
    (YAML list items) and the folder ``in``."""
    (tmp_path / "in").mkdir(exist_ok=True)
    cfg_path = tmp_path / "monitor.yaml"
    cfg_path.write_text(f"detector: {detector_dir}\ndb: plant.db\nsources:\n{sources}")
    return cfg_path


def test_cli_check_reports_problems_without_running(
    tmp_path: Path, detector_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg_path = _check_config(tmp_path, detector_dir, "  - {kind: folder, path: in, machine: fan}\n")
    assert main(["monitor", str(cfg_path), "--check"]) == 0
    assert "1 source(s), 0 problem(s)" in capsys.readouterr().out
    _check_config(tmp_path, detector_dir, "  - {kind: folder, path: in, machine: pump}\n"
                  "  - {kind: folder, path: nope, machine: fan}\n")  # fmt: skip
    assert main(["monitor", str(cfg_path), "--check"]) == 1
    out = capsys.readouterr().out
    assert "no model for pump/00" in out and "no such folder" in out


class _Inverted:
    """A scorer whose own rule is the opposite of ``score > threshold``: the monitor must ask it."""

    def __init__(self, inner: Detector) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def decide(self, scores: object, key: object) -> np.ndarray:
        return 1 - np.asarray(self._inner.decide(scores, key))  # type: ignore[arg-type]


def test_decisions_come_from_the_detector_and_status_lines_only_on_change(
    tmp_path: Path, detector_dir: Path, loaded: Detector, normal_waves: list[np.ndarray]
) -> None:
    signal = np.concatenate([normal_waves[0], noise(5)])  # 2 s: a normal and an anomalous window
    pcm = (np.clip(signal, -1, 1 - 1 / 32768) * 32768).astype("<i2").tobytes()
    cfg = config(
        tmp_path,
        detector_dir,
        [{"kind": "stdin", "machine": "fan", "rate": SR, "block_seconds": 0.1}],
        window_seconds=1.0,
        hop_seconds=1.0,
        status_seconds=0.05,
    )
    lines: list[str] = []
    with ScoreStore.open(cfg.db) as store:
        monitor = Monitor(
            cfg, store, stdin=io.BytesIO(pcm), load=lambda p: _Inverted(Detector.load(p))
        )
        assert monitor.run(status=lines.append) == 0
        rows = store.scores("fan")
    own = loaded.decide([r.score for r in rows], ("fan", "00"))
    assert len(rows) == 2 and [r.decision for r in rows] == [1 - int(d) for d in own]
    assert lines, "no status line"
    assert all(a != b for a, b in itertools.pairwise(lines)), lines  # no line twice in a row
    assert "2 win" in lines[-1]


def test_cli_check_fails_on_a_corrupted_store(
    tmp_path: Path, detector_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from datetime import UTC, datetime, timedelta

    from stetho.store import ScoreRow
    from tests.badinput import corrupt_sqlite

    cfg_path = _check_config(tmp_path, detector_dir, "  - {kind: folder, path: in, machine: fan}\n")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    with ScoreStore.open(tmp_path / "plant.db") as store:
        store.add_scores(
            [
                ScoreRow(t0 + timedelta(seconds=i), "fan", "00", "t", 0.0, 1.0, 0.1, 1.0, 0, "d", 1)
                for i in range(3000)
            ]
        )
    assert main(["monitor", str(cfg_path), "--check"]) == 0
    assert "0 problem(s)" in capsys.readouterr().out
    corrupt_sqlite(tmp_path / "plant.db")
    assert main(["monitor", str(cfg_path), "--check"]) == 1
    out = capsys.readouterr().out
    assert "corrupted" in out and "1 problem(s)" in out and "NOT ok" in out


def test_cli_monitor_json_logs_are_one_object_per_line(
    tmp_path: Path, detector_dir: Path, normal_waves: list[np.ndarray]
) -> None:
    """``stetho --log-format json monitor``: every stderr line parses as JSON (journald, Loki)."""
    import json

    _, err = _monitor_one_clip(
        tmp_path, detector_dir, normal_waves[0], "--log-format", "json", "-v"
    )
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines, "the monitor logged nothing"
    docs = [json.loads(ln) for ln in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= set(d) for d in docs)
    assert any("watching" in d["message"] for d in docs)
    assert any(d["logger"].startswith("stetho.") and d["level"] == "INFO" for d in docs)


def test_monitor_waits_for_its_database_and_then_watches(
    tmp_path: Path, detector_dir: Path, normal_waves: list[np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from tests.store.conftest import server_starting

    inbox = tmp_path / "in"
    inbox.mkdir()
    sources = [{"kind": "folder", "path": str(inbox), "machine": "fan", "section": 0}]
    cfg = config(tmp_path, detector_dir, sources, store_wait_seconds=30)
    tries = server_starting(monkeypatch, answers_from=2)
    monitor = Monitor(cfg)  # opens its own store in run()
    with running(monitor):
        (inbox / "a.wav").write_bytes(wav_bytes(normal_waves[0]))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if Path(cfg.db).exists() and len(tries) >= 2:
                with ScoreStore.open(cfg.db) as store:
                    if store.scores("fan"):
                        break
            time.sleep(0.2)
    assert len(tries) >= 2 and tries[1] - tries[0] >= 0.9
    with ScoreStore.open(cfg.db) as store:
        assert len(store.scores("fan", "00")) == 1
    with pytest.raises(ConfigError, match="store_wait_seconds"):
        config(tmp_path, detector_dir, sources, store_wait_seconds=-1)


def test_monitored_anomalous_windows_keep_their_nearest_normal_clip(
    tmp_path: Path, detector_dir: Path, loaded: Detector, normal_waves: list[np.ndarray],
    serving_data: tuple[Path, ClipTable],
) -> None:  # fmt: skip
    """As for uploads: an anomalous monitored window names its nearest bank clip, and a copy of
    that clip is kept beside its own audio (the alarm page plays both)."""
    inbox = tmp_path / "in"
    inbox.mkdir()
    cfg = config(tmp_path, detector_dir,
                 [{"kind": "folder", "path": str(inbox), "machine": "fan", "section": 0}])  # fmt: skip
    store = ScoreStore.open(cfg.db)
    with running(Monitor(cfg, store)):
        for i, w in enumerate([normal_waves[0], noise(11), noise(12)]):
            (inbox / f"rec_{i}.wav").write_bytes(wav_bytes(w))
        wait_for(lambda: len(store.scores("fan", "00")) == 3, what="3 windows")
    rows = store.scores("fan", "00")
    _, table = serving_data
    bank = {str(Path(c.path).absolute()) for c in table.filter(split="train", machine="fan")}
    anomalous = [r for r in rows if r.decision == 1]
    assert anomalous, [r.score for r in rows]
    for r in rows:
        if r.decision == 1:
            assert r.nearest_ref in bank and r.audio is not None and r.nearest_audio is not None
            assert (Path(f"{cfg.db}.audio") / r.nearest_audio).is_file()
        else:
            assert r.nearest_ref is None and r.nearest_audio is None
    store.close()
