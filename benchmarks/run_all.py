"""Re-run every ratio benchmark in one command and print the ratios side by side.

Usage::

    python benchmarks/run_all.py [--quick] [--out results.json] [--only knn folder ...]

Runs ``ratio_backbones.py``, ``ratio_knn.py``, ``ratio_folder.py``, ``ratio_train.py`` and
``ratio_export.py`` one after the other (each in its own process), collects their ``RESULT`` lines,
prints a ratio summary and writes all rows to ``--out``. With ``--efficientat PATH`` (a checkout
of the official EfficientAT code, never part of this repository; ``--efficientat-path`` adds
folders to its ``sys.path``) it also runs ``ratio_official_efficientat.py``. ``--quick`` uses the small settings of
each script (minutes on 2 cores instead of hours). GPU rows: run on a GPU machine and add them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = {
    "backbones": "ratio_backbones.py",
    "knn": "ratio_knn.py",
    "folder": "ratio_folder.py",
    "train": "ratio_train.py",
    "export": "ratio_export.py",
}


def _summary(rows: list[dict]) -> list[str]:
    lines = []
    for r in rows:
        b = r.get("bench")
        if b == "backbone":
            extra = ""
            if "today_over_plain" in r:
                extra = (
                    f"; time today/without the fast path {r['today_over_plain']}, "
                    f"today/47ecd60 {r['today_over_before']}"
                )
            lines.append(
                f"backbone {r['backbone']}: {r['fraction_of_peak']:.1%} of matmul peak "
                f"({r['gflop_per_clip']} GFLOP/clip, {r['ms_per_clip']} ms/clip){extra}"
            )
        elif b == "knn":
            lines.append(
                f"k-NN {r['bank']:>9,} rows: exact {r['exact_fraction_of_peak']:.0%} of peak, "
                f"exact/numpy {r['exact_vs_numpy']}, exact/faiss {r.get('exact_vs_faiss', '-')}, "
                f"auto/faiss {r.get('auto_vs_faiss', '-')}"
            )
        elif b == "folder":
            lines.append(
                f"folder {r['clips']} clips: speed-up vs before {r['speedup_vs_before']}x, "
                f"workers only {r['speedup_workers_only']}x; clips/s {r['clips_per_s']}; "
                f"peak MiB {r['peak_rss_mib']}"
            )
        elif b == "train":
            lines.append(
                f"train {r['backbone']}: LoRA/full time {r.get('time_lora_over_full', '-')}, "
                f"peak memory {r.get('peak_rss_lora_over_full', '-')}"
            )
        elif b == "official_efficientat":
            lines.append(
                f"mn04 forward vs official EfficientAT ({r['batch']} x {r['seconds']} s): "
                f"time stetho/official {r['stetho_over_official']}, without the fast path "
                f"{r['plain_over_official']}; max |Δ embedding| {r['max_abs_embedding_diff']:.1e}"
            )
        elif b == "export" and "pooled_auc" in r:
            lines.append(
                f"export ({r['test_clips']} real clips): AUC {r['pooled_auc']}, "
                f"time/torch {r['time_over_torch']}, max |Δscore| {r['max_abs_score_diff_vs_torch']}"
            )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None, help="write all result rows as JSON here")
    ap.add_argument("--only", nargs="+", choices=list(SCRIPTS), default=list(SCRIPTS))
    ap.add_argument("--efficientat", default=None, help="official EfficientAT checkout")
    ap.add_argument("--efficientat-path", nargs="*", default=[], help="its extra sys.path")
    args = ap.parse_args()
    jobs = [[str(HERE / SCRIPTS[name])] + (["--quick"] if args.quick else []) for name in args.only]
    if args.efficientat:
        official = [str(HERE / "ratio_official_efficientat.py"), "--efficientat", args.efficientat]
        if args.efficientat_path:
            official += ["--path", *args.efficientat_path]
        jobs.append(official)
    rows: list[dict] = []
    for job in jobs:
        name = Path(job[0]).stem
        cmd = [sys.executable, *job]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = [
            json.loads(line[len("RESULT ") :])
            for line in proc.stdout.splitlines()
            if line.startswith("RESULT ")
        ]
        if proc.returncode != 0:
            got.append({"bench": name, "error": proc.stderr.strip().splitlines()[-3:]})
        rows += got
        print(f"# {name}: {len(got)} row(s) in {time.perf_counter() - t0:.0f} s", flush=True)
    print("\n".join(_summary(rows)))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
