"""Worker threads per model with a bounded waiting queue: model work runs off the event loop.

A worker runs up to `max_running` jobs at once, each on one of its runner threads, in the order
they were submitted; more wait in a queue of at most `max_queue` and get `QueueFullError` (429)
beyond it, so the limit bounds waiting requests, not running ones. With `max_running=1` (the
Hugging Face comparison model) a model is never entered by two requests at once; a RETRO model
served with continuous batching (`service.batching`) runs a batch's worth of generations at once,
their decode steps taken together by its batch engine. A job carries a `threading.Event`: set it
and a queued job never starts, a running generation stops at its next token. This module owns the
threads and the counting only; what a job does is the caller's business.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

log = logging.getLogger(__name__)


class QueueFullError(RuntimeError):
    pass


class JobCancelled(RuntimeError):
    """A job whose cancel event was set before it started."""


class ModelWorker:
    """`on_depth(queued + running)` on every change; `on_wait(seconds)` for each job that starts,
    the time it waited; `on_close()` when the worker closes (e.g. to stop a batch engine)."""

    def __init__(
        self,
        name: str,
        max_queue: int,
        on_depth: Callable[[int], None] | None = None,
        max_running: int = 1,
        on_wait: Callable[[float], None] | None = None,
        on_close: Callable[[], None] | None = None,
    ):
        if max_running < 1:
            raise ValueError(f"max_running must be >= 1; got {max_running}")
        self.name, self.max_queue, self.max_running = name, max_queue, max_running
        self._jobs: queue.Queue = queue.Queue()
        self._depth = 0  # queued + running
        self._running = 0
        self._depth_lock = threading.Lock()
        self._on_depth = on_depth or (lambda depth: None)
        self._on_wait = on_wait or (lambda seconds: None)
        self._on_close = on_close or (lambda: None)
        self._threads = [
            threading.Thread(target=self._run, name=f"model-worker-{name}-{i}", daemon=True)
            for i in range(max_running)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def depth(self) -> int:
        """Jobs queued or running."""
        return self._depth

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        """Jobs submitted and not started (a job takes a free runner at once, so this counts only
        those beyond `max_running`)."""
        return max(0, self._depth - self.max_running)

    def _change_depth(self, delta: int) -> None:
        with self._depth_lock:
            self._depth += delta
            depth = self._depth
        self._on_depth(depth)

    def submit(self, fn: Callable[[], object], cancel: threading.Event | None = None) -> Future:
        """Queues fn; raises QueueFullError when every runner is busy and max_queue jobs wait."""
        with self._depth_lock:
            waiting = self._depth - self.max_running
            if waiting >= self.max_queue:
                raise QueueFullError(
                    f"model {self.name!r} has {waiting} requests waiting and {self.max_running} running "
                    f"(waiting limit {self.max_queue}); retry later"
                )
            self._depth += 1
            depth = self._depth
        self._on_depth(depth)
        future: Future = Future()
        self._jobs.put((fn, cancel, future, time.perf_counter()))
        return future

    async def run(self, fn: Callable[[], object], cancel: threading.Event | None = None):
        """Runs fn on a runner thread and awaits its result; a cancelled await cancels the job."""
        cancel = cancel or threading.Event()
        future = self.submit(fn, cancel)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            cancel.set()
            raise

    def _run(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            fn, cancel, future, submitted = item
            outcome: tuple[str, object] | None = None
            try:
                # A future cancelled while queued (its awaiting request went away) is skipped.
                if not future.set_running_or_notify_cancel():
                    continue
                if cancel is not None and cancel.is_set():
                    outcome = ("error", JobCancelled("cancelled before it started"))
                    continue
                self._on_wait(time.perf_counter() - submitted)
                with self._depth_lock:
                    self._running += 1
                try:
                    outcome = ("result", fn())
                except BaseException as e:  # handed to the awaiting request
                    outcome = ("error", e)
                finally:
                    with self._depth_lock:
                        self._running -= 1
            except Exception:  # the runner must outlive any one job
                log.exception("model worker %s: job bookkeeping failed", self.name)
            finally:
                # The slot is free before the caller hears back: a client that sends its next
                # request the moment it has its answer never finds its own job still counted.
                self._change_depth(-1)
                if outcome is not None and not future.done():
                    if outcome[0] == "result":
                        future.set_result(outcome[1])
                    else:
                        future.set_exception(outcome[1])

    def close(self, timeout: float = 5.0) -> None:
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join(timeout)
        self._on_close()
