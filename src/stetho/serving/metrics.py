"""Prometheus metrics of the service (``GET /metrics``).

* ``stetho_http_requests_total{method,route,status}`` and
  ``stetho_http_request_duration_seconds{route}`` (histogram) for every request;
* ``stetho_scores_total{machine,section,detector}``, ``stetho_rejected_total{reason}`` and
  ``stetho_scoring_in_progress``;
* per machine/section: ``stetho_last_score`` (raw), ``stetho_last_normalised_score`` (0 = median
  normal clip, 1 = threshold, one scale for every machine), ``stetho_threshold``,
  ``stetho_last_decision``, ``stetho_last_score_timestamp_seconds``, ``stetho_alarm_open`` (1
  while an alarm is open) and ``stetho_machine_state{state}`` (1 for the current state); every
  machine/section a served detector knows is listed, scored or not.
  With a store these come from the store at scrape time, so scores written by ``stetho monitor``
  into the same database show up too; without one, from the scores this process computed;
* ``stetho_build_info{version,python}`` (always 1) and prometheus_client's default collectors:
  ``process_*`` (CPU, memory, open files; Linux), ``python_info`` and ``python_gc_*``.
"""

from __future__ import annotations

import logging
import platform
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["MachineGauge", "ServiceMetrics"]

logger = logging.getLogger(__name__)

_STATES = ("alarm", "anomalous", "normal", "no threshold", "no scores yet")
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class MachineGauge:
    """The latest state of one (machine, section) as exported."""

    machine: str
    section: str
    score: float | None
    threshold: float | None
    decision: int | None
    time: datetime | None
    alarm_open: bool
    normalised: float | None = None
    detector_name: str = ""

    @property
    def state(self) -> str:
        """``"alarm"``, ``"anomalous"``, ``"normal"``, ``"no threshold"`` or ``"no scores yet"``."""
        if self.alarm_open:
            return "alarm"
        if self.score is None:
            return "no scores yet"
        if self.decision is None:
            return "no threshold"
        return "anomalous" if self.decision == 1 else "normal"


class _MachineCollector(Collector):
    def __init__(self, source: Callable[[], list[MachineGauge]]) -> None:
        self._source = source

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["machine", "section"]
        fams = {
            "score": GaugeMetricFamily(
                "stetho_last_score", "Latest anomaly score per machine/section", labels=labels
            ),
            "threshold": GaugeMetricFamily(
                "stetho_threshold", "Decision threshold of the latest score", labels=labels
            ),
            "decision": GaugeMetricFamily(
                "stetho_last_decision", "Latest decision (1 anomalous, 0 normal)", labels=labels
            ),
            "time": GaugeMetricFamily(
                "stetho_last_score_timestamp_seconds",
                "Unix time of the latest score",
                labels=labels,
            ),
            "alarm": GaugeMetricFamily(
                "stetho_alarm_open", "1 while an alarm is open for the machine", labels=labels
            ),
            "normalised": GaugeMetricFamily(
                "stetho_last_normalised_score",
                "Latest normalised score (0 = median normal clip, 1 = threshold)",
                labels=labels,
            ),
            "state": GaugeMetricFamily(
                "stetho_machine_state",
                "1 for the machine's current state (alarm, anomalous, normal, no threshold, "
                "no scores yet), 0 for the others",
                labels=[*labels, "state"],
            ),
        }
        try:
            states = self._source()
        except Exception as err:  # a scrape must not fail because the database hiccuped
            logger.warning("metrics: cannot read machine states: %s", err)
            states = []
        for s in states:
            lv = [s.machine, s.section]
            if s.score is not None:
                fams["score"].add_metric(lv, s.score)
            if s.threshold is not None:
                fams["threshold"].add_metric(lv, s.threshold)
            if s.decision is not None:
                fams["decision"].add_metric(lv, s.decision)
            if s.time is not None:
                fams["time"].add_metric(lv, s.time.timestamp())
            fams["alarm"].add_metric(lv, 1.0 if s.alarm_open else 0.0)
            if s.normalised is not None:
                fams["normalised"].add_metric(lv, s.normalised)
            current = s.state
            for state in _STATES:
                fams["state"].add_metric([*lv, state], 1.0 if state == current else 0.0)
        yield from fams.values()


class ServiceMetrics:
    """The service's metrics in their own registry (several apps can live in one process)."""

    def __init__(self, machine_states: Callable[[], list[MachineGauge]]) -> None:
        disable_created_metrics()  # no *_created series: they double every counter
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "stetho_http_requests",
            "HTTP requests by method, route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "stetho_http_request_duration_seconds",
            "Time to answer a request",
            ["route"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.scores = Counter(
            "stetho_scores",
            "Scores computed",
            ["machine", "section", "detector"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "stetho_rejected",
            "Requests refused by a limit (busy, body size, duration, timeout)",
            ["reason"],
            registry=self.registry,
        )
        self.in_progress = Gauge(
            "stetho_scoring_in_progress",
            "Requests decoding or scoring now",
            registry=self.registry,
        )
        self.registry.register(_MachineCollector(machine_states))
        # the process/platform/GC collectors are stateless readers: the default instances serve
        # any number of registries
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)
        import stetho

        Info("stetho_build", "stetho version", registry=self.registry).info(
            {"version": stetho.__version__, "python": platform.python_version()}
        )
        self._lock = threading.Lock()

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition format and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        with self._lock:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
