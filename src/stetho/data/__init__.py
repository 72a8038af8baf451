"""Datasets: DCASE Task 2 clip names, dataset scanning, audio loading, synthetic data, downloads,
imports of plain recordings."""

from stetho.data.audio import AudioError, AudioInfo, AudioSource, audio_info, load_audio
from stetho.data.download import (
    DATASETS,
    Archive,
    DatasetSpec,
    dataset_archives,
    download_dataset,
    fetch_record_metadata,
)
from stetho.data.importer import (
    ImportSummary,
    RecordingImportError,
    import_recordings,
    run_import,
)
from stetho.data.names import (
    AUDIO_EXTENSIONS,
    CLIP_NAME_PATTERNS,
    ClipName,
    ClipNameError,
    is_audio_file_name,
    parse_clip_name,
)
from stetho.data.scan import (
    Clip,
    ClipTable,
    ScanError,
    ScanProblem,
    format_summary,
    group_by_key,
    infer_year,
    scan_dataset,
)
from stetho.data.synth import generate_synthetic_dataset

__all__ = [
    "AUDIO_EXTENSIONS",
    "CLIP_NAME_PATTERNS",
    "DATASETS",
    "Archive",
    "AudioError",
    "AudioInfo",
    "AudioSource",
    "Clip",
    "ClipName",
    "ClipNameError",
    "ClipTable",
    "DatasetSpec",
    "ImportSummary",
    "RecordingImportError",
    "ScanError",
    "ScanProblem",
    "audio_info",
    "dataset_archives",
    "download_dataset",
    "fetch_record_metadata",
    "format_summary",
    "generate_synthetic_dataset",
    "group_by_key",
    "import_recordings",
    "infer_year",
    "is_audio_file_name",
    "load_audio",
    "parse_clip_name",
    "run_import",
    "scan_dataset",
]
