"""Load on `stetho serve` (a real process on 127.0.0.1): concurrent clients, idle connections,
an hour-long FLAC.

    python benchmarks/bench_serve.py                       # tiny logmel detector on synthetic data
    python benchmarks/bench_serve.py --detector runs/pump/detector --clip clip.wav --machine pump

Prints a Markdown table; nothing is asserted (the tests assert the limits).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf


def _tiny_detector(root: Path) -> tuple[Path, Path, str]:
    import torch

    from stetho.config import ExperimentConfig
    from stetho.data import generate_synthetic_dataset, scan_dataset
    from stetho.detector import Detector
    from stetho.training import train

    torch.set_num_threads(1)
    data = generate_synthetic_dataset(root / "data", machines=("fan",), seconds=1.0)
    table = scan_dataset(data)
    cfg = ExperimentConfig().override(
        [
            "backbone.name=logmel",
            "finetune.strategy=frozen",
            "head.embed_dim=16",
            "train.epochs=1",
            "train.batch_size=4",
            "train.tensorboard=false",
        ]
    )
    clips = table.filter(split="train")
    det = Detector.from_training(train(cfg, clips, root / "train", progress=False)).fit(clips)
    clip = next(iter(table.filter(split="test"))).path
    return det.save(root / "detector"), clip, "fan"


def _rss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+)", text)
    return int(match.group(1)) / 1024 if match else float("nan")


def _concurrent(url: str, body: bytes, machine: str, n: int) -> tuple[int, float, float]:
    barrier = threading.Barrier(n)

    def one(client: httpx.Client) -> tuple[bool, float]:
        barrier.wait()
        t0 = time.perf_counter()
        try:
            r = client.post(url + "/v1/score", params={"machine": machine}, content=body)
            ok = r.status_code == 200
        except httpx.HTTPError:
            ok = False
        return ok, time.perf_counter() - t0

    limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
    with httpx.Client(timeout=120, limits=limits) as client, ThreadPoolExecutor(n) as pool:
        res = list(pool.map(one, [client] * n))
    lat = sorted(t for _, t in res)
    return sum(not ok for ok, _ in res), lat[n // 2], lat[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--detector", default=None)
    ap.add_argument("--clip", default=None)
    ap.add_argument("--machine", default="fan")
    ap.add_argument("--clients", default="50,200")
    ap.add_argument("--idle", type=int, default=600)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_serve_"))
    if args.detector:
        det, clip, machine = Path(args.detector), Path(args.clip), args.machine
    else:
        det, clip, machine = _tiny_detector(tmp)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "stetho", "serve", "--detector", str(det), "--port", "0"]
    cmd += ["--db", str(tmp / "bench.db"), "--timeout", "5"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        url = re.search(r"http://[\d.:]+", proc.stdout.readline()).group(0)  # type: ignore[union-attr]
        body = clip.read_bytes()
        print("| check | result |\n|---|---|")
        for n in (int(x) for x in args.clients.split(",")):
            failed, p50, worst = _concurrent(url, body, machine, n)
            print(
                f"| {n} concurrent POSTs | {failed} failures, p50 {p50 * 1e3:.0f} ms, max "
                f"{worst * 1e3:.0f} ms |"
            )
        host, port = url.removeprefix("http://").split(":")
        idle = [socket.create_connection((host, int(port))) for _ in range(args.idle)]
        t0 = time.perf_counter()
        r = httpx.post(url + "/v1/score", params={"machine": machine}, content=body, timeout=60)
        print(
            f"| a POST with {args.idle} idle connections open | {r.status_code} in "
            f"{(time.perf_counter() - t0) * 1e3:.0f} ms |"
        )
        t0, closed = time.perf_counter(), 0
        for s in idle:
            s.settimeout(30)
            with contextlib.suppress(OSError):
                closed += s.recv(1) == b""
            s.close()
        print(
            f"| idle connections closed by the server | {closed}/{args.idle} within "
            f"{time.perf_counter() - t0:.1f} s (header timeout 5 s) |"
        )
        buf = io.BytesIO()
        with sf.SoundFile(buf, "w", 16000, 1, format="FLAC", subtype="PCM_16") as f:
            for _ in range(60):
                f.write(np.zeros(16000 * 60, np.int16))
        before = _rss_mb(proc.pid)
        r = httpx.post(url + "/v1/score", params={"machine": machine}, content=buf.getvalue())
        print(
            f"| 1-hour silent FLAC ({len(buf.getvalue()) / 1024:.0f} KB) | {r.status_code}, "
            f"server RSS {before:.0f} → {_rss_mb(proc.pid):.0f} MB |"
        )
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
