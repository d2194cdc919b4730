"""GPU-style worker: the threads pool feeding one in-process batcher, on the gpu queue."""

from __future__ import annotations

import pytest

from maskq.service.records import JobState
from tests.worker.conftest import make_client, needs_model, png_bytes

pytestmark = [needs_model, pytest.mark.slow]


def test_threads_pool_with_cross_job_batching_on_the_gpu_queue(redis_url, s3_server, start_worker):
    c = make_client(redis_url, s3_server, worker_queue="gpu", worker_batching=True, batch_wait_ms=30, max_batch=8)
    w = start_worker(c.settings, pool="threads", concurrency=6)
    ids = [c.submit(png_bytes(56, 40, seed=i), "remove") for i in range(16)]
    broken = c.submit(b"broken", "mask")  # a bad input through the batcher fails alone
    jobs = c.wait([*ids, broken], timeout=120)
    for jid in ids:
        job = jobs[jid]
        assert job.state is JobState.SUCCEEDED, job.error_message
        assert c.storage.get_result(job.result_key).content_type == "image/png"
    assert jobs[broken].state is JobState.FAILED
    # nothing went to the cpu queue, and the log shows the model was loaded once for all threads
    assert c.jobs.r.llen("cpu") == 0
    assert w.log_text().count("model loaded") == 1
    c.close()


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in metrics")


def test_batches_really_gather_images_of_several_jobs(redis_url, s3_server, start_worker):
    import time
    import urllib.request

    from maskq.local.embedded import free_port

    port = free_port()
    c = make_client(redis_url, s3_server, worker_queue="gpu", worker_batching=True, batch_wait_ms=200,
                    max_batch=8, worker_metrics_port=port, worker_metrics_host="127.0.0.1")
    w = start_worker(c.settings, pool="threads", concurrency=8)
    w.stop()  # queue everything first, so that 8 tasks are there at once when the worker starts
    ids = [c.submit(png_bytes(48, 48, seed=i), "mask") for i in range(24)]
    w.start()
    assert all(j.state is JobState.SUCCEEDED for j in c.wait(ids, timeout=120).values())
    time.sleep(0.5)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    calls = _metric(text, "maskq_inference_batch_size_count")
    images = _metric(text, "maskq_inference_batch_size_sum")
    assert images == 24 and calls < 24 / 2, f"{images} images in {calls} inference calls"
    c.close()
