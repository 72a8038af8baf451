"""Download and unpack the official DCASE Task 2 archives from Zenodo (protocol §7).

Archives go to ``<root>/dcase<YYYY>t2/archives/`` (resumable, size/MD5-verified through
:func:`stetho.utils.download.download_file`) and are unzipped into
``<root>/dcase<YYYY>t2/{dev_data,eval_data}/raw/`` (eval train and test zips both into
``eval_data/raw``). A marker file per archive (``<root>/dcase<YYYY>t2/.stetho_done/<zip>.json``)
makes re-runs download and extract nothing. MD5s are not part of the spec: pass ``md5={file: md5}``
or let the function read sizes and checksums from the Zenodo record metadata
(``<base_url>/api/records/<record>``) when online.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from stetho.utils.download import DownloadError, OfflineError, download_file, is_offline
from stetho.utils.io import atomic_write, atomic_write_text

__all__ = [
    "DATASETS",
    "DEFAULT_BASE_URL",
    "Archive",
    "DatasetSpec",
    "archive_url",
    "dataset_archives",
    "download_dataset",
    "fetch_record_metadata",
]

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://zenodo.org"
MARKER_DIR = ".stetho_done"
ARCHIVE_DIR = "archives"

Part = Literal["dev", "eval-train", "eval-test"]


@dataclass(frozen=True)
class Archive:
    """One official zip: Zenodo record, file name, machine type and part."""

    year: int
    record: str
    file: str
    machine: str
    part: Part

    @property
    def partition_dir(self) -> str:
        """``dev_data`` or ``eval_data``."""
        return "dev_data" if self.part == "dev" else "eval_data"


@dataclass(frozen=True)
class DatasetSpec:
    """All archives of one challenge year."""

    name: str
    year: int
    archives: tuple[Archive, ...]

    def machines(self, part: str = "all") -> list[str]:
        """Machine types of the dev/eval part (``"dev"``, ``"eval"`` or ``"all"``)."""
        return sorted({a.machine for a in self.archives if _part_selected(a.part, part)})


_ARCHIVE_PATTERNS: tuple[tuple[re.Pattern[str], Part], ...] = (
    (re.compile(r"dev_data_(?P<m>[^_]+)\.zip"), "dev"),  # 2020, 2021
    (re.compile(r"dev_(?P<m>[^_]+)\.zip"), "dev"),  # 2022+
    (re.compile(r"eval_data_train_(?P<m>[^_]+)\.zip"), "eval-train"),  # 2020
    (re.compile(r"eval_data_test_(?P<m>[^_]+)\.zip"), "eval-test"),  # 2020
    (re.compile(r"eval_data_(?P<m>[^_]+)_train(?:_r\d+)?\.zip"), "eval-train"),  # 2021+
    (re.compile(r"eval_data_(?P<m>[^_]+)_test(?:_r\d+)?\.zip"), "eval-test"),  # 2021+
)


def _archive(year: int, record: str, file: str) -> Archive:
    for pattern, part in _ARCHIVE_PATTERNS:
        if m := pattern.fullmatch(file):
            return Archive(year, record, file, m["m"], part)
    raise ValueError(f"unrecognised archive name {file!r}")


# Protocol §7 (file names exactly as published by the organisers).
_RECORDS: dict[int, list[tuple[str, str]]] = {
    2020: [
        ("3678171", "dev_data_ToyCar.zip dev_data_ToyConveyor.zip dev_data_fan.zip "
                    "dev_data_valve.zip dev_data_slider.zip dev_data_pump.zip"),
        ("3727685", "eval_data_train_ToyCar.zip eval_data_train_ToyConveyor.zip "
                    "eval_data_train_fan.zip eval_data_train_valve.zip "
                    "eval_data_train_slider.zip eval_data_train_pump.zip"),
        ("3841772", "eval_data_test_ToyCar.zip eval_data_test_ToyConveyor.zip "
                    "eval_data_test_fan.zip eval_data_test_valve.zip eval_data_test_slider.zip "
                    "eval_data_test_pump.zip"),
    ],
    2021: [
        ("4562016", "dev_data_fan.zip dev_data_gearbox.zip dev_data_pump.zip dev_data_slider.zip "
                    "dev_data_ToyCar.zip dev_data_ToyTrain.zip dev_data_valve.zip"),
        ("4660992", "eval_data_fan_train.zip eval_data_gearbox_train.zip eval_data_pump_train.zip "
                    "eval_data_slider_train.zip eval_data_ToyCar_train.zip "
                    "eval_data_ToyTrain_train.zip eval_data_valve_train.zip"),
        ("4884786", "eval_data_fan_test.zip eval_data_gearbox_test.zip eval_data_pump_test.zip "
                    "eval_data_slider_test.zip eval_data_ToyCar_test.zip "
                    "eval_data_ToyTrain_test.zip eval_data_valve_test.zip"),
    ],
    2022: [
        ("6355122", "dev_bearing.zip dev_fan.zip dev_gearbox.zip dev_slider.zip dev_ToyCar.zip "
                    "dev_ToyTrain.zip dev_valve.zip"),
        ("6462969", "eval_data_bearing_train.zip eval_data_fan_train.zip "
                    "eval_data_gearbox_train.zip eval_data_slider_train.zip "
                    "eval_data_ToyCar_train.zip eval_data_ToyTrain_train.zip "
                    "eval_data_valve_train.zip"),
        ("6586456", "eval_data_bearing_test.zip eval_data_fan_test.zip eval_data_gearbox_test.zip "
                    "eval_data_slider_test.zip eval_data_ToyCar_test.zip "
                    "eval_data_ToyTrain_test.zip eval_data_valve_test.zip"),
    ],
    2023: [
        ("7882613", "dev_bearing.zip dev_fan.zip dev_gearbox.zip dev_slider.zip dev_ToyCar.zip "
                    "dev_ToyTrain.zip dev_valve.zip"),
        ("7830345", "eval_data_bandsaw_train.zip eval_data_grinder_train.zip "
                    "eval_data_shaker_train.zip eval_data_ToyDrone_train.zip "
                    "eval_data_ToyNscale_train.zip eval_data_ToyTank_train.zip "
                    "eval_data_Vacuum_train.zip"),
        # The spec table reads "eval_data_Vacuum_test.zipDCASE2024T2:" (a pasting slip).
        ("7860847", "eval_data_bandsaw_test.zip eval_data_grinder_test.zip "
                    "eval_data_shaker_test.zip eval_data_ToyDrone_test.zip "
                    "eval_data_ToyNscale_test.zip eval_data_ToyTank_test.zip "
                    "eval_data_Vacuum_test.zip"),
    ],
    2024: [
        ("10902294", "dev_bearing.zip dev_fan.zip dev_gearbox.zip dev_slider.zip dev_ToyCar.zip "
                     "dev_ToyTrain.zip dev_valve.zip"),
        ("11259435", "eval_data_3DPrinter_train_r2.zip eval_data_AirCompressor_train.zip "
                     "eval_data_Scanner_train.zip eval_data_ToyCircuit_train.zip "
                     "eval_data_HoveringDrone_train.zip eval_data_HairDryer_train.zip "
                     "eval_data_ToothBrush_train.zip eval_data_RoboticArm_train_r2.zip "
                     "eval_data_BrushlessMotor_train.zip"),
        ("11363076", "eval_data_3DPrinter_test.zip eval_data_AirCompressor_test.zip "
                     "eval_data_Scanner_test.zip eval_data_ToyCircuit_test.zip "
                     "eval_data_HoveringDrone_test.zip eval_data_HairDryer_test.zip "
                     "eval_data_ToothBrush_test.zip eval_data_RoboticArm_test.zip "
                     "eval_data_BrushlessMotor_test.zip"),
    ],
    2025: [
        ("15097779", "dev_ToyCar.zip dev_ToyTrain.zip dev_bearing.zip dev_fan.zip "
                     "dev_gearbox.zip dev_slider.zip dev_valve.zip"),
        ("15392814", "eval_data_ToyRCCar_train.zip eval_data_ToyPet_train.zip "
                     "eval_data_HomeCamera_train.zip eval_data_AutoTrash_train.zip "
                     "eval_data_Polisher_train.zip eval_data_ScrewFeeder_train.zip "
                     "eval_data_BandSealer_train.zip eval_data_CoffeeGrinder_train.zip"),
        ("15519362", "eval_data_ToyRCCar_test.zip eval_data_ToyPet_test.zip "
                     "eval_data_HomeCamera_test.zip eval_data_AutoTrash_test.zip "
                     "eval_data_Polisher_test.zip eval_data_ScrewFeeder_test.zip "
                     "eval_data_BandSealer_test.zip eval_data_CoffeeGrinder_test.zip"),
    ],
}  # fmt: skip

#: Official archives per dataset name ("dcase2020" … "dcase2025"), protocol §7.
DATASETS: dict[str, DatasetSpec] = {
    f"dcase{year}": DatasetSpec(
        name=f"dcase{year}",
        year=year,
        archives=tuple(
            _archive(year, record, f) for record, files in records for f in files.split()
        ),
    )
    for year, records in _RECORDS.items()
}


def _part_selected(archive_part: str, part: str) -> bool:
    return part == "all" or (part == "dev") == (archive_part == "dev")


def _resolve_name(name: str) -> DatasetSpec:
    key = name.strip().lower()
    if key.isdigit():
        key = f"dcase{key}"
    key = key.removesuffix("t2")
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    return DATASETS[key]


def dataset_archives(
    name: str = "dcase2023", part: str = "dev", machines: Iterable[str] | None = None
) -> list[Archive]:
    """The archives of ``name`` for ``part`` ("dev", "eval", "all"), optionally some machines.

    Raises:
        ValueError: unknown dataset, part or machine (the message lists the valid ones).
    """
    spec = _resolve_name(name)
    if part not in ("dev", "eval", "all"):
        raise ValueError(f"unknown part {part!r}; valid: dev, eval, all")
    selected = [a for a in spec.archives if _part_selected(a.part, part)]
    if machines is not None:
        wanted = list(machines)
        valid = spec.machines(part)
        bad = [m for m in wanted if m not in valid]
        if bad:
            raise ValueError(
                f"unknown machine type(s) {bad} for {spec.name} part {part!r}; valid: "
                f"{', '.join(valid)}"
            )
        selected = [a for a in selected if a.machine in wanted]
    return selected


def archive_url(archive: Archive, base_url: str = DEFAULT_BASE_URL) -> str:
    """``<base_url>/record/<record>/files/<file>``."""
    return f"{base_url.rstrip('/')}/record/{archive.record}/files/{archive.file}"


def fetch_record_metadata(
    record: str, base_url: str = DEFAULT_BASE_URL, timeout: float = 30.0
) -> dict[str, dict[str, Any]]:
    """Sizes and MD5s of a Zenodo record's files: ``{file: {"size": int|None, "md5": str|None}}``.

    Reads ``<base_url>/api/records/<record>`` (Zenodo REST API; ``checksum`` is ``"md5:<hex>"``).

    Raises:
        OfflineError: offline mode or the host is unreachable.
        DownloadError: HTTP error or unexpected JSON.
    """
    url = f"{base_url.rstrip('/')}/api/records/{record}"
    if is_offline():
        raise OfflineError(f"offline mode: cannot fetch {url}")
    request = urllib.request.Request(
        url, headers={"User-Agent": "stetho", "Accept": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as err:
        raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        raise OfflineError(f"cannot reach {url} ({getattr(err, 'reason', err)})") from err
    except (ValueError, UnicodeDecodeError) as err:
        raise DownloadError(f"{url}: invalid JSON ({err})") from err
    files = payload.get("files") if isinstance(payload, dict) else None
    if isinstance(files, dict):  # newer API: {"entries": {...}} or {"entries": [...]}
        files = files.get("entries", files)
        if isinstance(files, dict):
            files = list(files.values())
    if not isinstance(files, list):
        raise DownloadError(f"{url}: no 'files' list in the record metadata")
    out: dict[str, dict[str, Any]] = {}
    for entry in files:
        if not isinstance(entry, dict):
            continue
        fname = entry.get("key") or entry.get("filename")
        if not fname:
            continue
        checksum = str(entry.get("checksum") or "")
        md5 = checksum.split(":", 1)[1] if checksum.startswith("md5:") else None
        size = entry.get("size", entry.get("filesize"))
        out[str(fname)] = {"size": int(size) if size is not None else None, "md5": md5}
    return out


def _member_target(member: str, machine: str) -> PurePosixPath | None:
    """Where a zip member goes, relative to ``raw/``; None to skip (folders, macOS debris)."""
    if member.endswith("/"):
        return None
    path = PurePosixPath(member.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise DownloadError(f"unsafe path in archive: {member!r}")
    parts = list(path.parts)
    if parts[0] == "__MACOSX" or parts[-1] == ".DS_Store":
        return None
    while len(parts) > 1 and parts[0] in ("dev_data", "eval_data", "raw"):
        parts.pop(0)
    if parts[0] != machine:
        parts.insert(0, machine)
    return PurePosixPath(*parts)


def _extract(zip_path: Path, raw_dir: Path, machine: str) -> int:
    """Unzip into ``raw_dir`` (files written atomically); returns the number of files."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            n = 0
            for info in zf.infolist():
                rel = _member_target(info.filename, machine)
                if rel is None:
                    continue
                with zf.open(info) as src, atomic_write(raw_dir / rel, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                n += 1
    except zipfile.BadZipFile as err:
        zip_path.unlink(missing_ok=True)
        raise DownloadError(
            f"corrupt archive {zip_path} ({err}); it was deleted, run again to re-download"
        ) from err
    return n


def download_dataset(
    name: str = "dcase2023",
    part: Literal["dev", "eval", "all"] = "dev",
    root: str | os.PathLike[str] = "data",
    machines: Iterable[str] | None = None,
    *,
    base_url: str = DEFAULT_BASE_URL,
    md5: Mapping[str, str] | None = None,
    fetch_metadata: bool = True,
    keep_archives: bool = False,
    progress: bool = True,
    retries: int = 2,
) -> Path:
    """Download and unpack official DCASE Task 2 archives; returns ``<root>/dcase<YYYY>t2``.

    Args:
        name: "dcase2020" … "dcase2025" (also "dcase2023t2" or "2023").
        part: "dev", "eval" (additional train + test) or "all".
        root: Data folder; the dataset goes to ``<root>/dcase<YYYY>t2``.
        machines: Restrict to these machine types (default: all of the part).
        base_url: Zenodo host (tests point it at a local server).
        md5: Optional ``{zip file name: md5}``; takes precedence over the record metadata.
        fetch_metadata: Read sizes/MD5s from ``<base_url>/api/records/<record>`` (failures are
            logged and the download goes on unverified).
        keep_archives: Keep the zips in ``<root>/dcase<YYYY>t2/archives`` after unpacking.
        progress: Show progress bars.
        retries: Extra attempts that resume an interrupted transfer (from its ``.part`` file).

    Raises:
        OfflineError: offline (``STETHO_OFFLINE=1``) or unreachable and archives are missing;
            the message lists the URLs and where to put the files.
        DownloadError: HTTP error, checksum mismatch, corrupt archive.
        ValueError: unknown dataset, part or machine.
    """
    spec = _resolve_name(name)
    archives = dataset_archives(spec.name, part, machines)
    out = Path(root) / f"dcase{spec.year}t2"
    marker_dir = out / MARKER_DIR
    archive_dir = out / ARCHIVE_DIR

    todo = [a for a in archives if not (marker_dir / f"{a.file}.json").is_file()]
    if not todo:
        logger.info("%s (%s) already complete in %s", spec.name, part, out)
        return out
    missing = [a for a in todo if not (archive_dir / a.file).is_file()]

    def offline_message(reason: str) -> str:
        lines = "\n".join(f"  {archive_url(a, base_url)}" for a in missing)
        return (
            f"{reason}: {len(missing)} archive(s) of {spec.name} ({part}) are needed:\n{lines}\n"
            f"Download them elsewhere and put them in {archive_dir}/ then run again "
            "(they are verified and unpacked from there without network access)."
        )

    offline = is_offline()
    meta: dict[str, dict[str, Any]] = {}
    if fetch_metadata and missing and not offline:
        for record in sorted({a.record for a in todo}):
            try:
                meta.update(fetch_record_metadata(record, base_url))
            except OfflineError as err:
                raise OfflineError(offline_message(f"network unreachable ({err})")) from err
            except DownloadError as err:
                logger.warning(
                    "no checksums for record %s (%s); downloading unverified", record, err
                )

    for a in todo:
        if offline and a in missing:
            continue  # unpack what is already here, then report the rest
        info = meta.get(a.file, {})
        expected_md5 = (md5 or {}).get(a.file) or info.get("md5")
        zip_path = archive_dir / a.file
        for attempt in range(retries + 1):
            try:
                download_file(
                    archive_url(a, base_url),
                    zip_path,
                    size=info.get("size"),
                    md5=expected_md5,
                    progress=progress,
                )
                break
            except OfflineError as err:
                raise OfflineError(offline_message(f"network unreachable ({err})")) from err
            except DownloadError as err:
                part_file = zip_path.with_name(zip_path.name + ".part")
                if attempt < retries and part_file.is_file():
                    logger.warning("%s; resuming (attempt %d of %d)", err, attempt + 2, retries + 1)
                    continue
                raise
        raw_dir = out / a.partition_dir / "raw"
        n_files = _extract(zip_path, raw_dir, a.machine)
        logger.info("unpacked %s: %d files into %s", a.file, n_files, raw_dir)
        atomic_write_text(
            marker_dir / f"{a.file}.json",
            json.dumps(
                {"file": a.file, "record": a.record, "machine": a.machine, "part": a.part,
                 "files": n_files, "md5": expected_md5},
                indent=2,
            ) + "\n",
        )  # fmt: skip
        if not keep_archives:
            zip_path.unlink(missing_ok=True)
    if offline and missing:
        raise OfflineError(offline_message("offline mode (STETHO_OFFLINE/HF_HUB_OFFLINE is set)"))
    return out
