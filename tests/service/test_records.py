"""Job records: the pure logic alone, then the store against a real redis-server."""

from __future__ import annotations

import threading
import time

import pytest

from maskq.errors import InvalidParameterError, NotFoundError, StorageUnavailableError
from maskq.service.records import (
    TERMINAL_STATES,
    TRANSITIONS,
    Job,
    JobState,
    JobStore,
    after_cursor,
    can_transition,
    decode_cursor,
    encode_cursor,
    sources_of,
)

# ---- pure logic ------------------------------------------------------------------------------------


def test_terminal_states_never_move():
    for state in JobState:
        assert state.is_terminal == (state in TERMINAL_STATES)
        if state.is_terminal:
            assert not any(can_transition(state, dst) for dst in JobState)
    assert {s.value for s in TERMINAL_STATES} == {"succeeded", "failed", "canceled"}


def test_live_states_reach_every_end():
    assert can_transition(JobState.QUEUED, JobState.RUNNING)
    assert can_transition(JobState.RUNNING, JobState.SUCCEEDED)
    assert can_transition(JobState.RUNNING, JobState.RUNNING)  # redelivery after a lost worker
    assert not can_transition(JobState.QUEUED, JobState.SUCCEEDED)  # nothing succeeds unrun
    assert sources_of(JobState.CANCELED) == {JobState.QUEUED, JobState.RUNNING}
    assert set(TRANSITIONS) == set(JobState)


def test_hash_round_trip_keeps_every_field():
    job = Job(id="a1", tenant="acme", operation="swap", params={"background_color": "#fff", "n": [1, 2]},
              state=JobState.SUCCEEDED, created_at=1700000000.25,
              input_key="acme/a1/input.png",
              started_at=1700000001.5, finished_at=1700000002.75, attempts=2, lost_attempts=1,
              result_key="acme/a1/result.png",
              timings={"infer": 0.1}, webhook_url="http://127.0.0.1:1/h", idempotency_key="k1",
              confidence=0.42, review=True)
    h = job.to_hash()
    assert all(isinstance(v, str) for v in h.values())
    assert h["input_key"] == "acme/a1/input.png" and h["result_key"] == "acme/a1/result.png"
    assert Job.from_hash(h) == job


def test_public_document_hides_storage_keys_and_uses_iso_times():
    job = Job(id="a1", tenant="acme", operation="mask", params={}, state=JobState.FAILED, created_at=0.0,
              input_key="acme/a1/input", error_code="invalid_image", error_message="bad")
    doc = job.document(lambda key: f"https://s3/{key}?signed")
    assert doc["created_at"] == "1970-01-01T00:00:00Z"
    assert doc["error"] == {"code": "invalid_image", "message": "bad"}
    assert "input_key" not in str(doc) and "acme/a1" not in str(doc) and "result_url" not in doc
    done = Job(id="a2", tenant="acme", operation="mask", params={}, state=JobState.SUCCEEDED, created_at=0.0,
               input_key="acme/a2/input", result_key="acme/a2/result.png")
    assert done.document(lambda key: f"https://s3/{key}?signed")["result_url"] == "https://s3/acme/a2/result.png?signed"


def test_one_predicate_says_which_ends_are_notified():
    job = Job(id="a1", tenant="acme", operation="mask", params={}, state=JobState.FAILED, created_at=0.0,
              input_key="k", webhook_url="https://h/x")
    assert job.wants_webhook()  # no events named: every end
    job.webhook_events = ["job.succeeded", "job.canceled"]
    assert not job.wants_webhook()
    job.state = JobState.CANCELED
    assert job.wants_webhook()
    job.webhook_url = None
    assert not job.wants_webhook()


def test_cursor_round_trip_and_garbage():
    assert decode_cursor(encode_cursor(1234, "abc")) == (1234, "abc")
    for bad in ("", "!!!", encode_cursor(1, "x")[:-3] + "@@"):
        with pytest.raises(InvalidParameterError):
            decode_cursor(bad)


def test_after_cursor_breaks_ties_by_id():
    entries = [("c", 5), ("b", 5), ("a", 5), ("z", 4)]
    assert after_cursor(entries, (5, "b")) == [("a", 5), ("z", 4)]
    assert after_cursor(entries, None) == entries


# ---- against redis-server --------------------------------------------------------------------------


def test_create_and_get(job_store: JobStore):
    job, created = job_store.create("acme", "mask", {"threshold": 0.5}, "acme/x/input/0.png")
    assert created and job.state is JobState.QUEUED and job.attempts == 0
    got = job_store.get(job.id)
    assert got is not None and got.params == {"threshold": 0.5} and got.input_key == "acme/x/input/0.png"
    assert 0 < job_store.r.ttl(job_store.job_key(job.id)) <= job_store.ttl
    assert job_store.get("nope") is None
    with pytest.raises(NotFoundError):
        job_store.require(job.id, tenant="someone-else")


def test_idempotency_key_returns_the_same_job(job_store: JobStore):
    first, c1 = job_store.create("acme", "mask", {}, "k0", idempotency_key="order-17")
    again, c2 = job_store.create("acme", "blur", {}, "k1", idempotency_key="order-17")
    other, c3 = job_store.create("globex", "mask", {}, "k2", idempotency_key="order-17")
    assert c1 and not c2 and c3
    assert again.id == first.id and again.operation == "mask"
    assert other.id != first.id
    assert job_store.find_by_idempotency_key("acme", "order-17").id == first.id
    assert job_store.find_by_idempotency_key("acme", "unknown") is None


def test_life_of_a_job(job_store: JobStore):
    job, _ = job_store.create("acme", "mask", {}, "in")
    t = job_store.mark_running(job.id)
    assert t.applied and t.previous is JobState.QUEUED and t.job.attempts == 1 and t.job.started_at
    t = job_store.mark_retrying(job.id, "storage_unavailable", "S3 down")
    assert t.applied and t.job.state is JobState.QUEUED and t.job.error_code == "storage_unavailable"
    t = job_store.mark_running(job.id)
    assert t.job.attempts == 2 and t.job.lost_attempts == 0 and t.job.error_code is None
    t = job_store.mark_succeeded(job.id, "acme/r/result.png", timings={"infer": 0.04})
    assert t.applied and t.job.state is JobState.SUCCEEDED and t.job.result_key == "acme/r/result.png"
    assert t.job.finished_at >= t.job.started_at and t.job.timings == {"infer": 0.04}
    # a finished job never goes back, whatever is asked
    for move in (lambda: job_store.mark_running(job.id), lambda: job_store.mark_failed(job.id, "internal", "x"),
                 lambda: job_store.cancel_queued(job.id), lambda: job_store.mark_retrying(job.id, "x", "y")):
        t2 = move()
        assert not t2.applied and t2.job.state is JobState.SUCCEEDED
    assert job_store.get(job.id).attempts == 2


def test_redelivery_counts_a_lost_attempt(job_store: JobStore):
    job, _ = job_store.create("acme", "mask", {}, "in")
    job_store.mark_running(job.id)
    t = job_store.mark_running(job.id)  # the first worker died without finishing
    assert t.applied and t.previous is JobState.RUNNING and t.job.lost_attempts == 1 and t.job.attempts == 2


def test_one_attempt_holds_the_lease_until_it_lets_go_or_it_lapses(job_store: JobStore):
    job, _ = job_store.create("acme", "mask", {}, "in")
    assert job_store.hold_attempt(job.id, "first", 5.0) == 0.0
    left = job_store.hold_attempt(job.id, "second", 5.0)  # a second message while the first runs
    assert 4.0 < left <= 5.0
    assert job_store.hold_attempt(job.id, "first", 5.0) == 0.0  # the holder renews
    job_store.release_attempt(job.id, "second")  # not its lease: nothing happens
    assert job_store.hold_attempt(job.id, "second", 5.0) > 0.0
    job_store.release_attempt(job.id, "first")
    assert job_store.hold_attempt(job.id, "second", 0.3) == 0.0  # free once the holder let go
    time.sleep(0.45)  # a holder that died renews nothing: its lease lapses
    assert job_store.hold_attempt(job.id, "third", 5.0) == 0.0


def test_cancel_while_queued_wins_over_the_worker(job_store: JobStore):
    job, _ = job_store.create("acme", "mask", {}, "in")
    assert job_store.cancel_queued(job.id).applied
    t = job_store.mark_running(job.id)
    assert not t.applied and t.job.state is JobState.CANCELED
    with pytest.raises(NotFoundError):
        job_store.mark_running("missing")


def test_racing_transitions_have_exactly_one_winner(job_store: JobStore):
    """40 threads race to finish the same running job in different ways: one wins, the rest see it."""
    for _ in range(5):
        job, _ = job_store.create("acme", "mask", {}, "in")
        job_store.mark_running(job.id)
        wins: list[str] = []
        barrier = threading.Barrier(40)

        def racer(i: int, job_id: str = job.id, barrier: threading.Barrier = barrier, wins: list[str] = wins) -> None:
            barrier.wait()
            if i % 3 == 0:
                t = job_store.cancel_queued(job_id)  # refused: the job runs
            elif i % 3 == 1:
                t = job_store.mark_failed(job_id, "internal", str(i))
            else:
                t = job_store.mark_succeeded(job_id, f"r{i}")
            if t.applied:
                wins.append(t.job.state.value)

        threads = [threading.Thread(target=racer, args=(i,)) for i in range(40)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert len(wins) == 1
        assert job_store.get(job.id).state.value == wins[0]


def test_a_batch_and_its_jobs_are_written_at_once(job_store: JobStore):
    class Msg:
        def __init__(self, job_id: str) -> None:
            self.queue, self.payload = "test-queue", f"message for {job_id}"

    batch = job_store.create_batch("acme", "mask", {"format": "png"}, [("j1", "acme/j1/input.png"),
                                                                      ("j2", "acme/j2/input.png")],
                                   batch_id="b1", message=Msg)
    assert batch.job_ids == ["j1", "j2"]
    assert job_store.r.lrange("test-queue", 0, -1) == ["message for j2", "message for j1"]
    job_store.mark_running("j1")
    job_store.mark_failed("j1", "invalid_image", "truncated")
    got, states = job_store.batch_states("b1", "acme")
    assert got == batch and states == [("j1", "failed"), ("j2", "queued")]
    doc = got.document(states)
    assert doc["counts"]["failed"] == 1 and doc["counts"]["queued"] == 1 and not doc["done"]
    with pytest.raises(NotFoundError):  # another tenant's batch does not exist for it
        job_store.batch_states("b1", "other")
    # an id that exists already fails the whole batch: nothing of it is written
    with pytest.raises(InvalidParameterError):
        job_store.create_batch("acme", "mask", {}, [("j3", "k3"), ("j1", "k1")], batch_id="b2")


def test_list_for_tenant_newest_first_with_cursor(job_store: JobStore):
    clock = iter([1000.0] * 5 + [1001.0 + i for i in range(21)])  # 5 jobs share one millisecond
    store = JobStore(job_store.r, ttl_seconds=3600, clock=lambda: next(clock))
    made = [store.create("acme", "mask", {}, f"in{i}")[0] for i in range(25)]
    store.create("globex", "mask", {}, "other")
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page, cursor = store.list_for_tenant("acme", limit=4, cursor=cursor)
        seen += [j.id for j in page]
        pages += 1
        if cursor is None:
            break
    assert pages == 7 and len(seen) == 25 and len(set(seen)) == 25
    created = sorted(made, key=lambda j: (j.created_at, j.id), reverse=True)
    assert seen == [j.id for j in created]


def test_expired_records_leave_the_listing(job_store: JobStore):
    a, _ = job_store.create("acme", "mask", {}, "a")
    b, _ = job_store.create("acme", "mask", {}, "b")
    job_store.r.delete(job_store.job_key(a.id))  # what the TTL does
    page, cursor = job_store.list_for_tenant("acme")
    assert [j.id for j in page] == [b.id] and cursor is None
    assert job_store.r.zcard(job_store.tenant_key("acme")) == 1


def test_redis_down_is_transient():
    from maskq.local.embedded import free_port

    store = JobStore.from_url(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(StorageUnavailableError) as err:
        store.get("x")
    assert isinstance(err.value, StorageUnavailableError) and err.value.code == "storage_unavailable"


class _Message:
    """What ``worker.publish.TaskMessage`` carries (the core only needs its two fields)."""

    def __init__(self, job_id: str) -> None:
        self.queue = "test-queue"
        self.payload = f"message for {job_id}"


def test_a_new_record_and_its_message_are_written_together(job_store: JobStore):
    job, created = job_store.create("acme", "mask", {}, "k0", message=_Message, idempotency_key="order-9")
    assert created
    assert job_store.r.lrange("test-queue", 0, -1) == [f"message for {job.id}"]
    assert job_store.get(job.id).state is JobState.QUEUED


def test_no_second_message_for_a_replayed_or_clashing_create(job_store: JobStore):
    first, _ = job_store.create("acme", "mask", {}, "k0", message=_Message, idempotency_key="order-9")
    again, created = job_store.create("acme", "mask", {}, "k0", message=_Message, idempotency_key="order-9")
    assert (again.id, created) == (first.id, False)
    with pytest.raises(InvalidParameterError):
        job_store.create("acme", "mask", {}, "k0", job_id=first.id, message=_Message)
    assert job_store.r.llen("test-queue") == 1


def test_review_index_is_written_by_the_transition_that_marks_success(job_store: JobStore):
    clock = iter([1000.0 + i for i in range(50)])
    store = JobStore(job_store.r, ttl_seconds=3600, clock=lambda: next(clock))
    made = [store.create("acme", "mask", {}, f"in{i}")[0] for i in range(7)]
    other, _ = store.create("globex", "mask", {}, "x")
    for i, job in enumerate(made):
        store.mark_running(job.id)
        t = store.mark_succeeded(job.id, f"r{i}", confidence=0.1 * i, review=i % 2 == 0, tenant="acme")
        assert t.applied and t.job.review is (i % 2 == 0) and t.job.confidence == pytest.approx(0.1 * i)
    store.mark_running(other.id)
    store.mark_succeeded(other.id, "r", confidence=0.01, review=True, tenant="globex")
    flagged = [j.id for j in made[::2]][::-1]  # newest first
    seen, cursor = [], None
    while True:
        page, cursor = store.list_for_tenant("acme", limit=3, cursor=cursor, review=True)
        seen += [j.id for j in page]
        if cursor is None:
            break
    assert seen == flagged
    assert all(j.review for j in store.list_for_tenant("acme", review=True)[0])
    assert [j.id for j in store.list_for_tenant("globex", review=True)[0]] == [other.id]
    # a refused transition (the job is finished already) adds nothing
    assert not store.mark_succeeded(made[1].id, "again", review=True, tenant="acme").applied
    assert made[1].id not in {j.id for j in store.list_for_tenant("acme", review=True)[0]}
    # an expired record leaves the review listing too
    store.r.delete(store.job_key(made[0].id))
    assert made[0].id not in {j.id for j in store.list_for_tenant("acme", review=True)[0]}
    assert store.r.ttl(store.review_key("acme")) > 0
