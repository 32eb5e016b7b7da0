"""ModelWorker: one job at a time (by default), bounded waiting queue, cancelled jobs skipped, the
thread survives all."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from service.workers import JobCancelled, ModelWorker, QueueFullError


@pytest.fixture()
def worker():
    depths = []
    w = ModelWorker("test", max_queue=3, on_depth=depths.append)
    w.depths = depths
    yield w
    w.close()


def test_jobs_run_one_at_a_time_in_order(worker):
    running, overlaps, order = [0], [], []
    lock = threading.Lock()

    def job(i):
        def run():
            with lock:
                running[0] += 1
                overlaps.append(running[0])
            time.sleep(0.01)
            order.append(i)
            with lock:
                running[0] -= 1
            return i

        return run

    futures = [worker.submit(job(i)) for i in range(3)]
    assert [f.result(5) for f in futures] == [0, 1, 2]
    assert order == [0, 1, 2] and max(overlaps) == 1
    assert worker.depth == 0 and max(worker.depths) == 3


def test_queue_bound_and_errors_reach_the_caller(worker):
    """max_queue bounds the jobs waiting beyond the running one: 1 running + 3 waiting, then 429."""
    release = threading.Event()
    futures = [worker.submit(lambda: release.wait(5)) for _ in range(4)]
    with pytest.raises(QueueFullError, match="3 requests waiting and 1 running .waiting limit 3"):
        worker.submit(lambda: None)
    release.set()
    [f.result(5) for f in futures]

    def fail():
        raise ValueError("bad job")

    with pytest.raises(ValueError, match="bad job"):
        worker.submit(fail).result(5)
    assert worker.submit(lambda: "still alive").result(5) == "still alive"


def test_cancelled_jobs_never_start_and_the_thread_survives(worker):
    release, started = threading.Event(), []
    blocker = worker.submit(lambda: release.wait(5))
    flagged = threading.Event()
    flagged.set()
    by_event = worker.submit(lambda: started.append("event"), flagged)
    by_future = worker.submit(lambda: started.append("future"))
    assert by_future.cancel()  # what asyncio does when the awaiting request is cancelled
    release.set()
    blocker.result(5)
    with pytest.raises(JobCancelled):
        by_event.result(5)
    assert worker.submit(lambda: "alive").result(5) == "alive"
    assert started == [] and worker.depth == 0


def test_an_awaiting_task_cancelled_while_queued_cancels_its_job(worker):
    release, started = threading.Event(), []

    async def scenario():
        blocker = asyncio.ensure_future(worker.run(lambda: release.wait(5)))
        waiting = asyncio.ensure_future(worker.run(lambda: started.append(1)))
        await asyncio.sleep(0.05)
        waiting.cancel()
        await asyncio.sleep(0.05)  # cancellation is delivered by the event loop
        release.set()
        await blocker
        with pytest.raises(asyncio.CancelledError):
            await waiting
        return await worker.run(lambda: "alive")

    assert asyncio.run(scenario()) == "alive"
    assert started == []


@pytest.mark.parametrize("threads", [1, 2])
def test_model_workers_run_torch_with_the_configured_threads(make_client, settings, threads):
    """RETRO_TORCH_THREADS reaches the threads that run the models (a thread keeps the count it was
    born with, so the service must set it before starting them)."""
    import torch

    test_client = make_client(settings.model_copy(update={"torch_threads": threads}))
    service = test_client.app.state.service
    seen = [worker.submit(torch.get_num_threads).result(timeout=10) for worker in service.workers.values()]
    assert seen == [threads] * len(service.workers) and seen
