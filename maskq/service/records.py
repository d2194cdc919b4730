"""Job records: one Redis hash per job, with a TTL, changed only by atomic transitions.

The record is the single source of truth for a job's life (the API reads it, the worker writes it,
Celery's own result backend is not used). Two layers:

* pure logic, testable without Redis: :class:`JobState`, the transition table, :class:`Job` and its
  hash encoding, cursors for tenant listings;
* :class:`JobStore`, the Redis adapter: every state change is one Lua script, so a finished job can
  never go back whatever the interleaving of workers, retries and cancels; Redis faults become
  :class:`~maskq.errors.StorageUnavailableError` so that callers see one transient error type.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from functools import wraps
from typing import Any, ParamSpec, Protocol, TypeVar

from maskq import defaults
from maskq.errors import InvalidParameterError, NotFoundError, StorageUnavailableError

# --------------------------------------------------------------------------------------------------
# pure logic


class JobState(str, Enum):  # noqa: UP042 - str mixin: JSON and redis-py take it as a plain string
    """A job's life: queued -> running -> succeeded | failed, and canceled from either live state."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def is_terminal(self) -> bool:
        """A terminal state is final: no transition leaves it."""
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED})

# Allowed moves. running -> running is a redelivery after a lost worker (SIGKILL, OOM): the new
# attempt takes over once the dead one's lease has lapsed (JobStore.hold_attempt, worker.lease).
# running -> queued is a retry after a transient fault, waiting for its countdown.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELED, JobState.FAILED}),
    JobState.RUNNING: frozenset(
        {JobState.RUNNING, JobState.QUEUED, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED}
    ),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELED: frozenset(),
}


def can_transition(src: JobState, dst: JobState) -> bool:
    """True when ``src -> dst`` is a legal move; terminal states allow none."""
    return dst in TRANSITIONS[src]


def sources_of(dst: JobState) -> frozenset[JobState]:
    """Every state from which ``dst`` may be reached: what the Lua script checks atomically."""
    return frozenset(s for s, targets in TRANSITIONS.items() if dst in targets)


def new_job_id() -> str:
    """A random 128-bit id in hex: unguessable (ids appear in URLs) and safe in S3 keys."""
    return uuid.uuid4().hex


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


# KEYS[1] job. ARGV[1] the worker instance. See JobStore.mark_held.
_HOLD_LUA = """
if redis.call('HGET', KEYS[1], 'state') ~= 'queued' then return 0 end
redis.call('HSET', KEYS[1], 'worker', ARGV[1])
return 1
"""

# KEYS[1] a job's attempt lease. ARGV[1] the attempt's token, ARGV[2] the lease's ttl in ms. Takes or
# renews the lease when it is free or already this token's; returns 0 then, else the ms left on the
# lease of the attempt that holds it.
_LEASE_LUA = """
local holder = redis.call('GET', KEYS[1])
if (not holder) or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
  return 0
end
return math.max(redis.call('PTTL', KEYS[1]), 1)
"""

# KEYS[1] a job's attempt lease, ARGV[1] a token: only the holder lets go of it.
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass
class Job:
    """One job record: one input image, at most one result."""

    id: str
    tenant: str
    operation: str
    params: dict[str, Any]
    state: JobState
    created_at: float
    input_key: str
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0
    lost_attempts: int = 0
    result_key: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    webhook_url: str | None = None
    idempotency_key: str | None = None
    # the webhook events asked for ("job.succeeded", ...); empty: every terminal state
    webhook_events: list[str] = field(default_factory=list)
    # the mask confidence of the result, and whether it is below review_below; None when the
    # operation made no matte or the job has not succeeded
    confidence: float | None = None
    review: bool | None = None

    # The hash layout. Lists and dicts are JSON; absent optional fields are not written at all.
    def to_hash(self) -> dict[str, str]:
        h: dict[str, str] = {
            "id": self.id,
            "tenant": self.tenant,
            "operation": self.operation,
            "params": json.dumps(self.params, separators=(",", ":"), sort_keys=True),
            "state": self.state.value,
            "created_at": repr(self.created_at),
            "attempts": str(self.attempts),
            "lost_attempts": str(self.lost_attempts),
            "input_key": self.input_key,
        }
        if self.started_at is not None:
            h["started_at"] = repr(self.started_at)
        if self.finished_at is not None:
            h["finished_at"] = repr(self.finished_at)
        for name in ("result_key", "error_code", "error_message", "webhook_url", "idempotency_key"):
            value = getattr(self, name)
            if value is not None:
                h[name] = value
        if self.timings:
            h["timings"] = json.dumps(self.timings)
        if self.webhook_events:
            h["webhook_events"] = json.dumps(self.webhook_events)
        if self.confidence is not None:
            h["confidence"] = repr(self.confidence)
        if self.review is not None:
            h["review"] = "1" if self.review else "0"
        return h

    @classmethod
    def from_hash(cls, h: Mapping[str, str]) -> Job:
        def opt_float(name: str) -> float | None:
            v = h.get(name)
            return float(v) if v not in (None, "") else None

        return cls(
            id=h["id"],
            tenant=h["tenant"],
            operation=h["operation"],
            params=json.loads(h.get("params") or "{}"),
            state=JobState(h["state"]),
            created_at=float(h["created_at"]),
            input_key=h["input_key"],
            started_at=opt_float("started_at"),
            finished_at=opt_float("finished_at"),
            attempts=int(h.get("attempts", 0)),
            lost_attempts=int(h.get("lost_attempts", 0)),
            result_key=h.get("result_key") or None,
            error_code=h.get("error_code") or None,
            error_message=h.get("error_message") or None,
            timings=json.loads(h["timings"]) if h.get("timings") else {},
            webhook_url=h.get("webhook_url") or None,
            idempotency_key=h.get("idempotency_key") or None,
            webhook_events=json.loads(h["webhook_events"]) if h.get("webhook_events") else [],
            confidence=opt_float("confidence"),
            review=(h["review"] == "1") if h.get("review") else None,
        )

    @property
    def model(self) -> str | None:
        """The segmentation model the job runs with (the API writes it into the params), if any."""
        params = self.params or {}
        return params.get("model") or (params.get("background_params") or {}).get("model")

    def wants_webhook(self) -> bool:
        """A webhook for the state the job is in: one was given, and its events (none named: every
        end state) include this one. The one predicate, for the worker's end of a job and cancel."""
        return bool(self.webhook_url) and (not self.webhook_events or f"job.{self.state.value}" in self.webhook_events)

    def document(self, presign: Callable[[str], str]) -> dict[str, Any]:
        """The public job document: what ``GET /v1/jobs/{id}``, the webhook and cancel answer with.
        No storage keys; ISO times; ``result_url`` (``presign(result_key)``) once it succeeded."""
        doc: dict[str, Any] = {
            "id": self.id,
            "tenant": self.tenant,
            "operation": self.operation,
            "params": self.params,
            "model": self.model,
            "state": self.state.value,
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "attempts": self.attempts,
            "timings": self.timings,
            "error": {"code": self.error_code, "message": self.error_message} if self.error_code else None,
            "confidence": self.confidence,
            "review": self.review,
        }
        if self.state is JobState.SUCCEEDED and self.result_key:
            doc["result_url"] = presign(self.result_key)
        return doc


@dataclass
class Batch:
    """Many images, one operation, one id: each image is a job of its own (the pool spreads them
    over workers, and one bad file fails alone); the batch record names its jobs."""

    id: str
    tenant: str
    operation: str
    created_at: float
    job_ids: list[str]

    def to_hash(self) -> dict[str, str]:
        return {"id": self.id, "tenant": self.tenant, "operation": self.operation,
                "created_at": repr(self.created_at), "job_ids": json.dumps(self.job_ids)}

    @classmethod
    def from_hash(cls, h: Mapping[str, str]) -> Batch:
        return cls(id=h["id"], tenant=h["tenant"], operation=h["operation"], created_at=float(h["created_at"]),
                   job_ids=json.loads(h["job_ids"]))

    def document(self, states: list[tuple[str, str]]) -> dict[str, Any]:
        """The public batch document: its jobs' states, counted."""
        counts = {s.value: 0 for s in JobState}
        for _, state in states:
            counts[state] = counts.get(state, 0) + 1
        return {"id": self.id, "tenant": self.tenant, "operation": self.operation, "created_at": _iso(self.created_at),
                "total": len(states), "counts": counts,
                "done": counts[JobState.QUEUED.value] + counts[JobState.RUNNING.value] == 0,
                "jobs": [{"id": j, "state": st} for j, st in states]}


# A page cursor: "<created ms>.<job id>" of the last job of the page. Opaque to clients, but plain, so
# that the API can state its exact shape (every string of this shape is a cursor that works).
CURSOR_PATTERN = r"^[0-9]{1,16}\.[A-Za-z0-9_-]{1,64}$"


def encode_cursor(score: int, job_id: str) -> str:
    return f"{score}.{job_id}"


def decode_cursor(cursor: str) -> tuple[int, str]:
    if not re.fullmatch(CURSOR_PATTERN, cursor):
        raise InvalidParameterError("malformed page cursor: use next_cursor as given", field="cursor")
    score, _, job_id = cursor.partition(".")
    return int(score), job_id


def after_cursor(entries: Iterable[tuple[str, int]], cursor: tuple[int, str] | None) -> list[tuple[str, int]]:
    """Keep the (id, score) entries that come after ``cursor`` in newest-first order.

    Redis returns equal scores in reverse lexicographic order of the member, so an entry comes
    after (s, id) when its score is lower, or equal with a smaller id.
    """
    if cursor is None:
        return list(entries)
    cs, cid = cursor
    return [(m, s) for m, s in entries if s < cs or (s == cs and m < cid)]


# --------------------------------------------------------------------------------------------------
# the Redis adapter

P = ParamSpec("P")
R = TypeVar("R")


class QueuedMessage(Protocol):
    """A task message to LPUSH with a new record (``maskq.service.queue.TaskMessage``): the records
    stay free of Celery."""

    @property
    def queue(self) -> str: ...

    @property
    def payload(self) -> str: ...


def _redis_faults_are_transient(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn redis-py connection and timeout errors into StorageUnavailableError (retryable)."""
    import redis.exceptions as rex

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except (rex.ConnectionError, rex.TimeoutError, rex.BusyLoadingError) as exc:
            raise StorageUnavailableError(f"Redis unavailable: {exc}", service="redis") from exc

    return wrapper


# KEYS[1] job, KEYS[2] tenant index, KEYS[3] idempotency key (or the job key when unused), KEYS[4]
# the queue's Redis list (or the job key when no message is sent), KEYS[5] the live index.
# ARGV[1] "1" when an idempotency key is in use, ARGV[2] ttl s, ARGV[3] score ms, ARGV[4] id,
# ARGV[5] the task message to LPUSH ('' for none), ARGV[6..] field/value pairs.
# Returns {1, id} when created, {0, existing id} on an idempotent hit, {-1, id} when the id exists.
_CREATE_LUA = """
if ARGV[1] == '1' then
  local existing = redis.call('GET', KEYS[3])
  if existing then return {0, existing} end
end
if redis.call('EXISTS', KEYS[1]) == 1 then return {-1, ARGV[4]} end
local ttl = tonumber(ARGV[2])
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[2], tonumber(ARGV[3]), ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[3]) - ttl * 1000)
redis.call('EXPIRE', KEYS[2], ttl)
if ARGV[1] == '1' then redis.call('SET', KEYS[3], ARGV[4], 'EX', ttl) end
if ARGV[5] ~= '' then redis.call('LPUSH', KEYS[4], ARGV[5]) end
redis.call('ZADD', KEYS[5], tonumber(ARGV[3]), ARGV[4])
return {1, ARGV[4]}
"""

# KEYS[1] job, KEYS[2] an index (zset) to add the job to when applied (or the job key when none),
# KEYS[3] the live index.
# ARGV[1] allowed source states (comma separated), ARGV[2] target state,
# ARGV[3] fields to increment (comma separated, may be empty), ARGV[4] a source state that also
# increments lost_attempts (or ''), ARGV[5] fields to delete (comma separated), ARGV[6] the index's
# ttl s ('' when no index), ARGV[7] the live index's score for the job (now, ms), or '' when the
# target state is terminal (the job leaves the live index), ARGV[8..] pairs. The index scores the
# job by its creation ms, as the tenant index does, so that the same cursors page through it.
# Returns {1, previous state, hash} when applied, {0, current state, hash} when refused, {-1} if gone.
_TRANSITION_LUA = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {-1} end
local allowed = false
for s in string.gmatch(ARGV[1], '[^,]+') do
  if s == state then allowed = true end
end
if not allowed then return {0, state, redis.call('HGETALL', KEYS[1])} end
redis.call('HSET', KEYS[1], 'state', ARGV[2])
for f in string.gmatch(ARGV[3], '[^,]+') do redis.call('HINCRBY', KEYS[1], f, 1) end
if ARGV[4] ~= '' and ARGV[4] == state then redis.call('HINCRBY', KEYS[1], 'lost_attempts', 1) end
for f in string.gmatch(ARGV[5], '[^,]+') do redis.call('HDEL', KEYS[1], f) end
for i = 8, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
if ARGV[7] == '' then redis.call('ZREM', KEYS[3], redis.call('HGET', KEYS[1], 'id'))
else redis.call('ZADD', KEYS[3], tonumber(ARGV[7]), redis.call('HGET', KEYS[1], 'id')) end
if ARGV[6] ~= '' then
  local ttl = tonumber(ARGV[6])
  local score = math.floor(tonumber(redis.call('HGET', KEYS[1], 'created_at')) * 1000)
  redis.call('ZADD', KEYS[2], score, redis.call('HGET', KEYS[1], 'id'))
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', score - ttl * 1000)
  redis.call('EXPIRE', KEYS[2], ttl)
end
return {1, state, redis.call('HGETALL', KEYS[1])}
"""


# KEYS[1] job, KEYS[2] the live index, KEYS[3] the queue's list. ARGV[1] id, ARGV[2] the live score
# the caller saw, ARGV[3] now ms, ARGV[4] the message, ARGV[5] the unfinished states (comma
# separated). See JobStore.requeue.
_REQUEUE_LUA = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then redis.call('ZREM', KEYS[2], ARGV[1]) return 'gone' end
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if (not score) or tonumber(score) ~= tonumber(ARGV[2]) then return 'changed' end
local live = false
for st in string.gmatch(ARGV[5], '[^,]+') do
  if st == state then live = true end
end
if not live then redis.call('ZREM', KEYS[2], ARGV[1]) return 'changed' end
redis.call('HDEL', KEYS[1], 'worker')
redis.call('LPUSH', KEYS[3], ARGV[4])
redis.call('ZADD', KEYS[2], tonumber(ARGV[3]), ARGV[1])
return 'requeued'
"""


@dataclass
class Transition:
    """What a transition did: ``applied`` or not, the state before it, and the record after it."""

    applied: bool
    previous: JobState
    job: Job


def _pairs_to_dict(flat: list[Any]) -> dict[str, str]:
    it = iter(flat)
    return {_s(k): _s(v) for k, v in zip(it, it, strict=True)}


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class JobStore:
    """Job records in Redis. Keys: ``{prefix}:job:{id}`` (hash), ``{prefix}:tenant:{t}:jobs`` (zset
    by creation ms, newest-first listings), ``{prefix}:tenant:{t}:review`` (the same for the jobs
    marked for review, written by the transition that marks them) and ``{prefix}:idem:{t}:{key}``
    (idempotency keys), ``{prefix}:batch:{id}`` (a batch: its job ids), ``{prefix}:live`` (zset of the
    jobs not yet finished, scored by the ms of their last transition: where a lost message is looked
    for, :mod:`maskq.service.lost`), ``{prefix}:attempt:{id}`` (the lease of the attempt running a
    job, with a ttl). No other module touches these keys."""

    def __init__(self, client: Any, ttl_seconds: int = defaults.JOB_TTL_SECONDS,
                 prefix: str = defaults.REDIS_KEY_PREFIX, clock: Callable[[], float] = time.time) -> None:
        self.r = client
        self.ttl = int(ttl_seconds)
        self.prefix = prefix
        self.clock = clock
        self._create = client.register_script(_CREATE_LUA)
        self._transition = client.register_script(_TRANSITION_LUA)
        self._requeue = client.register_script(_REQUEUE_LUA)
        self._hold = client.register_script(_HOLD_LUA)
        self._lease = client.register_script(_LEASE_LUA)
        self._release = client.register_script(_RELEASE_LUA)

    @classmethod
    def from_url(cls, url: str, ttl_seconds: int = defaults.JOB_TTL_SECONDS, **kwargs: Any) -> JobStore:
        """A store with its own connection pool; short timeouts so a dead Redis fails fast."""
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=10,
                                      health_check_interval=30, decode_responses=True)
        return cls(client, ttl_seconds=ttl_seconds, **kwargs)

    # keys
    def job_key(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def tenant_key(self, tenant: str) -> str:
        return f"{self.prefix}:tenant:{tenant}:jobs"

    def review_key(self, tenant: str) -> str:
        return f"{self.prefix}:tenant:{tenant}:review"

    def idem_key(self, tenant: str, key: str) -> str:
        return f"{self.prefix}:idem:{tenant}:{key}"

    def batch_key(self, batch_id: str) -> str:
        return f"{self.prefix}:batch:{batch_id}"

    @property
    def live_key(self) -> str:
        return f"{self.prefix}:live"

    def attempt_key(self, job_id: str) -> str:
        return f"{self.prefix}:attempt:{job_id}"

    # the connection
    @_redis_faults_are_transient
    def ping(self) -> None:
        self.r.ping()

    def close(self) -> None:
        self.r.close()

    # create and read
    def _new_job(self, tenant: str, operation: str, params: Mapping[str, Any], input_key: str, job_id: str | None,
                 webhook_url: str | None, idempotency_key: str | None, webhook_events: list[str] | None) -> Job:
        if not input_key:
            raise InvalidParameterError("a job needs an input", field="input_key")
        return Job(id=job_id or new_job_id(), tenant=tenant, operation=operation, params=dict(params),
                   state=JobState.QUEUED, created_at=self.clock(), input_key=input_key, webhook_url=webhook_url,
                   idempotency_key=idempotency_key, webhook_events=list(webhook_events or []))

    def _create_call(self, job: Job, message: Callable[[str], QueuedMessage] | None, client: Any = None) -> Any:
        flat: list[str] = []
        for k, v in job.to_hash().items():
            flat += [k, v]
        idem = self.idem_key(job.tenant, job.idempotency_key) if job.idempotency_key else self.job_key(job.id)
        queued = message(job.id) if message is not None else None
        queue_key, payload = (queued.queue, queued.payload) if queued else (self.job_key(job.id), "")
        return self._create(
            keys=[self.job_key(job.id), self.tenant_key(job.tenant), idem, queue_key, self.live_key],
            args=["1" if job.idempotency_key else "0", self.ttl, int(job.created_at * 1000), job.id, payload, *flat],
            client=client,
        )

    @_redis_faults_are_transient
    def create(self, tenant: str, operation: str, params: Mapping[str, Any], input_key: str, *,
               job_id: str | None = None, webhook_url: str | None = None,
               idempotency_key: str | None = None, webhook_events: list[str] | None = None,
               message: Callable[[str], QueuedMessage] | None = None) -> tuple[Job, bool]:
        """Write a new queued job. Returns ``(job, created)``: with an idempotency key seen before for
        this tenant, the existing job and ``False`` (the API answers it instead of enqueuing again).

        ``message(job_id)`` gives the job's task message (``Publisher.job_message``): it is
        LPUSHed on its queue in the same Lua call, only when the record is created."""
        job = self._new_job(tenant, operation, params, input_key, job_id, webhook_url, idempotency_key,
                            webhook_events)
        status, jid = self._create_call(job, message)
        if int(status) == 1:
            return job, True
        if int(status) == -1:
            raise InvalidParameterError(f"job id {job.id} exists already", field="id")
        existing = self.get(_s(jid))
        if existing is None:  # the job expired between the two calls: its idempotency key is stale
            self.r.delete(self.idem_key(tenant, idempotency_key or ""))
            return self.create(tenant, operation, params, input_key, job_id=job_id, webhook_url=webhook_url,
                               idempotency_key=idempotency_key, webhook_events=webhook_events, message=message)
        return existing, False

    @_redis_faults_are_transient
    def create_batch(self, tenant: str, operation: str, params: Mapping[str, Any], inputs: list[tuple[str, str]], *,
                     batch_id: str | None = None, webhook_url: str | None = None,
                     webhook_events: list[str] | None = None,
                     message: Callable[[str], QueuedMessage] | None = None) -> Batch:
        """A batch and its jobs, one per ``(job id, input key)``, written in one MULTI/EXEC: a reader
        sees all of them or none, and no worker can start a job whose batch does not exist yet."""
        batch = Batch(id=batch_id or new_job_id(), tenant=tenant, operation=operation, created_at=self.clock(),
                      job_ids=[jid for jid, _ in inputs])
        jobs = [self._new_job(tenant, operation, params, key, jid, webhook_url, None, webhook_events)
                for jid, key in inputs]
        keys = [self.batch_key(batch.id), *(self.job_key(j.id) for j in jobs)]
        with self.r.pipeline(transaction=True) as pipe:
            pipe.watch(*keys)  # an id taken meanwhile aborts the EXEC: all of the batch or none of it
            if pipe.exists(*keys):
                raise InvalidParameterError("an id of this batch exists already", field="id")
            pipe.multi()
            for job in jobs:
                self._create_call(job, message, client=pipe)
            pipe.hset(self.batch_key(batch.id), mapping=batch.to_hash())
            pipe.expire(self.batch_key(batch.id), self.ttl)
            pipe.execute()
        return batch

    @_redis_faults_are_transient
    def batch_states(self, batch_id: str, tenant: str) -> tuple[Batch, list[tuple[str, str]]]:
        """The batch and ``(job id, state)`` of each of its jobs ("expired" once a record is gone);
        another tenant's batch is not found."""
        h = self.r.hgetall(self.batch_key(batch_id))
        if not h or _s(h.get("tenant", "")) != tenant:
            raise NotFoundError(f"batch {batch_id} not found", batch_id=batch_id)
        batch = Batch.from_hash({_s(k): _s(v) for k, v in h.items()})
        pipe = self.r.pipeline(transaction=False)
        for jid in batch.job_ids:
            pipe.hget(self.job_key(jid), "state")
        return batch, [(jid, _s(st) if st else "expired") for jid, st in zip(batch.job_ids, pipe.execute(),
                                                                              strict=True)]

    @_redis_faults_are_transient
    def owner_of(self, job_id: str) -> tuple[str | None, str | None]:
        """``(tenant, operation)`` of a job with one read, for log context; ``(None, None)`` if gone."""
        tenant, operation = self.r.hmget(self.job_key(job_id), "tenant", "operation")
        return (_s(tenant) if tenant else None), (_s(operation) if operation else None)

    @_redis_faults_are_transient
    def get(self, job_id: str) -> Job | None:
        h = self.r.hgetall(self.job_key(job_id))
        return Job.from_hash({_s(k): _s(v) for k, v in h.items()}) if h else None

    def require(self, job_id: str, tenant: str | None = None) -> Job:
        """The job, or NotFoundError; with ``tenant``, another tenant's job is not found either."""
        job = self.get(job_id)
        if job is None or (tenant is not None and job.tenant != tenant):
            raise NotFoundError(f"job {job_id} not found", job_id=job_id)
        return job

    @_redis_faults_are_transient
    def find_by_idempotency_key(self, tenant: str, key: str) -> Job | None:
        """The live job created with this idempotency key by this tenant, if any."""
        jid = self.r.get(self.idem_key(tenant, key))
        return self.get(_s(jid)) if jid else None

    @_redis_faults_are_transient
    def list_for_tenant(self, tenant: str, limit: int = defaults.JOB_PAGE_SIZE,
                        cursor: str | None = None, review: bool = False) -> tuple[list[Job], str | None]:
        """A page of the tenant's jobs, newest first, and the cursor of the next page (or None).
        With ``review``, only the jobs marked for review (their own index). Expired records are
        dropped from the index on the way."""
        limit = max(1, min(int(limit), defaults.JOB_PAGE_MAX))
        pos = decode_cursor(cursor) if cursor else None
        zkey = self.review_key(tenant) if review else self.tenant_key(tenant)
        out: list[tuple[Job, int]] = []
        max_score: str = str(pos[0]) if pos else "+inf"
        offset = 0
        chunk = limit + 1
        while len(out) <= limit:
            raw = self.r.zrevrangebyscore(zkey, max_score, "-inf", start=offset, num=chunk, withscores=True)
            if not raw:
                break
            offset += len(raw)
            entries = after_cursor([(_s(m), int(s)) for m, s in raw], pos)
            pipe = self.r.pipeline(transaction=False)
            for m, _ in entries:
                pipe.hgetall(self.job_key(m))
            gone = []
            for (m, s), h in zip(entries, pipe.execute(), strict=True):
                if h:
                    out.append((Job.from_hash({_s(k): _s(v) for k, v in h.items()}), s))
                else:
                    gone.append(m)
            if gone:
                self.r.zrem(zkey, *gone)
            if len(raw) < chunk:
                break
        page = out[:limit]
        nxt = encode_cursor(page[-1][1], page[-1][0].id) if len(out) > limit else None
        return [j for j, _ in page], nxt

    # lost messages
    @_redis_faults_are_transient
    def quiet_live_jobs(self, idle_seconds: float, limit: int = 10_000) -> dict[str, int]:
        """Unfinished jobs whose record has not changed for ``idle_seconds``: job id -> the live
        index's score (ms of the last transition), the version :meth:`requeue` compares with."""
        ceiling = int((self.clock() - idle_seconds) * 1000)
        rows = self.r.zrangebyscore(self.live_key, "-inf", ceiling, start=0, num=limit, withscores=True)
        return {_s(jid): int(score) for jid, score in rows}

    def owners(self, idle_seconds: float, limit: int = 10_000) -> dict[str, tuple[str, int]]:
        """Unfinished jobs untouched for ``idle_seconds`` that a worker instance holds (running them,
        or holding their message): job id -> (that instance, the live index's version)."""
        quiet = self.quiet_live_jobs(idle_seconds, limit)
        pipe = self.r.pipeline(transaction=False)
        for jid in quiet:
            pipe.hget(self.job_key(jid), "worker")
        return {jid: (_s(worker), version) for (jid, version), worker in zip(quiet.items(), pipe.execute(), strict=True)
                if worker}

    @_redis_faults_are_transient
    def requeue(self, job_id: str, version: int, message: QueuedMessage) -> str:
        """Push ``message`` for a job whose own message was lost, only if its record is still
        unfinished and unchanged since ``version`` (one Lua call: a job that moved on meanwhile is left
        alone). The new message's holder is unknown until a worker receives it, so the record's
        ``worker`` is cleared. Returns ``requeued``, ``changed`` or ``gone`` (no record: dropped from
        the index)."""
        res = self._requeue(keys=[self.job_key(job_id), self.live_key, message.queue],
                            args=[job_id, version, int(self.clock() * 1000), message.payload,
                                  ",".join(s.value for s in JobState if not s.is_terminal)])
        return _s(res)

    # transitions
    @_redis_faults_are_transient
    def _apply(self, job_id: str, dst: JobState, *, incr: Iterable[str] = (), lost_from: JobState | None = None,
               delete: Iterable[str] = (), fields: Mapping[str, str] | None = None,
               sources: Iterable[JobState] | None = None, index: str | None = None) -> Transition:
        flat: list[str] = []
        for k, v in (fields or {}).items():
            flat += [k, v]
        res = self._transition(
            keys=[self.job_key(job_id), index or self.job_key(job_id), self.live_key],
            args=[",".join(s.value for s in (sources_of(dst) if sources is None else sources)), dst.value,
                  ",".join(incr),
                  lost_from.value if lost_from else "", ",".join(delete), str(self.ttl) if index else "",
                  "" if dst.is_terminal else str(int(self.clock() * 1000)), *flat],
        )
        if int(res[0]) == -1:
            raise NotFoundError(f"job {job_id} not found", job_id=job_id)
        job = Job.from_hash(_pairs_to_dict(res[2]))
        return Transition(applied=int(res[0]) == 1, previous=JobState(_s(res[1])), job=job)

    def mark_running(self, job_id: str, worker: str = "") -> Transition:
        """Start an attempt: from queued, or from running when the previous attempt's worker was lost
        (that also counts in ``lost_attempts``). Refused (``applied`` False) for a finished job.
        ``worker``: the running worker's instance id, which the orphan sweep checks for a heartbeat."""
        fields = {"started_at": repr(self.clock())}
        if worker:
            fields["worker"] = worker
        return self._apply(job_id, JobState.RUNNING, incr=["attempts"], lost_from=JobState.RUNNING,
                           delete=["error_code", "error_message", "worker"], fields=fields)

    def mark_retrying(self, job_id: str, code: str, message: str, worker: str = "") -> Transition:
        """Back to queued while a retry's countdown runs; the last fault stays visible meanwhile.
        ``worker``, the instance that sent the retry, is presumed to hold its message until a worker
        receives it (``mark_held``): the sender usually takes its own retry at once, before this
        write, when ``mark_held`` still found the job running and wrote nothing. With no holder, a
        retry stuck in a dead worker's ``unacked`` waited for the visibility timeout (5 min)."""
        fields = {"error_code": code, "error_message": message}
        if worker:
            fields["worker"] = worker
        return self._apply(job_id, JobState.QUEUED, fields=fields, delete=[] if worker else ["worker"])

    @_redis_faults_are_transient
    def mark_held(self, job_id: str, worker: str) -> bool:
        """A worker instance received the message of a queued job (prefetched, or a retry waiting
        for its countdown): if that worker dies, the orphan sweep knows whose message it was. Not a
        transition (the live index's version does not move); False when the job is not queued."""
        return bool(self._hold(keys=[self.job_key(job_id)], args=[worker]))

    # the attempt lease: one attempt of a job runs at a time
    @_redis_faults_are_transient
    def hold_attempt(self, job_id: str, token: str, ttl_seconds: float) -> float:
        """Take or renew the lease of the attempt ``token`` on a job. 0.0 when this attempt holds it,
        else the seconds left on the lease of the live attempt that does: a second message for the
        job must not start a second attempt beside it (running -> running is for a dead one)."""
        return int(self._lease(keys=[self.attempt_key(job_id)], args=[token, int(ttl_seconds * 1000)])) / 1000.0

    @_redis_faults_are_transient
    def release_attempt(self, job_id: str, token: str) -> None:
        """Let go of the lease at the attempt's end (a lease that another attempt holds stays)."""
        self._release(keys=[self.attempt_key(job_id)], args=[token])

    def mark_succeeded(self, job_id: str, result_key: str, timings: Mapping[str, float] | None = None, *,
                       confidence: float | None = None, review: bool | None = None,
                       tenant: str | None = None) -> Transition:
        """Succeeded, with the result. A job marked for ``review`` joins the tenant's review index
        (``tenant`` names it) in the same Lua call: never listed unless it did succeed."""
        fields = {"finished_at": repr(self.clock()), "result_key": result_key}
        if timings:
            fields["timings"] = json.dumps(dict(timings))
        if confidence is not None:
            fields["confidence"] = repr(float(confidence))
        if review is not None:
            fields["review"] = "1" if review else "0"
        if review and tenant is None:
            raise ValueError("a job marked for review needs its tenant")
        index = self.review_key(tenant) if review and tenant else None
        return self._finish(job_id, JobState.SUCCEEDED, fields, delete=["error_code", "error_message"], index=index)

    def mark_failed(self, job_id: str, code: str, message: str,
                    timings: Mapping[str, float] | None = None) -> Transition:
        fields = {"finished_at": repr(self.clock()), "error_code": code, "error_message": message[:2000]}
        if timings:
            fields["timings"] = json.dumps(dict(timings))
        return self._finish(job_id, JobState.FAILED, fields)

    def cancel_queued(self, job_id: str) -> Transition:
        """Cancel a job only while it is queued (the API's DELETE): atomically refused (``applied``
        False, ``previous`` the state it has) once a worker has started it or it has finished."""
        return self._finish(job_id, JobState.CANCELED, {"finished_at": repr(self.clock())},
                            sources=[JobState.QUEUED])

    def _finish(self, job_id: str, dst: JobState, fields: dict[str, str], delete: Iterable[str] = (),
                sources: Iterable[JobState] | None = None, index: str | None = None) -> Transition:
        t = self._apply(job_id, dst, fields=fields, delete=delete, sources=sources, index=index)
        if t.applied:  # a finished record lives ttl seconds from its end, not from its creation
            self._touch(job_id)
        return t

    @_redis_faults_are_transient
    def _touch(self, job_id: str) -> None:
        self.r.expire(self.job_key(job_id), self.ttl)
