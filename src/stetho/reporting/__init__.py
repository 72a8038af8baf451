"""Reports and explanations: an evaluation report as one self-contained HTML file, why a clip
scored high, and how a detector degrades under background noise.

>>> from stetho.reporting import build_report, explain_file, evaluate_under_noise  # doctest: +SKIP
>>> build_report("runs/demo", "runs/demo/report")                                # doctest: +SKIP

matplotlib is imported only when a figure is drawn (Agg backend); t-SNE maps need scikit-learn.
"""

from stetho.reporting.explain import (
    Explanation,
    band_edges_hz,
    band_replace,
    explain_file,
    explain_waveform,
    resolve_key,
)
from stetho.reporting.figures import plot_explanation
from stetho.reporting.report import ReportResult, build_report
from stetho.reporting.robustness import (
    NoiseError,
    RobustnessCurve,
    evaluate_under_noise,
    list_noise_files,
    mix_at_snr,
    noise_segment,
)
from stetho.reporting.sources import ReportInputs, ReportSourceError, locate

__all__ = [
    "Explanation",
    "NoiseError",
    "ReportInputs",
    "ReportResult",
    "ReportSourceError",
    "RobustnessCurve",
    "band_edges_hz",
    "band_replace",
    "build_report",
    "evaluate_under_noise",
    "explain_file",
    "explain_waveform",
    "list_noise_files",
    "locate",
    "mix_at_snr",
    "noise_segment",
    "plot_explanation",
    "resolve_key",
]
