"""Every default maskq uses, named once, each with the reason it has this value."""

from __future__ import annotations

from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_ROOT.parent

# Models ship in the repository (a few MB); the worker image copies this folder. Which file is
# which model, and its input size, is maskq.models' registry.
MODELS_DIR = REPO_ROOT / "models"
# The evaluation and training data sets sit beside the checkout (../shared/datasets, see its README),
# never inside it: benches, training and tests read them from here unless told another folder.
SHARED_DATASETS = REPO_ROOT.parent / "shared" / "datasets"
# fp32 is the reference the model card measures; int8 is opt-in after its own Dice check.
DEFAULT_PRECISION = "fp32"

# 50 MP covers every phone and most DSLRs; beyond it a single image costs seconds and GBs of RAM.
MAX_PIXELS = 50_000_000
# 50 MB covers a 50 MP JPEG at high quality; larger uploads are almost always a mistake or abuse.
MAX_BYTES = 50 * 1024 * 1024

# Images per ONNX call: 8 keeps latency per batch under ~0.4 s on 2 CPU cores and fills a GPU well.
MAX_BATCH = 8
# 0 lets ONNX Runtime use every core; a prefork worker sets it to cores / processes.
INTRA_OP_THREADS = 0

# Quality knobs of the encoders: high enough to be invisible, low enough to stay fast.
JPEG_QUALITY = 90
WEBP_QUALITY = 90
# zlib level 1 is 5-10x faster than 6 on photos for ~10% bigger files: latency matters more here.
PNG_COMPRESS_LEVEL = 1
# fpng writes PNGs ~10x faster than zlib (0.1 s vs 1.3 s for 12 MP RGBA) for 10-50 % larger files;
# latency wins by default, MASKQ_PNG_FAST=false gives Pillow's smaller files (at PNG_COMPRESS_LEVEL).
PNG_FAST = True

# --- mask confidence and region of interest (issue 20) -----------------------------------------------
# A result whose confidence (maskq/confidence.py) is below this is marked `review: true`. Chosen on the
# general model's training hold-out by `python bench/confidence.py --fit` (never on ECSSD or the pets
# test split): the largest threshold that flags at most 12 % of the hold-out photos (the issue allows
# 15 %; the rest is room for harder sets), which, the confidence being monotone in the estimated risk,
# catches the most bad masks within that budget. Refit with each new model.
REVIEW_BELOW = 0.80  # the refit of 2026-12-05 on the shipped general model: flags 12.0 % of the hold-out
# Context around a region of interest that the network also sees, as a share of the roi's longer side
# on each side: enough to see where the object's outline meets its surroundings.
ROI_CONTEXT = 0.1

# Redis and S3 on loopback: the embedded servers of `maskq up` and the tests listen there.
REDIS_URL = "redis://127.0.0.1:6379/0"
S3_ENDPOINT = "127.0.0.1:8333"
S3_REGION = "us-east-1"
INPUT_BUCKET = "maskq-inputs"
RESULT_BUCKET = "maskq-results"
# A local-only credential pair; `Settings` refuses it outside MASKQ_ENV=local.
LOCAL_S3_ACCESS_KEY = "maskq-local"
LOCAL_S3_SECRET_KEY = "maskq-local-secret"
# Presigned result URLs live one hour: long enough to fetch, short enough to leak little.
PRESIGN_EXPIRY_SECONDS = 3600
# Objects and job records expire after 7 days: users fetch results within minutes or hours.
RETENTION_DAYS = 7
JOB_TTL_SECONDS = RETENTION_DAYS * 24 * 3600

# --- queue, job records, storage and worker (issue 6) -------------------------------------------
# Redis keys start with this prefix so that a shared Redis database stays readable (`SCAN maskq:*`).
REDIS_KEY_PREFIX = "maskq"
# A tenant listing page: 50 fits a dashboard table; 200 caps what one request may pull from Redis.
JOB_PAGE_SIZE = 50
JOB_PAGE_MAX = 200
# Images in one batch job: 64 is 8 network batches, about 3 s of CPU; larger batches belong in several jobs.
MAX_BATCH_ITEMS = 64

# S3 client timeouts: a loopback or in-cluster S3 answers in milliseconds; 3 s to connect and 30 s to read
# a 50 MB object tell a dead server from a slow one without holding a worker for minutes.
S3_CONNECT_TIMEOUT_SECONDS = 3.0
S3_READ_TIMEOUT_SECONDS = 30.0
# urllib3-level retries inside one S3 call (connection reset, 5xx): quick ones; the task's own retry
# with backoff handles outages that last longer.
S3_HTTP_RETRIES = 2
# A presigned PUT for an upload lives 15 minutes: a client uploads right after asking.
PRESIGN_PUT_EXPIRY_SECONDS = 900

# Celery queues: CPU and GPU pools scale apart; webhooks have their own so slow receivers never
# hold an image worker.
QUEUE_CPU = "cpu"
QUEUE_GPU = "gpu"
QUEUE_WEBHOOKS = "webhooks"
# Which queue `POST /v1/jobs` routes image work to unless the caller's settings say otherwise.
WORKER_QUEUE = QUEUE_CPU
# Soft limit: a 50 MP image takes ~3 s on 2 cores; 120 s is a wedged task, which is failed as `timeout`.
TASK_SOFT_TIME_LIMIT_SECONDS = 120
# Hard limit: 30 s after the soft one, the child process is killed (native code may ignore the soft one).
TASK_TIME_LIMIT_SECONDS = 150
# Redis broker redelivers an unacked message after this; it must exceed the hard limit, or a slow but
# healthy task would run twice. 300 s = 2x the hard limit.
VISIBILITY_TIMEOUT_SECONDS = 300
# How often a worker sweeps the broker for messages a dead worker left unacked (older than the visibility
# timeout) and puts them back: every 10 s, so a lost job waits at most visibility timeout + 10 s.
BROKER_RESTORE_INTERVAL_SECONDS = 10
# Lost messages (kombu's Redis transport drops one if a worker dies between taking it off the list and
# recording it as unacked): a worker sweeps every 30 s for unfinished jobs whose message is nowhere.
# A job must be untouched for 60 s first and missed by two sweeps in a row, so a lost job waits about
# 1.5 to 2 min, and a healthy one is never sent twice (maskq.service.lost). 0 turns the sweep off.
LOST_SWEEP_SECONDS = 30
LOST_GRACE_SECONDS = 60
# A worker that dies whole leaves its running jobs' messages unacked for the visibility timeout (5 min).
# Each worker refreshes a heartbeat key every 5 s with a 20 s TTL (three missed beats: a loaded node is
# not taken for dead); a running job whose worker's key has lapsed is sent again, so a dead node's jobs
# resume within ~25 s instead of 5 minutes.
WORKER_HEARTBEAT_SECONDS = 5
WORKER_DEAD_AFTER_SECONDS = 20
# kombu holds a Redis lock while it restores a dead worker's messages; a worker killed while holding it
# would block every restore for kombu's default 300 s. Restores are safe to overlap (each message moves
# in a WATCH transaction), so the lock only has to outlive one restore pass.
BROKER_RESTORE_LOCK_SECONDS = 30
# A task message a worker sends (a retry after a transient fault, a deferred copy, a webhook) is
# published with retries for this long: a Redis restart from its append-only file takes 1-3 s, and
# Celery's own policy (4 tries within ~0.6 s) gives up before it ends. A retry whose message cannot be
# sent is dropped by Celery (Reject, requeue=False) and waited for the lost-message sweep (1.5-2 min);
# riding out the restart costs the pool process a wait instead. Beyond this, the sweep still recovers it.
PUBLISH_RETRY_SECONDS = 20
# Transient faults (S3, Redis) are retried this many times with exponential backoff and full jitter
# (each wait is uniform in [0, min(60, 2^n)] s): 8 waits sum to 90 s at the median, and fewer than 1 in
# 100 jobs give up within 30 s, so a storage restart or failover of tens of seconds fails nothing (with 5,
# the seed's value, 3 jobs in 4 gave up within 20 s). Beyond that the outage is an operator's problem
# and the job fails `storage_unavailable`.
TASK_MAX_RETRIES = 8
RETRY_BACKOFF_SECONDS = 1
RETRY_BACKOFF_MAX_SECONDS = 60
# A job whose worker process died this many times (SIGKILL, OOM, segfault) is failed as `internal`:
# a poison input must not cycle through the pool for ever.
MAX_LOST_ATTEMPTS = 3
# One attempt of a job at a time: the attempt running it holds a lease in Redis, renewed every third of
# this. A second message for the job (a retry's copy, a resubmission, a redelivery) waits while the lease
# lives instead of taking over a live attempt; a pool child SIGKILLed mid-job leaves a lease that lapses
# within this, then its redelivered message takes over (and counts a lost attempt).
ATTEMPT_LEASE_SECONDS = 15
# A prefork child that grew past 1.5 GB RSS is replaced after its task: ONNX Runtime arenas and PIL
# buffers grow on 50 MP inputs, and that memory is not given back otherwise.
WORKER_MAX_MEMORY_PER_CHILD_KB = 1_500_000
# ...and after this many tasks whatever its size: a slow native leak (ONNX Runtime, OpenCV, libjpeg)
# stays bounded even below the memory limit. A new child loads the model again (1-2 s), i.e. < 1 % of a
# pool's time at ~0.2 s a job.
WORKER_MAX_TASKS_PER_CHILD = 1000
# Cross-job batching on GPU workers: wait at most 10 ms for more images (a GPU batch of 8 takes ~20 ms).
BATCH_WAIT_MS = 10
# Prometheus metrics of a worker are served here; 0 turns them off.
WORKER_METRICS_PORT = 0
# ...on every interface of the pod, since Prometheus scrapes the pod IP; tests and laptops set 127.0.0.1.
WORKER_METRICS_HOST = "0.0.0.0"

# Webhooks: POST times out quickly (the receiver should queue, not work), then retries with backoff
# 2, 4, 8 ... 240 s (below the visibility timeout: a waiting retry is an unacked message), ~15 min in all.
WEBHOOK_TIMEOUT_SECONDS = 10.0
WEBHOOK_MAX_RETRIES = 8
WEBHOOK_BACKOFF_SECONDS = 2
WEBHOOK_BACKOFF_MAX_SECONDS = 240
# A local-only signing secret (Standard Webhooks form "whsec_" + base64); production sets its own.
LOCAL_WEBHOOK_SECRET = "whsec_bWFza3EtbG9jYWwtd2ViaG9vay1zZWNyZXQ="

# --- observability (issue 8) ----------------------------------------------------------------------
# Logs: JSON lines in containers (one event a line, machine-parsed, job id and tenant on each);
# `text` for a developer's console.
LOG_FORMAT = "json"
# INFO shows one line per job start and end; DEBUG adds per-stage detail.
LOG_LEVEL = "INFO"
# The standalone backlog exporter (`python -m maskq.service.backlog`) listens here: next to the worker's 9464.
BACKLOG_EXPORTER_PORT = 9465
# Queues whose backlog is exported: the two image pools KEDA scales (webhooks never need scaling).
BACKLOG_QUEUES = ("cpu", "gpu")

# --- the HTTP API (issue 7) ---------------------------------------------------------------------
# A request body may be one image at the byte limit plus its multipart framing and form fields
# (64 KiB is far above what the operation, parameters and webhook take). Batches of large images go
# through presigned uploads (`POST /v1/uploads`), so one body never needs to hold several of them.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
MAX_REQUEST_BYTES = MAX_BYTES + MULTIPART_OVERHEAD_BYTES
# Queued + running jobs on the API's queue above which new jobs get 429: 10,000 is ~2 minutes of work
# for the CPU pool at its ceiling (~80 jobs/s, deploy/README.md); beyond that a job waits so long that
# a client is better told to come back than silently parked.
BACKLOG_LIMIT = 10_000
# The backlog is read from Redis at most once a second per API process (not per request): at
# 200 requests/s that is 1 read instead of 200, and the limit is a soft guard, not an exact quota.
BACKLOG_CACHE_SECONDS = 1.0
# Retry-After of a 429: a backlog at the limit drains in minutes; 30 s spreads retries without
# leaving capacity idle for long.
BACKLOG_RETRY_AFTER_SECONDS = 30
# Webhook targets on private, loopback or link-local addresses are refused, at submit and again at every
# delivery (SSRF and DNS rebinding: a job could make the webhook worker call the cluster's internal
# services). Tests and a laptop's local receiver turn it on; never production.
WEBHOOK_ALLOW_PRIVATE = False

# --- upload abuse (issue 19) --------------------------------------------------------------------
# The whole request body must arrive within this many seconds of the API first asking for it, else 408:
# a client sending a byte a second (slowloris) would otherwise hold a connection, and its share of the
# upload budget below, for as long as it likes. 60 s lets the largest body (MAX_REQUEST_BYTES, ~50 MB)
# arrive over a ~7 Mbit/s uplink; slower clients upload with POST /v1/uploads, straight to S3.
BODY_TIMEOUT_SECONDS = 60.0
# Request body bytes one API process receives at once, counted from Content-Length (a chunked body as it
# streams): past it a new upload gets 429 before a byte of its body is read. A body is held in memory
# whole while its image is checked and stored, so this bounds the process's memory under a flood:
# 192 MiB is three bodies at the 50 MB limit (or ~50 phone photos), which with the process's own ~100 MB
# keeps it under 500 MB (bench/upload_abuse.py); a request at MAX_REQUEST_BYTES must always fit.
UPLOAD_BUDGET_BYTES = 192 * 1024 * 1024
# Retry-After of that 429: uploads in progress finish within seconds, so the budget frees quickly.
UPLOAD_BUDGET_RETRY_AFTER_SECONDS = 5
