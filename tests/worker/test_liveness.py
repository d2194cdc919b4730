"""worker.liveness on a real Redis: jobs a worker dropped on a broker reconnect are marked as held by
an instance that never beats, so the orphan sweep sends them again; running jobs are left alone."""

from __future__ import annotations

import time

from maskq.service.lost import Heartbeat, LostMessageSweep
from maskq.service.queue import Publisher, create_celery
from maskq.service.records import JobStore
from worker import liveness


def test_dropped_jobs_are_handed_to_the_orphan_sweep(settings, job_store: JobStore, monkeypatch):
    monkeypatch.setenv(liveness.INSTANCE_ENV, "w-live")
    app = create_celery(settings)
    publisher = Publisher(app, "cpu")
    for name in ("prefetched", "running"):
        job_store.create("acme", "mask", {}, f"acme/{name}/input.png", job_id=name, message=publisher.job_message)
        job_store.r.delete("cpu")  # delivered: the reconnect dropped the worker's copy
    job_store.mark_running("running", worker="w-live")
    liveness.abandon({"prefetched", "running"})
    liveness._mark_abandoned(job_store)
    assert liveness._abandoned == set()
    assert job_store.r.hget(job_store.job_key("prefetched"), "worker") == "w-live.dropped"
    assert job_store.r.hget(job_store.job_key("running"), "worker") == "w-live"  # its runner still holds it

    heartbeat = Heartbeat(job_store.r, job_store.prefix, "w-live", ttl_seconds=1)
    heartbeat.beat()
    sweep = LostMessageSweep(job_store, publisher.job_message, interval_seconds=0.05)
    time.sleep(1.1)  # untouched for longer than the TTL; heartbeat.beat() again: the live worker is alive
    heartbeat.beat()
    assert sweep.sweep_orphans(heartbeat, interval=0.05) == ["prefetched"]
    app.close()
