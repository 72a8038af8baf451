"""Dataset download against a local HTTP server (no real network): table, unzip layout,
metadata, idempotency, resume, MD5 mismatch, offline mode."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stetho.data import DATASETS, dataset_archives, download_dataset, scan_dataset
from stetho.data.download import archive_url, fetch_record_metadata
from stetho.utils.download import DownloadError, OfflineError


def _wav(seconds: float = 0.1) -> bytes:
    buf = io.BytesIO()
    x = 0.1 * np.sin(np.arange(round(16000 * seconds)) * 0.05)
    sf.write(buf, x, 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


# official member layout: <machine>/train|test/... + <machine>/attributes_00.csv
DEV_FAN = _zip(
    {
        "fan/train/section_00_source_train_normal_0000_m-n_W.wav": _wav(),
        "fan/train/section_00_target_train_normal_0000_m-n_Y.wav": _wav(),
        "fan/test/section_00_source_test_anomaly_0000_m-n_W.wav": _wav(),
        "fan/test/section_00_target_test_normal_0000_m-n_Y.wav": _wav(),
        "fan/attributes_00.csv": (
            b"file_name,d1p,d1v\n"
            b"fan/train/section_00_source_train_normal_0000_m-n_W.wav,m-n,W\n"
            b"fan/train/section_00_target_train_normal_0000_m-n_Y.wav,m-n,Y\n"
        ),
        "__MACOSX/fan/._junk": b"x",
    }
)
EVAL_TRAIN = _zip({"ToyDrone/train/section_00_source_train_normal_0000_noAttribute.wav": _wav()})
EVAL_TEST = _zip({"ToyDrone/test/section_00_0000.wav": _wav(), "ToyDrone/test/": b""})


class _Server:
    """Zenodo look-alike: /record/<rec>/files/<file> (with Range) and /api/records/<rec>."""

    def __init__(self) -> None:
        self.files: dict[tuple[str, str], bytes] = {}
        self.metadata_md5: dict[str, str] = {}  # overrides, to fake a wrong checksum
        self.drop_once: set[str] = set()
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append((self.path, self.headers.get("Range")))
                parts = self.path.strip("/").split("/")
                if parts[:2] == ["api", "records"] and len(parts) == 3:
                    rec = parts[2]
                    entries = [
                        {
                            "key": f,
                            "size": len(data),
                            "checksum": "md5:"
                            + server.metadata_md5.get(f, hashlib.md5(data).hexdigest()),
                        }
                        for (r, f), data in server.files.items()
                        if r == rec
                    ]
                    if not entries:
                        self.send_error(404)
                        return
                    body = json.dumps({"id": rec, "files": entries}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if len(parts) == 4 and parts[0] == "record" and parts[2] == "files":
                    data = server.files.get((parts[1], parts[3]))
                    if data is None:
                        self.send_error(404)
                        return
                    start = 0
                    rng = self.headers.get("Range")
                    if rng and rng.startswith("bytes="):
                        start = int(rng[6:].split("-")[0])
                        self.send_response(206)
                        self.send_header(
                            "Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}"
                        )
                    else:
                        self.send_response(200)
                    body = data[start:]
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    if parts[3] in server.drop_once:
                        server.drop_once.discard(parts[3])
                        self.wfile.write(body[: len(body) // 2])
                        self.wfile.flush()
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    self.wfile.write(body)
                    return
                self.send_error(404)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def file_requests(self, name: str) -> list[str | None]:
        return [rng for path, rng in self.requests if path.endswith("/files/" + name)]


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Server]:
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("STETHO_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    srv = _Server()
    srv.files[("7882613", "dev_fan.zip")] = DEV_FAN
    srv.files[("7830345", "eval_data_ToyDrone_train.zip")] = EVAL_TRAIN
    srv.files[("7860847", "eval_data_ToyDrone_test.zip")] = EVAL_TEST
    srv.thread.start()
    try:
        yield srv
    finally:
        srv.httpd.shutdown()
        srv.httpd.server_close()
        srv.thread.join(timeout=5)


# --- table -----------------------------------------------------------------------------------


def test_table_matches_protocol_section_7() -> None:
    assert sorted(DATASETS) == [f"dcase{y}" for y in range(2020, 2026)]
    counts = {name: len(spec.archives) for name, spec in DATASETS.items()}
    assert counts == {"dcase2020": 18, "dcase2021": 21, "dcase2022": 21, "dcase2023": 21,
                      "dcase2024": 25, "dcase2025": 23}  # fmt: skip
    spec = DATASETS["dcase2023"]
    assert spec.machines("dev") == sorted(
        ["bearing", "fan", "gearbox", "slider", "ToyCar", "ToyTrain", "valve"]
    )
    assert spec.machines("eval") == sorted(
        ["ToyDrone", "ToyNscale", "ToyTank", "Vacuum", "bandsaw", "grinder", "shaker"]
    )
    vac = [a for a in spec.archives if a.machine == "Vacuum" and a.part == "eval-test"]
    assert [a.file for a in vac] == ["eval_data_Vacuum_test.zip"]
    assert (
        archive_url(vac[0]) == "https://zenodo.org/record/7860847/files/eval_data_Vacuum_test.zip"
    )
    r2 = [a for a in DATASETS["dcase2024"].archives if a.file.endswith("_r2.zip")]
    assert {(a.machine, a.part) for a in r2} == {
        ("3DPrinter", "eval-train"),
        ("RoboticArm", "eval-train"),
    }
    y2020 = DATASETS["dcase2020"]
    assert {a.record for a in y2020.archives if a.part == "eval-test"} == {"3841772"}
    assert y2020.machines("dev") == y2020.machines("eval")
    for spec in DATASETS.values():  # every machine has dev or eval-train + eval-test zips
        for m in spec.machines("eval"):
            parts = sorted(a.part for a in spec.archives if a.machine == m and a.part != "dev")
            assert parts == ["eval-test", "eval-train"], (spec.name, m)


def test_archive_selection_errors() -> None:
    assert [a.file for a in dataset_archives("2023", "dev", ["fan"])] == ["dev_fan.zip"]
    assert len(dataset_archives("dcase2023t2", "all")) == 21
    with pytest.raises(ValueError, match="dcase2020"):
        dataset_archives("dcase2019")
    with pytest.raises(ValueError, match="dev, eval, all"):
        dataset_archives("dcase2023", "test")
    with pytest.raises(ValueError, match="bearing"):
        dataset_archives("dcase2023", "dev", ["ToyDrone"])


# --- downloads -------------------------------------------------------------------------------


def test_download_unpack_and_idempotent(server: _Server, tmp_path: Path) -> None:
    out = download_dataset(
        "dcase2023", "all", tmp_path, machines=["fan", "ToyDrone"], base_url=server.url,
        progress=False,
    )  # fmt: skip
    assert out == tmp_path / "dcase2023t2"
    raw = out / "dev_data" / "raw" / "fan"
    assert (raw / "attributes_00.csv").is_file()
    assert len(list((raw / "train").glob("*.wav"))) == 2
    assert not (out / "dev_data" / "raw" / "__MACOSX").exists()
    assert (out / "eval_data" / "raw" / "ToyDrone" / "train").is_dir()  # both eval zips
    assert (out / "eval_data" / "raw" / "ToyDrone" / "test" / "section_00_0000.wav").is_file()
    assert not list((out / "archives").glob("*.zip"))  # archives removed after unpacking
    table = scan_dataset(out, check_audio=True)
    assert table.problems == [] and len(table) == 6 and {c.year for c in table} == {2023}
    assert table.filter(name="section_00_source_train_normal_0000_m-n_W.wav")[
        0
    ].attribute_values == (("m-n", "W"),)
    # metadata was used: every archive fetched once, plus one API call per record
    assert sum(p.startswith("/api/records/") for p, _ in server.requests) == 3
    n_before = len(server.requests)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.wav")}
    again = download_dataset(
        "dcase2023", "all", tmp_path, machines=["fan", "ToyDrone"], base_url=server.url,
        progress=False,
    )  # fmt: skip
    assert again == out
    assert len(server.requests) == n_before  # nothing downloaded or even asked
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.wav")} == before


def test_resume_after_dropped_connection(server: _Server, tmp_path: Path) -> None:
    server.drop_once.add("dev_fan.zip")
    out = download_dataset(
        "dcase2023", "dev", tmp_path, ["fan"], base_url=server.url, progress=False,
        keep_archives=True,
    )  # fmt: skip
    ranges = server.file_requests("dev_fan.zip")
    assert ranges[0] is None and len(ranges) == 2
    assert ranges[1] == f"bytes={len(DEV_FAN) // 2}-"  # resumed where the transfer stopped
    assert (out / "archives" / "dev_fan.zip").read_bytes() == DEV_FAN
    assert len(scan_dataset(out)) == 4


def test_resume_from_existing_part_file(server: _Server, tmp_path: Path) -> None:
    part = tmp_path / "dcase2023t2" / "archives" / "dev_fan.zip.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(DEV_FAN[:1000])
    out = download_dataset("dcase2023", "dev", tmp_path, ["fan"], base_url=server.url,
                           progress=False)  # fmt: skip
    assert server.file_requests("dev_fan.zip") == ["bytes=1000-"]
    assert len(scan_dataset(out)) == 4 and not part.exists()


def test_md5_mismatch(server: _Server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="md5 mismatch"):
        download_dataset(
            "dcase2023", "dev", tmp_path, ["fan"], base_url=server.url, progress=False,
            md5={"dev_fan.zip": "0" * 32},
        )  # fmt: skip
    out = tmp_path / "dcase2023t2"
    assert not (out / "dev_data").exists()  # nothing unpacked
    assert not list(out.glob(".stetho_done/*"))  # no marker: a re-run will try again
    # the record metadata MD5 is checked too
    server.metadata_md5["dev_fan.zip"] = "f" * 32
    with pytest.raises(DownloadError, match="md5 mismatch"):
        download_dataset("dcase2023", "dev", tmp_path, ["fan"], base_url=server.url,
                         progress=False)  # fmt: skip
    # a correct user MD5 wins over a wrong metadata one
    good = hashlib.md5(DEV_FAN).hexdigest()
    download_dataset("dcase2023", "dev", tmp_path, ["fan"], base_url=server.url,
                     progress=False, md5={"dev_fan.zip": good})  # fmt: skip
    assert len(scan_dataset(out)) == 4


def test_fetch_record_metadata(server: _Server) -> None:
    meta = fetch_record_metadata("7882613", server.url)
    assert meta == {"dev_fan.zip": {"size": len(DEV_FAN), "md5": hashlib.md5(DEV_FAN).hexdigest()}}
    with pytest.raises(DownloadError, match="404"):
        fetch_record_metadata("1", server.url)


def test_offline_mode(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STETHO_OFFLINE", "1")
    unreachable = "http://127.0.0.1:9"  # never contacted in offline mode
    with pytest.raises(OfflineError) as err:
        download_dataset("dcase2023", "dev", tmp_path, ["fan", "valve"], base_url=unreachable)
    msg = str(err.value)
    archives = tmp_path / "dcase2023t2" / "archives"
    assert "offline" in msg and str(archives) in msg
    assert f"{unreachable}/record/7882613/files/dev_fan.zip" in msg
    assert "dev_valve.zip" in msg
    # the user drops one zip in place: it is unpacked offline, the other is still reported
    archives.mkdir(parents=True)
    (archives / "dev_fan.zip").write_bytes(DEV_FAN)
    with pytest.raises(OfflineError) as err:
        download_dataset("dcase2023", "dev", tmp_path, ["fan", "valve"], base_url=unreachable)
    assert "dev_valve.zip" in str(err.value) and "dev_fan.zip" not in str(err.value)
    out = download_dataset("dcase2023", "dev", tmp_path, ["fan"], base_url=unreachable)
    assert len(scan_dataset(out)) == 4


def test_unreachable_host_is_offline_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("STETHO_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with socket.socket() as s:  # a port with no listener
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(OfflineError, match="Download them elsewhere"):
        download_dataset("dcase2023", "dev", tmp_path, ["fan"], base_url=f"http://127.0.0.1:{port}",
                         progress=False)  # fmt: skip


def test_corrupt_and_unsafe_archives(server: _Server, tmp_path: Path) -> None:
    server.files[("7882613", "dev_valve.zip")] = b"PK not really a zip" * 10
    with pytest.raises(DownloadError, match="corrupt archive"):
        download_dataset("dcase2023", "dev", tmp_path, ["valve"], base_url=server.url,
                         progress=False)  # fmt: skip
    server.files[("7882613", "dev_slider.zip")] = _zip({"../../evil.wav": _wav()})
    with pytest.raises(DownloadError, match="unsafe path"):
        download_dataset("dcase2023", "dev", tmp_path, ["slider"], base_url=server.url,
                         progress=False)  # fmt: skip
    assert not (tmp_path / "evil.wav").exists()


def test_cli_download_then_scan(
    server: _Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``stetho data download`` (thin CLI) fetches, verifies and unpacks; a re-run asks nothing."""
    from stetho.cli import main

    args = ["data", "download", "dcase2023", "--part", "dev", "--root", str(tmp_path),
            "--machines", "fan", "--base-url", server.url]  # fmt: skip
    assert main(args) == 0
    assert "dcase2023t2" in capsys.readouterr().out
    n = len(server.requests)
    assert main(args) == 0 and len(server.requests) == n
    assert main(["data", "scan", str(tmp_path / "dcase2023t2"), "--strict"]) == 0
    assert "fan" in capsys.readouterr().out
