"""Nothing is lost or half-written when a writer is killed (SIGKILL) mid-write; restarts resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from stetho.store import ScoreStore

BATCH = 40

WRITER = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime
    from stetho.store import ScoreRow, ScoreStore

    store = ScoreStore.open(sys.argv[1])
    source, batch = sys.argv[2], int(sys.argv[3])
    done = int(store.last_position(source) or 0)   # resume after the last committed batch
    while True:
        rows = [
            ScoreRow(datetime.now(UTC), "fan", "00", source, float(done * batch + j),
                     float(done * batch + j + 1), 0.5, 1.0, 0, "det", 1)
            for j in range(batch)
        ]
        store.add_scores(rows, positions={source: str(done + 1)})
        done += 1
        print(done, flush=True)
    """
)


def _run_and_kill(url: str, source: str, min_batches: int) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, url, source, str(BATCH)],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    seen = 0
    while seen < min_batches:
        line = proc.stdout.readline()
        assert line, f"writer died early (rc={proc.poll()})"
        seen = int(line)
        assert time.monotonic() < deadline
    proc.send_signal(signal.SIGKILL)  # mid-stream: it was writing the next batch
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def _check_consistent(url: str, source: str) -> int:
    with ScoreStore.open(url) as store:
        pos = int(store.last_position(source) or 0)
        rows = store.scores("fan", "00")
        starts = sorted(r.window_start for r in rows if r.source == source)
        # exactly the committed batches: no partial batch, no duplicate, no gap
        assert starts == [float(i) for i in range(pos * BATCH)]
        if store.dialect == "sqlite":
            with store.engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
        return pos


def test_sigkilled_writer_loses_nothing_and_a_restart_resumes(store_url: str) -> None:
    ScoreStore.open(store_url).close()  # schema first, so that the writer starts writing at once
    _run_and_kill(store_url, "w", min_batches=3)
    first = _check_consistent(store_url, "w")
    assert first >= 3
    _run_and_kill(store_url, "w", min_batches=first + 2)  # resumes at batch first + 1
    assert _check_consistent(store_url, "w") >= first + 2


def test_two_processes_write_one_sqlite_file_without_lock_errors(tmp_path: Path) -> None:
    url = str(tmp_path / "shared.db")
    ScoreStore.open(url).close()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    # each process writes 25 batches and exits 0 (a "database is locked" error would exit 1)
    code = WRITER.replace("while True:", "for _ in range(25):")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, url, src, "10"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for src in ("a", "b")
    ]
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, err[-2000:]
    with ScoreStore.open(url) as store:
        assert store.last_position("a") == store.last_position("b") == "25"
        assert len(store.scores("fan")) == 2 * 25 * 10
