"""Local tooling: the whole service on one machine (``maskq up``, embedded Redis and S3), the demo
and the HTTP client that the demo, the benches and the tests use."""
