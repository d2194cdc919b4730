"""The service adapters: job records in Redis, objects in S3, the queue contract and its backlog.
Thin layers over redis-py, the MinIO SDK and Celery/kombu; the image core never imports them."""
