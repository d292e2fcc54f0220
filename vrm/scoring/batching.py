"""Dynamic batching for ``vrm-serve``: the texts of concurrent requests scored in shared forward passes.

A request is checked and tokenised on its own first (a bad one is answered 4xx and never enqueued), then waits in a
queue. One worker thread takes the oldest request and gathers every request that arrives within
:attr:`BatchSettings.window_ms` of it (or is already waiting), up to a row and a token budget, as Ray Serve's
``@serve.batch`` (``max_batch_size``, ``batch_wait_timeout_s``), Triton's dynamic batcher (``max_queue_delay``) and
text-embeddings-inference (``max_batch_tokens``) do. The gathered texts go to the scorer's ``score_encoded`` in one
call, which sorts them by length and runs them in forward passes of ``batch_size`` rows; each request gets back
exactly its own slice of every output. Requests are only gathered with others that ask for the same thing (the same
``num_samples``); if a shared call fails, each of its requests is scored alone, so only the one that cannot be
scored gets the error.

A request's body is read in full before it is enqueued, and its answer is written by its own connection after it
leaves the queue, so a slow client holds up nobody else. :class:`SerialScorer` is the path without batching: one
request's forward passes at a time, under a lock.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.concurrency import run_in_threadpool


@dataclass(frozen=True)
class BatchSettings:
    """How ``vrm-serve`` gathers concurrent requests into shared forward passes."""

    #: Gather concurrent requests (False: each request is scored alone, one at a time, under a lock).
    enabled: bool = True
    #: Milliseconds the oldest waiting request waits for others to join its batch (0: only those already waiting).
    window_ms: float = 5.0
    #: Most texts (queries or pairs) in one gathered batch; a request with more is scored alone.
    max_rows: int = 256
    #: Most tokens (the texts' lengths summed) in one gathered batch; a request with more is scored alone.
    max_tokens: int = 65536

    def __post_init__(self):
        if not 0 <= self.window_ms <= 10_000:
            raise ValueError(f"window_ms={self.window_ms} must be in [0, 10000]")
        for key in ("max_rows", "max_tokens"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}={getattr(self, key)} must be >= 1")


@dataclass
class Job:
    """One request's encoded texts, what it asks for, and how its outcome reaches it."""

    encoded: Sequence[Any]
    num_samples: int
    question_types: Sequence[str | None] | None
    references: Sequence[str | None] | None
    deliver: Callable[[dict[str, list] | Exception], None]
    enqueued: float = field(default_factory=time.monotonic)

    @property
    def tokens(self) -> int:
        return sum(len(getattr(e, "input_ids", ())) for e in self.encoded)


def _score(scorer, jobs: list[Job]) -> dict[str, list]:
    """``scorer.score_encoded`` on the texts of ``jobs`` (all asking for the same ``num_samples``) in one call."""
    encoded = [e for job in jobs for e in job.encoded]
    per_text = {}
    for key in ("question_types", "references"):
        if any(getattr(job, key) is not None for job in jobs):
            per_text[key] = [v for job in jobs for v in (getattr(job, key) or [None] * len(job.encoded))]
    return scorer.score_encoded(encoded, num_samples=jobs[0].num_samples, **per_text)


def score_jobs(scorer, jobs: list[Job]) -> None:
    """Score ``jobs`` together and deliver each its own slice; if that fails, score each alone."""
    try:
        details = _score(scorer, jobs)
    except Exception as err:  # noqa: BLE001 - one bad request must not fail its batch-mates: retried alone
        if len(jobs) == 1:
            jobs[0].deliver(err)
            return
        for job in jobs:
            score_jobs(scorer, [job])
        return
    start = 0
    for job in jobs:
        end = start + len(job.encoded)
        job.deliver({key: values[start:end] for key, values in details.items()})
        start = end


class Batcher:
    """The queue and the worker thread that gathers requests into batches (see the module docstring).

    ``await batcher.score(encoded, ...)`` from any event loop gives ``score_encoded``'s dict for those texts alone.
    The worker starts with the first request and stops at :meth:`close`.
    """

    def __init__(self, scorer, settings: BatchSettings | None = None):
        self.scorer = scorer
        self.settings = settings or BatchSettings()
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._start = threading.Lock()
        #: Sizes (requests, texts) of the batches scored so far, oldest first (the last 1000): for tests and logs.
        self.batches: list[tuple[int, int]] = []
        #: Batches and texts scored since the start (``/health`` shows them: texts / batches is the mean batch).
        self.counts = {"batches": 0, "texts": 0}

    async def score(self, encoded: Sequence[Any], num_samples: int = 0, *,
                    question_types: Sequence[str | None] | None = None,
                    references: Sequence[str | None] | None = None) -> dict[str, list]:
        if not encoded:
            return {"reward": []}
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()

        def settle(outcome) -> None:
            if future.done():  # the request was cancelled (its client went away)
                return
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

        def deliver(outcome) -> None:
            try:
                loop.call_soon_threadsafe(settle, outcome)
            except RuntimeError:  # that event loop has closed: nobody is waiting for the answer
                pass

        self._ensure_worker()
        self._queue.put(Job(encoded, num_samples, question_types, references, deliver))
        return await future

    def _ensure_worker(self) -> None:
        with self._start:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._run, name="vrm-serve-batcher", daemon=True)
                self._worker.start()

    def close(self, timeout: float = 60.0) -> None:
        """Stop the worker after the batches already taken (requests still queued are scored first)."""
        with self._start:
            worker, self._worker = self._worker, None
        if worker is not None:
            self._queue.put(None)
            worker.join(timeout)

    def _gather(self, first: Job) -> tuple[list[Job], Job | None, bool]:
        """``first`` and the jobs that join it: (the batch, a job that did not fit, whether to stop after)."""
        s = self.settings
        batch, rows, tokens = [first], len(first.encoded), first.tokens
        deadline = first.enqueued + s.window_ms / 1000
        while rows < s.max_rows and tokens < s.max_tokens:
            remaining = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return batch, None, True
            if rows + len(job.encoded) > s.max_rows or tokens + job.tokens > s.max_tokens:
                return batch, job, False
            batch.append(job)
            rows, tokens = rows + len(job.encoded), tokens + job.tokens
        return batch, None, False

    def _run(self) -> None:
        carried: Job | None = None
        stop = False
        while not stop:
            first = carried if carried is not None else self._queue.get()
            if first is None:
                return
            batch, carried, stop = self._gather(first)
            groups: dict[int, list[Job]] = {}
            for job in batch:
                groups.setdefault(job.num_samples, []).append(job)
            for jobs in groups.values():
                score_jobs(self.scorer, jobs)
            texts = sum(len(job.encoded) for job in batch)
            self.batches = [*self.batches[-999:], (len(batch), texts)]
            self.counts = {"batches": self.counts["batches"] + 1, "texts": self.counts["texts"] + texts}


class SerialScorer:
    """Batching off: each request's texts are scored on their own, one request at a time (under a lock), in a
    worker thread of the server's pool."""

    def __init__(self, scorer):
        self.scorer = scorer
        self._lock = threading.Lock()

    def _locked(self, jobs: list[Job]) -> dict[str, list]:
        with self._lock:
            return _score(self.scorer, jobs)

    async def score(self, encoded: Sequence[Any], num_samples: int = 0, *,
                    question_types: Sequence[str | None] | None = None,
                    references: Sequence[str | None] | None = None) -> dict[str, list]:
        if not encoded:
            return {"reward": []}
        return await run_in_threadpool(self._locked, [Job(encoded, num_samples, question_types, references,
                                                          deliver=lambda outcome: None)])

    def close(self) -> None:
        """Nothing to stop."""
