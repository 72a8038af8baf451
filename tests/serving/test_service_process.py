"""``stetho serve`` as a real process on 127.0.0.1, driven over HTTP.

One server (SQLite store, alarm rule 2 of 3, 2 s timeouts) is shared by the module: valid audio
scores like ``stetho detect``; oversize, hour-long and non-audio bodies are refused without
harm; 50 concurrent clients are served with 0 failures; idle, slow and vanishing clients neither
hold the server nor print tracebacks; an alarm opens and closes; a monitor in this process and
the server write one store and agree on alarms; the dashboard renders in headless Chromium.
Another server shows that the header deadline is not ``--timeout`` and that a corrupted store
gives 503.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from stetho.data import ClipTable, load_audio
from stetho.detector import Detector
from stetho.serving import bind_socket, score_paths

TIMEOUT_S = 2  # --timeout of the server under test


@dataclass
class Service:
    url: str
    proc: subprocess.Popen[str]
    stderr: Path
    detector_dir: Path
    db: Path

    def rss_mb(self) -> float:
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", text).group(1)) / 1024  # type: ignore[union-attr]


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    return env


def _stetho(*args: str) -> list[str]:
    return [sys.executable, "-m", "stetho", *args]


@pytest.fixture(scope="module")
def service(detector: Detector, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("service")
    det_dir = detector.save(root / "plant_detector")
    stderr = root / "stderr.txt"
    cmd = _stetho(
        "serve",
        "--detector",
        f"plant={det_dir}",
        "--db",
        str(root / "plant.db"),
        "--port",
        "0",
        "--timeout",
        str(TIMEOUT_S),
        "--header-timeout",
        str(TIMEOUT_S),
        "--max-body-mb",
        "1",
        "--max-seconds",
        "120",
        "--alarm-k",
        "2",
        "--alarm-n",
        "3",
    )
    with open(stderr, "w") as err:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=_env(), cwd=root
        )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once the socket listens and detectors are loaded
        match = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert match, f"no URL in {line!r}; stderr: {stderr.read_text()}"
        svc = Service(match.group(0), proc, stderr, det_dir, root / "plant.db")
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(svc.url + "/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield svc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    log = stderr.read_text()
    assert rc == 0, log
    assert "Traceback" not in log, log


def _post(url: str, body: bytes, **params: str) -> httpx.Response:
    return httpx.post(url + "/v1/score", params=params, content=body, timeout=60)


def _flac_of_silence(seconds: int, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    block = np.zeros(rate * 60, dtype=np.int16)
    with sf.SoundFile(buf, "w", rate, 1, format="FLAC", subtype="PCM_16") as f:
        for _ in range(seconds // 60):
            f.write(block)
    return buf.getvalue()


def test_api_scores_like_detect(service: Service, serving_data: tuple[Path, ClipTable]) -> None:
    _, table = serving_data
    det = Detector.load(service.detector_dir)
    for clip in list(table.filter(split="test"))[:4]:
        (rec,) = score_paths(det, [clip.path], machine=clip.machine, section=clip.section)
        got = _post(service.url, clip.path.read_bytes(), machine=clip.machine, section="00")
        assert got.status_code == 200, got.text
        assert rec.score is not None and abs(got.json()["score"] - rec.score) <= 1e-6
        assert got.json()["decision"] == rec.decision


def test_abusive_bodies_are_refused_cheaply(service: Service) -> None:
    url = service.url
    rss = service.rss_mb()
    hour = _flac_of_silence(3600)
    assert len(hour) < 2**20  # passes the 1 MiB body cap...
    got = _post(url, hour, machine="fan", section="00")
    assert got.status_code == 413 and "3600.0 s" in got.json()["error"]  # ...not the duration cap
    assert service.rss_mb() - rss < 100  # one hour at 16 kHz would be 230 MB as float32
    got = _post(url, b"\0" * (2**20 + 1), machine="fan", section="00")
    assert got.status_code == 413 and "exceeds the limit" in got.json()["error"]
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:  # curl, large upload
        sock.sendall(
            b"POST /v1/score?machine=fan&section=00 HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 5000000\r\nExpect: 100-continue\r\n\r\n"
        )
        assert sock.recv(4096).startswith(b"HTTP/1.1 413")  # answered before any body byte
    got = _post(url, b"<html>not audio</html>", machine="fan", section="00")
    assert got.status_code == 415 and "cannot decode" in got.json()["error"]
    for method in ("PUT", "DELETE"):
        got = httpx.request(method, url + "/v1/score", timeout=10)
        assert got.status_code == 405 and got.headers["content-type"] == "application/json"
    got = httpx.get(url + "/no/such/page", timeout=10)
    assert got.status_code == 404 and "endpoints" in got.json()["error"]


def test_fifty_concurrent_clients_all_succeed(
    service: Service, serving_data: tuple[Path, ClipTable]
) -> None:
    _, table = serving_data
    body = next(iter(table.filter(split="test", machine="fan"))).path.read_bytes()
    n = 50
    barrier = threading.Barrier(n)

    def one(client: httpx.Client) -> tuple[int, float]:
        barrier.wait(timeout=60)
        t0 = time.perf_counter()
        r = client.post(
            service.url + "/v1/score", params={"machine": "fan", "section": "00"}, content=body
        )
        return r.status_code, time.perf_counter() - t0

    # one connection per client thread (the pool allows all 50 at once)
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
    t0 = time.perf_counter()
    with httpx.Client(timeout=120, limits=limits) as client, ThreadPoolExecutor(n) as pool:
        results = list(pool.map(one, [client] * n))
    wall = time.perf_counter() - t0
    statuses = [s for s, _ in results]
    assert statuses == [200] * n, statuses
    assert wall < 120
    lat = sorted(t for _, t in results)
    print(f"50 concurrent clients: 0 failures, p50 {lat[n // 2]:.3f} s, max {lat[-1]:.3f} s")


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass  # a 408 reply may come first, then EOF
        return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_idle_slow_and_vanishing_clients(service: Service) -> None:
    host, port = service.url.removeprefix("http://").split(":")
    limit = TIMEOUT_S + 3
    idle = socket.create_connection((host, int(port)))  # connects, sends nothing
    slow = socket.create_connection((host, int(port)))  # headers trickle in
    slow.sendall(b"POST /v1/score?machine=fan&section=00 HTTP/1.1\r\nHost: x\r\n")
    t0 = time.monotonic()
    for _ in range(3 * TIMEOUT_S):
        time.sleep(0.5)
        try:
            slow.sendall(b"X-Slow: 1\r\n")
        except OSError:
            break
    assert _closed_within(idle, limit) and _closed_within(slow, limit)
    assert time.monotonic() - t0 < 2 * limit

    body = socket.create_connection((host, int(port)))  # headers arrive, the body does not
    body.sendall(
        b"POST /v1/score?machine=fan&section=00 HTTP/1.1\r\nHost: x\r\n"
        b"Content-Length: 100000\r\n\r\nRIFF"
    )
    body.settimeout(limit)
    reply = b""
    while chunk := body.recv(4096):  # the reply, then the server closes the connection
        reply += chunk
    assert reply.startswith(b"HTTP/1.1 408") and b'"error"' in reply
    for _ in range(5):  # clients that vanish mid-body
        gone = socket.create_connection((host, int(port)))
        gone.sendall(
            b"POST /v1/score?machine=fan&section=00 HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 100000\r\n\r\n" + b"\0" * 5000
        )
        gone.close()
    for s in (idle, slow, body):
        s.close()
    assert httpx.get(service.url + "/healthz", timeout=10).status_code == 200
    time.sleep(0.5)
    assert "Traceback" not in service.stderr.read_text()


def _waves(
    serving_data: tuple[Path, ClipTable], det: Detector, machine: str = "valve"
) -> tuple[bytes, bytes]:
    """A WAV the detector finds anomalous for ``machine``/00 and one it finds normal."""
    _, table = serving_data
    rng = np.random.default_rng(0)
    candidates = [load_audio(c.path)[0] for c in table.filter(machine=machine)]
    candidates += [rng.normal(0, a, 16000).astype(np.float32) for a in (0.05, 0.2, 0.5)]
    scores = det.score_waveforms(candidates, machine, "00")
    dec = det.decide(scores, (machine, "00"))
    assert dec.min() == 0 and dec.max() == 1, scores

    def wav(x: np.ndarray) -> bytes:
        buf = io.BytesIO()
        sf.write(buf, x, 16000, format="WAV", subtype="FLOAT")
        return buf.getvalue()

    return wav(candidates[int(np.argmax(scores))]), wav(candidates[int(np.argmin(scores))])


def test_alarm_opens_and_closes_and_metrics_follow(
    service: Service, serving_data: tuple[Path, ClipTable]
) -> None:
    bad, good = _waves(serving_data, Detector.load(service.detector_dir))
    key = {"machine": "valve", "section": "00"}
    events = [_post(service.url, b, **key).json()["alarm"] for b in (bad, bad, good, good, good)]
    assert events == [None, "opened", None, None, "closed"]
    alarms = httpx.get(service.url + "/v1/alarms", params={"machine": "valve"}).json()["alarms"]
    assert len(alarms) == 1 and alarms[0]["closed"] is not None and alarms[0]["n_windows"] == 2
    hist = httpx.get(
        service.url + "/v1/machines/valve/scores", params={"from": "2000-01-01T00:00:00Z"}
    )
    rows = hist.json()["scores"]
    assert [r["decision"] for r in rows] == [1, 1, 0, 0, 0] and rows[0]["source"] == "http"
    ident = Detector.load(service.detector_dir).describe()
    assert rows[0]["detector_id"] == ident["id"] and rows[0]["detector_version"] == ident["version"]
    assert (
        'stetho_alarm_open{machine="valve",section="00"} 0.0'
        in httpx.get(service.url + "/metrics").text
    )
    assert [_post(service.url, bad, **key).json()["alarm"] for _ in range(2)] == [None, "opened"]
    assert (
        'stetho_alarm_open{machine="valve",section="00"} 1.0'
        in httpx.get(service.url + "/metrics").text
    )


def _wait(pred: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_serve_and_a_monitor_on_one_store_agree_on_alarms(
    service: Service, serving_data: tuple[Path, ClipTable], tmp_path: Path
) -> None:
    """#22 item 7: serve closed the monitor's alarm; the monitor then counted its anomalous
    windows into the closed alarm and never opened a new one."""
    from stetho.serving.monitor import Monitor
    from stetho.serving.monitor_config import MonitorConfig
    from stetho.store import ScoreStore

    bad, good = _waves(serving_data, Detector.load(service.detector_dir), "fan")
    key = {"machine": "fan", "section": "00"}
    for _ in range(3):  # whatever earlier tests left: the last 3 fan windows normal, no alarm
        assert _post(service.url, good, **key).status_code == 200
    inbox = tmp_path / "in"
    inbox.mkdir()
    cfg = MonitorConfig.from_dict(
        {
            "detector": str(service.detector_dir),
            "db": str(service.db),
            "alarm": {"k": 2, "n": 3, "clear_k": 0},  # the server's rule
            "poll_seconds": 0.05,
            "status_seconds": 0,
            "sources": [
                {"kind": "folder", "path": str(inbox), "machine": "fan", "settle_seconds": 0}
            ],
        }
    )
    source = f"folder:{inbox}"

    def drop(name: str) -> None:  # written beside the inbox, then moved in whole
        (tmp_path / name).write_bytes(bad)
        (tmp_path / name).rename(inbox / name)

    def monitor_rows() -> int:  # the folder's windows name their file
        return sum(r.source.startswith(f"{inbox}/") for r in store.scores("fan"))

    with ScoreStore.open(service.db) as store:
        monitor = Monitor(cfg, store)
        thread = threading.Thread(target=monitor.run, daemon=True)
        thread.start()
        try:
            for name in ("a.wav", "b.wav"):
                drop(name)
            _wait(lambda: monitor_rows() == 2, "the monitor's first two windows")
            assert monitor.stats[source].alarms_opened == 1
            events = [_post(service.url, good, **key).json()["alarm"] for _ in range(3)]
            assert events == [None, None, "closed"]  # serve closes the monitor's alarm
            for name in ("c.wav", "d.wav"):
                drop(name)
            _wait(lambda: monitor_rows() == 4, "the monitor's next two windows")
        finally:
            monitor.stop()
            thread.join(60)
        assert monitor.stats[source].alarms_opened == 2  # a new alarm, not the closed one
        newest = store.alarms(machine="fan", newest_first=True)[0]
        assert newest.closed is None and newest.n_windows == 2
    (fan,) = [
        m
        for m in httpx.get(service.url + "/v1/machines").json()["machines"]
        if m["machine"] == "fan"
    ]
    assert fan["alarm_open"] is True
    assert (
        'stetho_alarm_open{machine="fan",section="00"} 1.0'
        in httpx.get(service.url + "/metrics").text
    )


def test_header_deadline_is_not_the_body_timeout_and_a_corrupted_store_is_a_503(
    tmp_path: Path,
) -> None:
    """#22 items 5 and 6: `--timeout` no longer sets the header deadline (default 10 s); a
    store with corrupted pages answers 503 with a plain message, not 500 with its SQL."""
    from datetime import UTC, datetime, timedelta

    from stetho.store import ScoreRow, ScoreStore
    from tests.badinput import corrupt_sqlite

    db = tmp_path / "plant.db"
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    with ScoreStore.open(db) as store:
        store.add_scores(
            [
                ScoreRow(t0 + timedelta(seconds=i), "fan", "00", "t", 0.0, 1.0, 0.1, 1.0, 0, "d", 1)
                for i in range(3000)
            ]
        )
    corrupt_sqlite(db)
    cmd = _stetho(
        "serve", "--db", str(db), "--port", "0", "--timeout", "300", "--header-timeout", "1"
    )
    err_path = tmp_path / "stderr.txt"
    with open(err_path, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=_env())
    try:
        assert proc.stdout is not None
        match = re.search(r"http://127\.0\.0\.1:\d+", proc.stdout.readline())
        assert match, err_path.read_text()
        url = match.group(0)
        host, port = url.removeprefix("http://").split(":")
        slow = socket.create_connection((host, int(port)))
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never ends its headers
        t0_wait = time.monotonic()
        assert _closed_within(slow, 60)  # far below --timeout 300
        assert time.monotonic() - t0_wait < 60
        slow.close()
        got = httpx.get(url + "/v1/machines", timeout=30)
        assert got.status_code == 503, got.text
        assert "cannot be read" in got.json()["error"] and "SELECT" not in got.text
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert rc == 0, err_path.read_text()


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    if Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium"
    pytest.skip("headless Chromium not installed (apt-get install chromium)")


def _chrome(binary: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp}",
            "--window-size=1280,900",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_dashboard_in_headless_chromium(service: Service, tmp_path: Path) -> None:
    binary = _chromium()
    dom = _chrome(binary, tmp_path / "a", "--dump-dom", service.url + "/").stdout
    assert 'id="machines"' in dom and ">fan<" in dom and ">valve<" in dom
    # every machine on one axis (the dashboard itself: tests/serving/test_dashboard*.py)
    assert dom.count('class="timeline"') == 1 and dom.count('<g class="series"') == 2
    assert 'class="threshold"' in dom and 'class="alarm-span' in dom and 'id="alarms"' in dom
    alarms = dom.split('id="alarms"', 1)[1].split("</table>", 1)[0]
    assert alarms.count("<td>valve/00</td>") == 2  # a closed and an open one
    link = re.search(r'href="(/dashboard/alarms/\d+)"', alarms)
    assert link, alarms
    alarm = _chrome(binary, tmp_path / "c", "--dump-dom", service.url + link.group(1)).stdout
    assert 'class="spectrogram"' in alarm  # of valve's strongest anomalous window
    shot = tmp_path / "dashboard.png"
    _chrome(binary, tmp_path / "b", f"--screenshot={shot}", service.url + "/")
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (900, 1280) and pixels.std() > 10  # not blank


def test_bad_port_and_busy_address_are_clear_errors() -> None:
    out = subprocess.run(
        _stetho("serve", "--detector", "x", "--port", "70000"),
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert out.returncode == 2 and "0..65535" in out.stderr and "Traceback" not in out.stderr
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
            bind_socket("127.0.0.1", port)
    with pytest.raises(ValueError, match=r"0\.\.65535"):
        bind_socket("127.0.0.1", -1)
