"""Windows, their kept audio, alarms with acknowledgement, offline docs and metrics (in process).

A served copy of the small detector has its fan/00 threshold below every test clip (so every fan
window is anomalous) and its valve/00 threshold above all of them (every valve window normal).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Column, DateTime, Float, Integer, MetaData, String, Table, Text, insert

from stetho.data import ClipTable, load_audio
from stetho.detector import Detector
from stetho.serving import (
    BackgroundServer,
    DetectorEntry,
    DetectorRegistry,
    ScoringService,
    create_app,
)
from stetho.serving.dashboard_source import DashboardSource
from stetho.store import SCHEMA_VERSION, AlarmRule, AudioKeeper, ScoreRow, ScoreStore
from stetho.utils.errors import NotFoundError

SR = 16000


@pytest.fixture()
def served(
    detector: Detector, serving_data: tuple[Path, ClipTable], tmp_path: Path
) -> Iterator[tuple[httpx.Client, ScoringService, Detector, list[Path]]]:
    _, table = serving_data
    det = Detector.load(detector.save(tmp_path / "det"))
    fan = [c.path for c in table.filter(split="test", machine="fan")]
    scores = det.score_files(fan, "fan", "00")
    det.thresholds[("fan", "00")] = float(np.min(scores)) - 1.0  # every fan window anomalous
    det.thresholds[("valve", "00")] = 1e9  # every valve window normal
    store = ScoreStore.open(tmp_path / "plant.db")
    service = ScoringService(
        DetectorRegistry([DetectorEntry("main", det, tmp_path / "det")]),
        store=store,
        alarm_rule=AlarmRule(k=2, n=3),
    )
    with (
        BackgroundServer(create_app(service), service.limits) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        yield client, service, det, fan
    service.close()


def test_named_windows_keep_audio_nearest_clip_and_alarms_can_be_acknowledged(
    served: tuple[httpx.Client, ScoringService, Detector, list[Path]],
    serving_data: tuple[Path, ClipTable],
) -> None:
    client, service, det, fan = served
    _, table = serving_data
    first = client.post(
        "/v1/score",
        files={"file": ("line2/fan_0930.wav", fan[0].read_bytes(), "audio/wav")},
        data={"machine": "fan", "section": "00"},
    ).json()
    second = client.post(
        "/v1/score", params={"machine": "fan", "section": "00", "name": "fan_0931.wav"},
        content=fan[1].read_bytes(),
    ).json()  # fmt: skip
    valve = next(iter(table.filter(split="test", machine="valve"))).path
    normal = client.post("/v1/score?machine=valve&section=00", content=valve.read_bytes()).json()
    assert (first["decision"], second["decision"], normal["decision"]) == (1, 1, 0)
    assert (first["source"], second["source"], normal["source"]) == (
        "fan_0930.wav",  # the base name of the multipart file name
        "fan_0931.wav",
        "http",
    )
    assert first["alarm"] is None and second["alarm"] == "opened"
    want_z = float(det.normalise([second["score"]], ("fan", "00"))[0])
    assert (
        second["normalised"] is None
        if not np.isfinite(want_z)
        else second["normalised"] == (pytest.approx(want_z, abs=1e-12))
    )

    listed = client.get("/v1/windows", params={"machine": "fan"}).json()["windows"]
    assert [w["id"] for w in listed] == [second["id"], first["id"]]  # newest first
    assert [w["source"] for w in listed] == ["fan_0931.wav", "fan_0930.wav"]
    assert all(w["has_audio"] and w["detector_name"] == "main" for w in listed)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", listed[0]["time"])
    by_source = client.get("/v1/windows", params={"source": "fan_0930.wav"}).json()["windows"]
    assert [w["id"] for w in by_source] == [first["id"]]

    one = client.get(f"/v1/windows/{first['id']}").json()
    assert one["audio_url"] == f"/v1/windows/{first['id']}/audio"
    bank = {str(c.path) for c in table.filter(split="train", machine="fan")}
    assert one["nearest_ref"] in bank  # a bank clip the detector recorded
    got = client.get(one["audio_url"])
    assert got.status_code == 200 and got.headers["content-type"] == "audio/wav"
    wave, rate = sf.read(_tmp(got.content, service), dtype="float32")
    info = sf.info(_tmp(got.content, service))
    assert rate == det.sample_rate and info.subtype == "PCM_16"
    upload, _ = load_audio(fan[0], det.sample_rate)
    np.testing.assert_allclose(wave, upload, atol=1.5 / 32768)  # 16-bit quantisation
    near = client.get(one["nearest_audio_url"])
    near_wave, _ = sf.read(_tmp(near.content, service), dtype="float32")
    ref, _ = load_audio(Path(one["nearest_ref"]), det.sample_rate)
    np.testing.assert_allclose(near_wave, ref, atol=1.5 / 32768)

    quiet = client.get(f"/v1/windows/{normal['id']}").json()
    assert quiet["has_audio"] is False and quiet["audio_url"] is None
    assert client.get(f"/v1/windows/{normal['id']}/audio").status_code == 404
    assert client.get(f"/v1/windows/{normal['id']}/nearest.wav").status_code == 404
    assert client.get("/v1/windows/999999").status_code == 404
    assert client.get("/v1/windows/0").status_code == 422
    assert "unknown machine" in client.get("/v1/windows?machine=pump").json()["error"]

    (alarm,) = client.get("/v1/alarms", params={"machine": "fan"}).json()["alarms"]
    assert (alarm["windows"], alarm["detector_name"], alarm["acknowledged"]) == (2, "main", False)
    acked = client.post(f"/v1/alarms/{alarm['id']}/ack", json={"note": "bearing, booked"}).json()
    assert acked["acknowledged"] is True and acked["ack_note"] == "bearing, booked"
    (again,) = client.get("/v1/alarms").json()["alarms"]
    assert again["ack_time"] == acked["ack_time"] and again["ack_note"] == "bearing, booked"
    assert client.post("/v1/alarms/424242/ack", json={"note": "x"}).status_code == 404
    assert (
        client.post(f"/v1/alarms/{alarm['id']}/ack", json={"note": "x" * 3000}).status_code == 422
    )
    assert client.get("/v1/alarms", params={"machine": "pump"}).status_code == 404

    machines = {m["machine"]: m for m in client.get("/v1/machines").json()["machines"]}
    assert machines["fan"]["state"] == "alarm" and machines["valve"]["state"] == "normal"
    assert machines["fan"]["open_alarm"]["acknowledged"] is True


def test_the_dashboard_shows_the_records_the_api_returns(
    served: tuple[httpx.Client, ScoringService, Detector, list[Path]],
) -> None:
    """One record type per concept: what the dashboard reads for every machine, window and alarm
    has the fields and values of the API's JSON for it."""
    client, service, _, fan = served
    for i, path in enumerate(fan[:2]):  # both anomalous: an alarm opens (k=2 of n=3)
        params = {"machine": "fan", "section": "00", "name": f"fan_{i}.wav"}
        assert client.post("/v1/score", params=params, content=path.read_bytes()).is_success
    (alarm,) = client.get("/v1/alarms").json()["alarms"]
    assert client.post(f"/v1/alarms/{alarm['id']}/ack", json={"note": "seen"}).is_success
    source = DashboardSource(service)

    def key(m: dict[str, Any]) -> tuple[str, str]:
        return m["machine"], m["section"]

    machines = sorted(client.get("/v1/machines").json()["machines"], key=key)
    assert {m["machine"] for m in machines} >= {"fan", "valve"}
    assert [m.model_dump(mode="json") for m in source.machines()] == machines
    query = {"machine": "fan", "section": "00", "order": "oldest"}
    windows = client.get("/v1/windows", params=query).json()["windows"]
    assert len(windows) == 2
    assert [w.model_dump(mode="json") for w in source.windows("fan", "00", None, None)] == windows
    for w in windows:
        detail = source.window(w["id"])
        assert detail is not None
        assert detail.model_dump(mode="json") == client.get(f"/v1/windows/{w['id']}").json()
    alarms = client.get("/v1/alarms").json()["alarms"]
    assert alarms[0]["ack_note"] == "seen"
    assert [a.model_dump(mode="json") for a in source.alarms()] == alarms
    one = source.alarm(alarm["id"])
    assert one is not None and one.model_dump(mode="json") == alarms[0]


def _tmp(data: bytes, service: ScoringService) -> Path:
    assert service.audio is not None
    path = service.audio.folder.parent / "fetched.wav"
    path.write_bytes(data)
    return path


def test_a_forged_audio_name_in_the_store_is_never_opened(
    served: tuple[httpx.Client, ScoringService, Detector, list[Path]],
) -> None:
    client, service, _, fan = served
    got = client.post("/v1/score?machine=fan&section=00", content=fan[0].read_bytes()).json()
    assert client.get(f"/v1/windows/{got['id']}/audio").status_code == 200
    from sqlalchemy import update

    from stetho.store.schema import scores

    assert service.store is not None
    for forged in ("../plant.db", "/etc/passwd", "..", "x/../../plant.db.wav"):
        with service.store.engine.begin() as conn:
            conn.execute(update(scores).where(scores.c.id == got["id"]).values(audio=forged))
        assert client.get(f"/v1/windows/{got['id']}/audio").status_code == 404
        assert client.get(f"/v1/windows/{got['id']}").json()["audio_url"] is None


def test_docs_are_interactive_and_load_nothing_from_elsewhere(
    served: tuple[httpx.Client, ScoringService, Detector, list[Path]],
) -> None:
    client, *_ = served
    for page in ("/docs", "/redoc"):
        html = client.get(page)
        assert html.status_code == 200
        urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html.text)
        urls += re.findall(r"""url:\s*["']([^"']+)["']""", html.text)
        assert urls and all(u.startswith("/") and not u.startswith("//") for u in urls), urls
        assert not re.search(r"https?://(?!127\.0\.0\.1)", html.text), page
        for u in urls:
            asset = client.get(u)
            assert asset.status_code == 200 and len(asset.content) > 100, u
    assert "SwaggerUIBundle" in client.get("/docs").text
    assert '"validatorUrl": null' in client.get("/docs").text  # no badge from validator.swagger.io
    schema = client.get("/openapi.json").json()
    routes = {(p, m) for p, ops in schema["paths"].items() for m in ops}
    for want in (
        ("/v1/score", "post"),
        ("/v1/windows", "get"),
        ("/v1/windows/{window_id}", "get"),
        ("/v1/windows/{window_id}/audio", "get"),
        ("/v1/windows/{window_id}/nearest.wav", "get"),
        ("/v1/alarms", "get"),
        ("/v1/alarms/{alarm_id}/ack", "post"),
        ("/v1/machines", "get"),
        ("/metrics", "get"),
        ("/healthz", "get"),
    ):
        assert want in routes, want
    for path, ops in schema["paths"].items():
        for op in ops.values():
            assert op.get("summary") and op.get("description"), path
    for name in ("WindowSummary", "WindowDetail", "Alarm", "Machine", "ScoreResult"):
        assert schema["components"]["schemas"][name]["examples"], name


def test_metrics_parse_and_carry_machines_requests_and_collectors(
    served: tuple[httpx.Client, ScoringService, Detector, list[Path]],
) -> None:
    client, _, _, fan = served
    got = client.post("/v1/score?machine=fan&section=00", content=fan[0].read_bytes()).json()
    client.get(f"/v1/windows/{got['id']}")
    client.get("/v1/windows/999999")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(client.get("/metrics").text)
        for s in fam.samples
    }
    names = {n for n, _ in samples}
    for want in (
        "stetho_build_info",
        "process_cpu_seconds_total",
        "python_gc_objects_collected_total",
    ):
        assert want in names, want
    fan_key = (("machine", "fan"), ("section", "00"))
    if got["normalised"] is not None:
        assert samples[("stetho_last_normalised_score", fan_key)] == pytest.approx(
            got["normalised"]
        )
    assert samples[("stetho_machine_state", (*fan_key, ("state", "anomalous")))] == 1.0
    valve_never = (("machine", "valve"), ("section", "00"), ("state", "no scores yet"))
    assert samples[("stetho_machine_state", valve_never)] == 1.0  # known, never scored
    by_route = {
        dict(labels)["route"]: v
        for (n, labels), v in samples.items()
        if n == "stetho_http_requests_total"
    }
    # labelled by route template, never by the raw path
    assert "/v1/windows/{window_id}" in by_route and not any("999999" in r for r in by_route)
    ok = (("method", "GET"), ("route", "/v1/windows/{window_id}"), ("status", "200"))
    missing = (("method", "GET"), ("route", "/v1/windows/{window_id}"), ("status", "404"))
    assert samples[("stetho_http_requests_total", ok)] == 1.0
    assert samples[("stetho_http_requests_total", missing)] == 1.0
    assert samples[("stetho_http_request_duration_seconds_count", (("route", "/v1/score"),))] == 1.0


def test_a_version_1_store_is_migrated_in_place(store_url: str) -> None:
    """A database written by the previous schema (version 1) gains the new columns; its rows
    read back with no normalised score and no detector name."""
    from datetime import UTC, datetime

    from sqlalchemy import create_engine

    from stetho.store import database_url

    v1 = MetaData()
    Table("schema_version", v1, Column("version", Integer, primary_key=True),
          Column("applied", DateTime(timezone=True)))  # fmt: skip
    old_scores = Table(
        "scores", v1, Column("id", Integer, primary_key=True), Column("time", DateTime(True)),
        Column("machine", String(200)), Column("section", String(50)), Column("source", Text),
        Column("window_start", Float), Column("window_end", Float), Column("score", Float),
        Column("threshold", Float), Column("decision", Integer),
        Column("detector_id", String(200)), Column("detector_version", Integer),
    )  # fmt: skip
    Table(
        "alarms", v1, Column("id", Integer, primary_key=True), Column("machine", String(200)),
        Column("section", String(50)), Column("opened", DateTime(True)),
        Column("closed", DateTime(True)), Column("peak_score", Float),
        Column("n_windows", Integer), Column("detector_id", String(200)),
        Column("detector_version", Integer),
    )  # fmt: skip
    Table("positions", v1, Column("source", Text, primary_key=True), Column("position", Text),
          Column("updated", DateTime(True)))  # fmt: skip
    engine = create_engine(database_url(store_url))
    t = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    naive = t.replace(tzinfo=None) if engine.dialect.name == "sqlite" else t
    with engine.begin() as conn:
        v1.create_all(conn)
        conn.execute(insert(v1.tables["schema_version"]).values(version=1, applied=naive))
        conn.execute(
            insert(old_scores).values(
                time=naive, machine="fan", section="00", source="http", window_start=0.0,
                window_end=1.0, score=0.5, threshold=1.0, decision=0, detector_id="d",
                detector_version=1,
            )
        )  # fmt: skip
    engine.dispose()
    with ScoreStore.open(store_url) as store:
        (old,) = store.scores("fan")
        assert (old.score, old.normalised, old.detector_name, old.audio) == (0.5, None, "", None)
        assert old.time == t
        row = ScoreRow(t, "fan", "00", "fan_1.wav", 0.0, 1.0, 2.0, 1.0, 1, "d", 1,
                       detector_name="main", normalised=1.3)  # fmt: skip
        store.add_scores([row])
        assert [w.normalised for w in store.windows("fan")] == [1.3, None]
    with ScoreStore.open(store_url) as store:  # at the current version: nothing to do
        assert store._schema_version() == SCHEMA_VERSION == 2


def test_audio_folder_is_bounded_by_size_and_age_and_refuses_foreign_names(tmp_path: Path) -> None:
    import os
    from datetime import UTC, datetime

    one = np.zeros(SR, dtype=np.float32)  # 1 s = 32000 bytes of samples + a 44-byte header
    size = 2 * SR + 44
    keeper = AudioKeeper(tmp_path / "a", max_bytes=int(2.5 * size), max_age_days=1.0)
    names = []
    for i in range(4):
        names.append(keeper.keep(one + 0.01 * i, SR, "fan", "00", datetime.now(UTC)))
        past = datetime.now(UTC).timestamp() - 1000 + i  # written in this order, in the past
        os.utime(keeper.folder / names[-1], (past, past))
    # the two newest fit in 2.5 files' size; the oldest went first
    assert sorted(p.name for p in keeper.folder.iterdir()) == sorted(names[2:])
    assert keeper.path(names[3]).stat().st_size == size
    old = keeper.folder / names[2]
    os.utime(old, (0, datetime.now(UTC).timestamp() - 2 * 86400))  # two days old
    assert keeper.prune() == 1 and not old.exists()
    for bad in ("../x.wav", "/etc/passwd", ".hidden.wav", names[2], "a/b.wav", None):
        with pytest.raises(NotFoundError):
            keeper.path(bad)
    assert AudioKeeper.for_store("postgresql://u@h/db") is None
    sqlite_keeper = AudioKeeper.for_store(tmp_path / "plant.db")
    assert sqlite_keeper is not None and sqlite_keeper.folder == tmp_path / "plant.db.audio"
