"""The window scheduler: one thread that runs the ready windows of all sessions as batches.

A session submits itself when its next window is ready (at most one window in flight per
session, so the queue is bounded by the number of sessions). The thread takes everything queued,
up to ``max_batch``, groups it by sampler settings, and runs each group as ONE batched forward
(different listeners mix in a batch through their shifts). While a batch runs, newly ready
sessions queue up and form the next batch: the batch size follows the load. A window that waited
longer than ``deadline_s`` is delivered and reported late.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable
from typing import Protocol

import numpy as np

log = logging.getLogger(__name__)


class Job(Protocol):
    """What the scheduler needs of a session."""

    online: object
    closed: bool
    submitted_at: float

    @property
    def runner_key(self) -> Hashable: ...

    def window_done(self, frames: np.ndarray, *, late: bool = False) -> None: ...

    def window_failed(self, exc: BaseException) -> None: ...


Step = Callable[[Hashable, list], list[np.ndarray]]
"""``step(runner_key, online_sessions) -> one (W, 58) window per session``."""
Observer = Callable[[int, float, list[float]], None]
"""``observe(batch_size, seconds, waits)``: for metrics."""


class Scheduler:
    """Batches windows of many sessions; ``start`` / ``stop`` the worker thread."""

    def __init__(self, step: Step, *, max_batch: int = 64, deadline_s: float = 0.32,
                 observe: Observer | None = None) -> None:  # fmt: skip
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._step, self.max_batch, self.deadline_s = step, max_batch, deadline_s
        self._observe = observe
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.batches = 0
        self.windows = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="rapport-scheduler",
                                            daemon=True)  # fmt: skip
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    def submit(self, job: Job) -> None:
        self._queue.put(job)

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def _take(self) -> list[Job] | None:
        first = self._queue.get()
        if first is None:
            return None
        jobs = [first]
        while len(jobs) < self.max_batch:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                self._queue.put(None)  # stop after this batch
                break
            jobs.append(nxt)
        return jobs

    def _run(self) -> None:
        while (jobs := self._take()) is not None:
            groups: dict[Hashable, list[Job]] = {}
            for job in jobs:
                if not job.closed:
                    groups.setdefault(job.runner_key, []).append(job)
            for key, group in groups.items():
                self._run_group(key, group)

    def _run_group(self, key: Hashable, group: list[Job]) -> None:
        start = time.monotonic()
        try:
            windows = self._step(key, [job.online for job in group])
        except Exception as exc:  # a failed batch fails its sessions, never the thread
            log.exception("batch of %d windows failed", len(group))
            for job in group:
                job.window_failed(exc)
            return
        end = time.monotonic()
        waits = [end - job.submitted_at for job in group]
        self.batches += 1
        self.windows += len(group)
        if self._observe is not None:
            self._observe(len(group), end - start, waits)
        for job, frames, wait in zip(group, windows, waits, strict=True):
            try:
                job.window_done(frames, late=wait > self.deadline_s)
            except Exception:
                log.exception("delivering a window failed")
