"""Prometheus metrics of one engine, in their own registry (several apps in one process — the
tests — never collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.sessions = Gauge("rapport_sessions", "Open streaming sessions (attached or not).",
                              registry=r)  # fmt: skip
        self.windows = Counter("rapport_windows", "Reaction windows generated.", registry=r)
        self.batch_size = Histogram("rapport_batch_size", "Windows per generator batch.",
                                    buckets=BATCH_BUCKETS, registry=r)  # fmt: skip
        self.stage = Histogram("rapport_stage_seconds", "Latency per stage: perception (one "
                               "frame), generate (one batch), window_wait (ready -> generated), "
                               "server_latency (input arrival -> reaction sent).", ["stage"],
                               buckets=LATENCY_BUCKETS, registry=r)  # fmt: skip
        self.dropped = Counter("rapport_dropped_frames", "Video frames dropped (backlog, "
                               "duplicates, late).", registry=r)  # fmt: skip
        self.errors = Counter("rapport_stream_errors", "Errors sent to stream clients.", ["code"],
                              registry=r)  # fmt: skip
        self.enrolments = Counter("rapport_enrolments", "Listener enrolments.", ["outcome"],
                                  registry=r)  # fmt: skip

    def observe_batch(self, size: int, seconds: float, waits: list[float]) -> None:
        self.windows.inc(size)
        self.batch_size.observe(size)
        self.stage.labels("generate").observe(seconds)
        for w in waits:
            self.stage.labels("window_wait").observe(w)

    def observe_stage(self, stage: str, seconds: float) -> None:
        self.stage.labels(stage).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
