"""One worker thread per model with a bounded queue: model work runs off the event loop, in order.

A model is never entered by two requests at once (its KV caches and torch state are per call, but
two generations on 2 cores would only slow each other down); requests wait in a queue of at most
`max_queue` and get `QueueFullError` (429) beyond it. A job carries a `threading.Event`: set it and
a queued job never starts, a running generation stops at its next token. This module owns the
threads only; what a job does is the caller's business.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future

log = logging.getLogger(__name__)


class QueueFullError(RuntimeError):
    pass


class JobCancelled(RuntimeError):
    """A job whose cancel event was set before it started."""


class ModelWorker:
    def __init__(self, name: str, max_queue: int, on_depth: Callable[[int], None] | None = None):
        self.name, self.max_queue = name, max_queue
        self._jobs: queue.Queue = queue.Queue()
        self._depth = 0  # queued + running
        self._depth_lock = threading.Lock()
        self._on_depth = on_depth or (lambda depth: None)
        self._thread = threading.Thread(target=self._run, name=f"model-worker-{name}", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        return self._depth

    def _change_depth(self, delta: int) -> None:
        with self._depth_lock:
            self._depth += delta
            depth = self._depth
        self._on_depth(depth)

    def submit(self, fn: Callable[[], object], cancel: threading.Event | None = None) -> Future:
        """Queues fn; raises QueueFullError when max_queue jobs are already waiting or running."""
        with self._depth_lock:
            if self._depth >= self.max_queue:
                raise QueueFullError(
                    f"model {self.name!r} has {self._depth} requests queued or running "
                    f"(limit {self.max_queue}); retry later"
                )
            self._depth += 1
            depth = self._depth
        self._on_depth(depth)
        future: Future = Future()
        self._jobs.put((fn, cancel, future))
        return future

    async def run(self, fn: Callable[[], object], cancel: threading.Event | None = None):
        """Runs fn on the worker thread and awaits its result; a cancelled await cancels the job."""
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
            fn, cancel, future = item
            try:
                # A future cancelled while queued (its awaiting request went away) is skipped.
                if not future.set_running_or_notify_cancel():
                    continue
                if cancel is not None and cancel.is_set():
                    future.set_exception(JobCancelled("cancelled before it started"))
                    continue
                try:
                    result = fn()
                except BaseException as e:  # handed to the awaiting request
                    future.set_exception(e)
                else:
                    future.set_result(result)
            except Exception:  # the worker must outlive any one job
                log.exception("model worker %s: job bookkeeping failed", self.name)
            finally:
                self._change_depth(-1)

    def close(self, timeout: float = 5.0) -> None:
        self._jobs.put(None)
        self._thread.join(timeout)
