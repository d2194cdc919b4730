"""Lost messages (maskq.service.lost): the decision alone, then the sweep on a real redis-server with
Celery's own message format in kombu's own keys."""

from __future__ import annotations

import json
import time

import pytest

from maskq.service.backlog import UNACKED_KEY, task_ids_in_broker
from maskq.service.lost import Heartbeat, LostMessageSweep, confirmed_lost, orphaned
from maskq.service.queue import Publisher, create_celery
from maskq.service.records import JobState, JobStore
from maskq.settings import Settings

# ---- the decision ----------------------------------------------------------------------------------


def test_a_job_is_lost_only_when_two_sweeps_miss_it_at_the_same_version():
    quiet = {"here": 1, "new": 5, "again": 7, "moved": 9}
    lost, suspects = confirmed_lost(quiet, present={"here"}, suspects={"again": 7, "moved": 8, "here": 1})
    assert lost == {"again": 7}
    assert suspects == {"new": 5, "moved": 9}  # first miss, and a job that changed since the last miss
    assert confirmed_lost({}, set(), {"x": 1}) == ({}, {})


def test_an_orphan_is_a_running_job_whose_worker_is_not_alive():
    owners = {"a": ("w1", 3), "b": ("w2", 4), "c": ("w1", 5)}
    assert orphaned(owners, alive={"w1"}) == {"b": 4}
    assert orphaned(owners, alive={"w1", "w2"}) == {}
    assert orphaned(owners, alive=set()) == {"a": 3, "b": 4, "c": 5}


# ---- on Redis --------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def world(settings: Settings, job_store: JobStore):
    clock = Clock()
    store = JobStore(job_store.r, ttl_seconds=3600, clock=clock)
    app = create_celery(settings)
    publisher = Publisher(app, "cpu")
    sweep = LostMessageSweep(store, publisher.job_message, grace_seconds=60, interval_seconds=0.05)
    yield store, publisher, sweep, clock
    app.close()


def _sweep(sweep: LostMessageSweep) -> list[str]:
    time.sleep(0.12)  # the previous sweep's turn has lapsed
    return sweep.sweep()


def test_the_broker_scan_finds_waiting_and_unacked_messages(world):
    store, publisher, _, _ = world
    waiting = publisher.job_message("waiting")
    taken = publisher.job_message("taken")
    store.r.lpush(waiting.queue, waiting.payload)
    store.r.hset(UNACKED_KEY, "tag-1", json.dumps([json.loads(taken.payload), "", "cpu"]))
    store.r.lpush("cpu", "not json")  # a stranger's garbage is skipped, not fatal
    assert task_ids_in_broker(store.r) == {"waiting", "taken"}


def _take(store: JobStore, job_id: str) -> str:
    """Take a job's message off the queue's list (what BRPOP does)."""
    raw = next(m for m in store.r.lrange("cpu", 0, -1) if json.loads(m)["headers"]["id"] == job_id)
    store.r.lrem("cpu", 0, raw)
    return raw


def test_a_lost_message_is_sent_again_once_and_nothing_else_is(world):
    store, publisher, sweep, clock = world
    for name in ("kept", "lost", "taken", "moves", "done", "expired"):
        store.create("acme", "mask", {}, f"acme/{name}/input.png", job_id=name, message=publisher.job_message)
    _take(store, "lost")  # the worker that took it died before writing it to unacked
    taken = _take(store, "taken")  # a worker took it and holds it: in unacked, as kombu writes it
    store.r.hset(UNACKED_KEY, "tag-2", json.dumps([json.loads(taken), "", "cpu"]))
    for name in ("moves", "done", "expired"):
        _take(store, name)
    store.mark_running("done")
    store.mark_succeeded("done", "acme/done/result.png")
    assert set(store.quiet_live_jobs(0)) == {"kept", "lost", "taken", "moves", "expired"}

    assert _sweep(sweep) == []  # nothing is quiet for 60 s yet
    clock.now += 61
    assert _sweep(sweep) == []  # first miss: suspects only
    store.r.delete(store.job_key("expired"))  # the record expired meanwhile
    store.mark_running("moves")  # a worker took it (its message in flight, kombu's window)
    clock.now += 30
    assert _sweep(sweep) == ["lost"]
    assert "lost" in task_ids_in_broker(store.r)
    assert "expired" not in store.quiet_live_jobs(0)  # dropped from the index, nothing sent
    assert store.get("lost").state is JobState.QUEUED
    clock.now += 61
    assert _sweep(sweep) == []  # "moves" is suspect again (new version); "lost" is back on the list
    clock.now += 30
    assert _sweep(sweep) == ["moves"]  # its worker never recorded it: lost while running
    assert sum(1 for m in store.r.lrange("cpu", 0, -1) if json.loads(m)["headers"]["id"] == "lost") == 1


def test_one_sweeper_at_a_time(world):
    store, publisher, sweep, clock = world
    other = LostMessageSweep(store, publisher.job_message, grace_seconds=60, interval_seconds=0.05)
    time.sleep(0.12)
    sweep.sweep()
    assert other._take_turn() is False
    time.sleep(0.12)
    assert other._take_turn() is True


def test_a_finished_job_leaves_the_live_index_in_the_same_call(world):
    store, publisher, _, _ = world
    job, _ = store.create("acme", "mask", {}, "acme/x/input.png", message=publisher.job_message)
    assert store.r.zscore(store.live_key, job.id) is not None
    store.mark_running(job.id)
    store.mark_failed(job.id, "invalid_image", "bad")
    assert store.r.zscore(store.live_key, job.id) is None
    canceled, _ = store.create("acme", "mask", {}, "acme/y/input.png", message=publisher.job_message)
    store.cancel_queued(canceled.id)
    assert store.r.zcard(store.live_key) == 0


def test_jobs_held_by_a_dead_worker_are_sent_again_once(world):
    store, publisher, sweep, clock = world
    live = Heartbeat(store.r, store.prefix, "live-worker", ttl_seconds=20)
    dead = Heartbeat(store.r, store.prefix, "dead-worker", ttl_seconds=20)
    names = ("on-live", "on-dead", "old-record", "young", "waiting", "prefetched", "retrying", "retried-by-dead")
    for name in names:
        store.create("acme", "mask", {}, f"acme/{name}/input.png", job_id=name, message=publisher.job_message)
    for name in names:
        if name == "waiting":
            continue
        _take(store, name)  # delivered: in the worker's hands
    live.beat()
    dead.beat()
    store.mark_running("on-live", worker="live-worker")
    store.mark_running("on-dead", worker="dead-worker")
    store.mark_running("old-record")  # started by a worker without an instance id: never judged
    assert store.mark_held("prefetched", "dead-worker")  # received, not started yet
    store.mark_running("retrying", worker="live-worker")
    store.mark_retrying("retrying", "storage_unavailable", "S3 down")  # its retry message: holder unknown
    assert store.mark_held("retrying", "dead-worker")  # ... until a worker receives it
    # the dead worker sent a retry and took its message at once, while the job still ran (mark_held
    # then writes nothing): the sender stays the presumed holder (seen in a chaos run: 5 min lost)
    store.mark_running("retried-by-dead", worker="dead-worker")
    assert not store.mark_held("retried-by-dead", "dead-worker")
    store.mark_retrying("retried-by-dead", "storage_unavailable", "S3 down", worker="dead-worker")
    assert not store.mark_held("on-live", "dead-worker")  # running: the runner is the holder
    dead.stop()  # its key is gone, as after the TTL
    time.sleep(0.12)
    assert sweep.sweep_orphans(live, interval=0.05) == []  # touched < 20 s ago: too young to judge
    clock.now += 21
    store.mark_running("young", worker="dead-worker")
    time.sleep(0.12)
    assert sorted(sweep.sweep_orphans(live, interval=0.05)) == ["on-dead", "prefetched", "retried-by-dead", "retrying"]
    assert "on-dead" in task_ids_in_broker(store.r) and "young" not in task_ids_in_broker(store.r)
    # the new delivery is a new attempt of the same record, counted as a lost one
    t = store.mark_running("on-dead", worker="live-worker")
    assert t.applied and t.job.attempts == 2 and t.job.lost_attempts == 1
    assert store.r.hget(store.job_key("on-dead"), "worker") == "live-worker"
    clock.now += 21
    time.sleep(0.12)
    assert sweep.sweep_orphans(live, interval=0.05) == ["young"]  # now old enough; on-dead's worker lives
    assert sum(1 for m in store.r.lrange("cpu", 0, -1) if json.loads(m)["headers"]["id"] == "on-dead") == 1


def test_a_heartbeat_lapses_by_itself(world):
    store, _, _, _ = world
    hb = Heartbeat(store.r, store.prefix, "w", ttl_seconds=1)
    hb.beat()
    assert hb.alive({"w", "other"}) == {"w"}
    time.sleep(1.1)
    assert hb.alive({"w"}) == set()
    assert hb.alive(set()) == set()
