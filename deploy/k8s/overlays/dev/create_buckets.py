"""Create maskq's input and result buckets with their expiry rule; idempotent, exits 0 when done.

Run once at start by the compose stack (service minio-init) and by the dev overlay's Job
(maskq-minio-init). Reads the same MASKQ_* variables as the service; uses only the minio SDK that
the API image already has, so no extra image (mc) is needed.
"""

from __future__ import annotations

import os
import sys
import time

from minio import Minio
from minio.commonconfig import ENABLED, Filter
from minio.error import S3Error
from minio.lifecycleconfig import Expiration, LifecycleConfig, Rule
from urllib3.exceptions import HTTPError


def env(name: str, default: str) -> str:
    return os.environ.get(f"MASKQ_{name}", default)


def main() -> int:
    endpoint = env("S3_ENDPOINT", "127.0.0.1:9000")
    client = Minio(
        endpoint,
        access_key=env("S3_ACCESS_KEY", "maskq-local"),
        secret_key=env("S3_SECRET_KEY", "maskq-local-secret"),
        secure=env("S3_SECURE", "false").lower() in ("1", "true", "yes"),
        region=env("S3_REGION", "us-east-1"),
    )
    days = int(env("RETENTION_DAYS", "7"))
    buckets = [env("INPUT_BUCKET", "maskq-inputs"), env("RESULT_BUCKET", "maskq-results")]
    lifecycle = LifecycleConfig(
        [Rule(ENABLED, rule_filter=Filter(prefix=""), rule_id="maskq-expiry", expiration=Expiration(days=days))]
    )
    deadline = time.monotonic() + float(env("INIT_TIMEOUT_SECONDS", "120"))
    while True:
        try:
            for bucket in buckets:
                if not client.bucket_exists(bucket):
                    client.make_bucket(bucket)
                    print(f"created bucket {bucket}", flush=True)
                client.set_bucket_lifecycle(bucket, lifecycle)
                print(f"bucket {bucket}: objects expire after {days} days", flush=True)
            return 0
        except (S3Error, HTTPError, OSError) as err:  # MinIO not up yet, or a transient fault
            if time.monotonic() > deadline:
                print(f"giving up on {endpoint}: {err}", file=sys.stderr)
                return 1
            print(f"waiting for {endpoint}: {err}", file=sys.stderr, flush=True)
            time.sleep(2)


if __name__ == "__main__":
    sys.exit(main())
