"""The dashboard in a real headless Chromium against a real ``stetho serve`` process on 127.0.0.1.

Real DCASE 2020 slider clips (id_00) from ``$STETHO_SHARED`` are posted by name to a server whose
few-shot detector was fitted on 30 slider training normals (and on 6 fan id_06 normals, a
machine that is never scored here). The browser is driven over the DevTools protocol on a pipe
(``--remote-debugging-pipe``; no driver package): the page lists the clips by name, the range
control changes the period shown, the alarm page's audio loads, decodes and plays, the
acknowledgement is saved through ``POST /v1/alarms/{id}/ack``, and every request the browser made
went to the server under test.

``STETHO_UPDATE_SCREENSHOT=1`` also writes the overview to ``docs/images/dashboard.png``.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import fcntl
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import REPO_ROOT, shared_root

pytestmark = [pytest.mark.shared, pytest.mark.slow]

_LOCAL = re.compile(r"^https?://(127\.0\.0\.1|localhost)(:\d+)?(/|$)")


# -- a minimal DevTools-protocol client over the pipe ---------------------------------------------
class Browser:
    """Headless Chromium driven through ``--remote-debugging-pipe`` (fd 3 in, fd 4 out)."""

    def __init__(self, binary: str, profile: Path, width: int = 1280, height: int = 900) -> None:
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # the child's ends above 9, so that moving them to 3 and 4 never overwrites one of them
        to_chrome_r, from_chrome_w = (_high(fd) for fd in (to_chrome_r, from_chrome_w))
        args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-default-apps",
            "--disable-sync",
            "--mute-audio",
            "--autoplay-policy=no-user-gesture-required",
            "--remote-debugging-pipe",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "about:blank",
        ]
        launch = "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); "
        launch += "os.execv(sys.argv[3], sys.argv[3:])"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", launch, str(to_chrome_r), str(from_chrome_w), binary, *args],
            pass_fds=(to_chrome_r, from_chrome_w),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._cond = threading.Condition()
        self._replies: dict[int, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self._id = 0
        threading.Thread(target=self._read, daemon=True).start()
        self.width, self.height = width, height

    def _read(self) -> None:
        buf = b""
        with os.fdopen(self._from_chrome, "rb", buffering=0) as f:
            while chunk := f.read(1 << 16):
                buf += chunk
                *messages, buf = buf.split(b"\0")
                with self._cond:
                    for m in messages:
                        obj = json.loads(m)
                        if "id" in obj:
                            self._replies[obj["id"]] = obj
                        else:
                            self.events.append(obj)
                    self._cond.notify_all()

    def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session: str | None = None,
        timeout: float = 120,
    ) -> dict[str, Any]:
        with self._cond:
            self._id += 1
            ident = self._id
        msg: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        with self._cond:
            if not self._cond.wait_for(lambda: ident in self._replies, timeout=timeout):
                raise TimeoutError(f"Chromium did not answer {method}")
            reply = self._replies.pop(ident)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return dict(reply.get("result", {}))

    def wait_event(self, method: str, session: str, after: int, timeout: float = 120) -> None:
        def seen() -> bool:
            return any(
                e["method"] == method and e.get("sessionId") == session for e in self.events[after:]
            )

        with self._cond:
            if not self._cond.wait_for(seen, timeout=timeout):
                raise TimeoutError(f"no {method} within {timeout} s")

    def new_page(self) -> Page:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})
        page = Page(self, session["sessionId"])
        for method in ("Page.enable", "Runtime.enable", "Network.enable"):
            self.send(method, session=page.session)
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False},
            session=page.session,
        )
        return page

    def requested_urls(self) -> list[str]:
        with self._cond:
            return [
                e["params"]["request"]["url"]
                for e in self.events
                if e["method"] == "Network.requestWillBeSent"
            ]

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            self.send("Browser.close", timeout=10)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_chrome)


def _high(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


@dataclasses.dataclass
class Page:
    browser: Browser
    session: str

    def _loaded_after(self, action: Any) -> None:
        n = len(self.browser.events)
        action()
        self.browser.wait_event("Page.loadEventFired", self.session, n)

    def goto(self, url: str) -> None:
        self._loaded_after(lambda: self.browser.send("Page.navigate", {"url": url}, self.session))

    def click(self, selector: str) -> None:
        """Click the element (a link or a submit button) and wait for the next page load."""
        js = f"document.querySelector({json.dumps(selector)}).click()"
        self._loaded_after(lambda: self.eval(js))

    def eval(self, expression: str) -> Any:
        r = self.browser.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            self.session,
        )
        if "exceptionDetails" in r:
            raise AssertionError(f"{expression[:80]}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def html(self) -> str:
        return str(self.eval("document.documentElement.outerHTML"))

    def screenshot(self, path: Path, max_height: int = 20_000) -> None:
        height = min(int(self.eval("document.documentElement.scrollHeight")), max_height)
        shot = self.browser.send(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": self.browser.width, "height": height, "scale": 1},
            },
            self.session,
        )
        path.write_bytes(base64.b64decode(shot["data"]))


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.skip("headless Chromium not installed (apt-get install chromium)")


# -- the server under test ------------------------------------------------------------------------
@dataclasses.dataclass
class Served:
    url: str
    bank: list[Path]
    normals: list[Path]
    anomalies: list[Path]


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT / "src"), env.get("PYTHONPATH")) if p
    )
    return env


def _clips() -> tuple[list[Any], list[Any], list[Path], list[Path]]:
    from stetho.data import scan_dataset

    data = shared_root() / "data"
    if not (data / "dcase2020t2_extra").is_dir() or not (data / "dcase2020t2_mini").is_dir():
        pytest.skip(f"real DCASE 2020 clips not found under {data} (set STETHO_SHARED)")
    clips = list(scan_dataset(data / "dcase2020t2_extra")) + list(
        scan_dataset(data / "dcase2020t2_mini")
    )
    train = sorted(
        (c for c in clips if c.machine == "slider" and c.split == "train"), key=lambda c: c.name
    )
    fan = [  # a second machine the detector knows and that is never scored
        dataclasses.replace(c, split="train")
        for c in clips
        if c.machine == "fan" and c.section == "06" and c.label == "normal"
    ]
    anomalies = {
        c.name: c.path
        for c in clips
        if c.machine == "slider" and c.section == "00" and c.label == "anomaly"
    }
    picked = [
        anomalies[n]
        for n in (
            "anomaly_id_00_00000096.wav",
            "anomaly_id_00_00000268.wav",
            "anomaly_id_00_00000016.wav",
        )
    ]
    assert len(train) >= 54 and len(fan) >= 4
    return train[:30], fan, [c.path for c in train[30:54]], picked


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    from stetho.detector.ensemble import EnsembleDetector
    from stetho.pipelines.recipes import default_config

    bank, fan, normals, anomalies = _clips()
    root = tmp_path_factory.mktemp("dashboard")
    EnsembleDetector(default_config()).fit(bank + fan).save(root / "plant")
    err_path = root / "stderr.txt"
    cmd = [sys.executable, "-m", "stetho", "serve", "--detector", f"plant={root / 'plant'}",
           "--db", str(root / "plant.db"), "--port", "0", "--alarm-k", "2", "--alarm-n", "3"]  # fmt: skip
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=_env(), cwd=root
        )
    try:
        assert proc.stdout is not None
        match = re.search(r"http://127\.0\.0\.1:\d+", proc.stdout.readline())
        assert match, err_path.read_text()
        yield Served(match.group(0), [c.path for c in bank], normals, anomalies)
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
    log = err_path.read_text()
    assert rc == 0 and "Traceback" not in log, log


def _post(client: httpx.Client, path: Path) -> dict[str, Any]:
    r = client.post(
        "/v1/score",
        params={"machine": "slider", "section": "00"},
        files={"file": (path.name, path.read_bytes(), "audio/wav")},
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


def _score_story(served: Served) -> list[dict[str, Any]]:
    """Normal clips, two anomalies (an alarm opens), normals (it closes); a pause longer than the
    cadence (a gap); normals and two anomalies again (an alarm left open)."""
    out: list[dict[str, Any]] = []
    with httpx.Client(base_url=served.url, timeout=120) as client:
        stamps = []
        for p in [*served.normals[:10], *served.anomalies[:2], *served.normals[10:14]]:
            out.append(_post(client, p))
            stamps.append(time.monotonic())
            time.sleep(0.5)  # a cadence, as a monitor scores windows
        cadence = statistics.median(np.diff(stamps))
        time.sleep(max(6 * cadence, 4.0))  # a gap: 6x the usual spacing of the windows
        for p in [*served.normals[14:20], served.anomalies[2], served.anomalies[0]]:
            out.append(_post(client, p))
            time.sleep(0.5)
    return out


def test_dashboard_in_chromium(served: Served, tmp_path: Path) -> None:
    results = _score_story(served)
    assert sum(r["decision"] == 1 for r in results) >= 3
    browser = Browser(_chromium(), tmp_path / "profile")
    try:
        _overview(browser, served, tmp_path)
    finally:
        browser.close()


def _overview(browser: Browser, served: Served, tmp_path: Path) -> None:
    page = browser.new_page()
    page.goto(served.url + "/")
    html = page.html()
    # every machine the detector knows, the unscored one too, with the served detector's name
    rows = page.eval(
        "Array.from(document.querySelectorAll('#machines tbody tr')).map("
        "r => Array.from(r.cells).map(c => c.textContent.trim()))"
    )
    by_key = {(r[0], r[1]): r for r in rows}
    assert by_key[("fan", "06")][2] == "no scores yet" and by_key[("fan", "06")][5] == "plant"
    assert by_key[("slider", "00")][2] == "ALARM" and by_key[("slider", "00")][5] == "plant"
    # the clips by name
    names = page.eval(
        "Array.from(document.querySelectorAll('#windows td.recording')).map(c => c.textContent)"
    )
    assert any("anomaly_id_00_00000016.wav" in n for n in names), names
    assert any(p.name in " ".join(names) for p in served.normals[14:20])
    # the default period is fitted to the data (a few minutes at most, not 24 h)
    span = page.eval(
        "(Date.parse(document.getElementById('range').dataset.end) - Date.parse(document.getElementById('range').dataset.start)) / 1000"
    )
    assert 10 < span < 15 * 60, span
    assert page.eval("document.querySelectorAll('svg.timeline line.threshold').length") == 1
    # slider's line is broken at the pause: two runs, no line bridging it
    assert (
        page.eval(
            "document.querySelector('g.series[data-series=\"slider/00\"]')"
            ".querySelectorAll('polyline').length"
        )
        == 2
    )
    _no_external_urls(html)
    # the legend hides a machine's line
    page.eval("document.querySelector('input[data-series-toggle][value=\"slider/00\"]').click()")
    hidden = (
        "getComputedStyle(document.querySelector('g.series[data-series=\"slider/00\"]')).display"
    )
    assert page.eval(hidden) == "none"
    # the range control: last week, then a custom period
    page.click("a.preset[data-range='7d']")
    week = page.eval(
        "(Date.parse(document.getElementById('range').dataset.end) - Date.parse(document.getElementById('range').dataset.start)) / 3600e3"
    )
    assert abs(week - 7 * 24) < 0.01, week
    assert page.eval("document.querySelector('a.preset.active').dataset.range") == "7d"
    page.eval(
        "(() => {const f = document.getElementById('custom-range');"
        "f.elements.from.value = '2026-01-01 00:00'; f.elements.to.value = '2026-01-02 06:00';"
        "})()"
    )
    page.click("#custom-range button[type=submit]")
    assert page.eval("document.getElementById('range').dataset.start").startswith(
        "2026-01-01T00:00:00"
    )
    assert page.eval("document.getElementById('range').dataset.end").startswith(
        "2026-01-02T06:00:00"
    )
    assert "no scores in this period" in page.html()
    # open the alarm left open, hear it, acknowledge it
    page.goto(served.url + "/")
    alarm_url = page.eval(
        "Array.from(document.querySelectorAll('#alarms tbody tr')).find("
        "r => r.textContent.includes('open') && !r.textContent.includes('closed'))"
        ".querySelector('a').href"
    )
    page.goto(alarm_url)
    _hear(page)
    _no_external_urls(page.html())
    page.eval(
        "document.querySelector('#ack-form textarea').value = 'belt checked, loose guide rail'"
    )
    page.click("#ack-form button[type=submit]")
    assert "belt checked, loose guide rail" in page.eval(
        "document.getElementById('ack-status').textContent"
    )
    alarm_id = int(alarm_url.rstrip("/").rsplit("/", 1)[1])
    api = httpx.get(served.url + "/v1/alarms", timeout=30).json()["alarms"]
    (acked,) = [a for a in api if a["id"] == alarm_id]
    assert acked["acknowledged"] and acked["ack_note"] == "belt checked, loose guide rail"
    # the acknowledgement on the timeline of the overview
    page.goto(served.url + "/")
    assert page.eval("document.querySelectorAll('svg.timeline g.ack-mark').length") >= 1
    assert "belt checked" in page.eval("document.getElementById('alarms').textContent")
    shot = tmp_path / "dashboard.png"
    page.screenshot(shot, max_height=1040)  # period, machines, timeline, alarms
    page.goto(alarm_url)
    page.screenshot(tmp_path / "alarm.png")
    page.click("#alarm-windows tbody a")  # a window of the alarm, on its own page
    assert page.eval("document.querySelectorAll('svg.spectrogram').length") == 2
    page.screenshot(tmp_path / "window.png")
    if os.environ.get("STETHO_UPDATE_SCREENSHOT") == "1":
        (REPO_ROOT / "docs" / "images").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, REPO_ROOT / "docs" / "images" / "dashboard.png")
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (1040, 1280) and pixels.std() > 10  # not blank
    # nothing the browser asked for left the server under test
    urls = [u for u in browser.requested_urls() if not u.startswith(("data:", "about:"))]
    assert urls and all(u.startswith(served.url + "/") for u in urls), [
        u for u in urls if not u.startswith(served.url)
    ]


_HEAR = """
(async () => {
  const out = {};
  for (const id of ['window-audio', 'nearest-audio']) {
    const a = document.getElementById(id);
    if (!a) { out[id] = null; continue; }
    out[id] = await new Promise(resolve => {
      const done = (what) => resolve({what, ready: a.readyState, duration: a.duration,
                                      error: a.error && a.error.code});
      if (a.readyState >= 4) return done('canplaythrough');
      a.addEventListener('canplaythrough', () => done('canplaythrough'), {once: true});
      a.addEventListener('error', () => done('error'), {once: true});
      setTimeout(() => done('timeout'), 60000);
      a.load();
    });
    a.dataset.decoded = out[id].what;
  }
  const a = document.getElementById('window-audio');
  await a.play();
  await new Promise(r => setTimeout(r, 1500));
  out.played = a.currentTime;
  a.pause();
  return out;
})()
"""


def _hear(page: Page) -> None:
    got = page.eval(_HEAR)
    window, nearest = got["window-audio"], got["nearest-audio"]
    assert window is not None and window["what"] == "canplaythrough", got
    assert abs(window["duration"] - 10.0) < 0.1, got  # the whole 10 s clip, decoded
    assert nearest is not None and nearest["what"] == "canplaythrough", got
    assert got["played"] > 0, got
    assert page.eval("document.querySelectorAll('svg.spectrogram').length") == 2
    assert page.eval("document.querySelectorAll('svg.spectrogram g.colour-bar').length") == 2
    assert page.eval("document.getElementById('window-audio').dataset.decoded") == "canplaythrough"


def _no_external_urls(html: str) -> None:
    """No http(s) URL in the page other than this machine."""
    found = re.findall(r"https?://[^\s'\"<>)]+", html)
    assert all(_LOCAL.match(u) for u in found), [u for u in found if not _LOCAL.match(u)]
