"""Storage against a real S3 server (`weed mini`, SigV4 checked) through the minio SDK."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import pytest

from maskq.errors import ConfigurationError, InvalidParameterError, NotFoundError, StorageUnavailableError
from maskq.local.embedded import S3Server, free_port, port_is_free
from maskq.service.storage import Storage, object_key
from maskq.settings import load_settings
from tests.conftest import object_keys


def test_object_keys_are_scoped_and_safe():
    assert object_key("acme", "abc123", "result", "png") == "acme/abc123/result.png"
    assert object_key("acme", "abc123", "input", "") == "acme/abc123/input"
    for tenant, job in (("../etc", "x"), ("a/b", "x"), ("acme", ".."), ("", "x"), ("acme", "a b")):
        with pytest.raises(InvalidParameterError):
            object_key(tenant, job, "input", "png")
    with pytest.raises(InvalidParameterError):
        object_key("acme", "j", "input", "png/../../x")


def test_put_get_round_trip_with_content_type_and_metadata(storage: Storage):
    data = bytes(range(256)) * 1000
    key = storage.put_result("acme", "job1", data, extension="png", content_type="image/png", metadata={"job": "job1"})
    assert key == "acme/job1/result.png"
    obj = storage.get_result(key)
    assert obj.data == data and obj.content_type == "image/png" and obj.metadata.get("job") == "job1"
    streamed = storage.open_result(key)
    assert b"".join(streamed.chunks(4096)) == data and streamed.content_type == "image/png"
    assert streamed.content_length == str(len(data))
    ikey = storage.put_input("acme", "job1", b"raw-bytes", extension="jpg", content_type="image/jpeg")
    assert storage.get_input(ikey).data == b"raw-bytes"
    assert storage.inspect_input(ikey, 3) == (9, b"raw")
    assert object_keys(storage, storage.input_bucket, "acme/job1/") == [ikey]
    with pytest.raises(NotFoundError):
        storage.get_result("acme/job1/result.webp")
    with pytest.raises(NotFoundError):
        storage.inspect_input("acme/nothing/input.png", 64)


def test_overwriting_a_result_keeps_one_object(storage: Storage):
    for n in range(3):
        storage.put_result("acme", "dup", f"v{n}".encode(), extension="png", content_type="image/png")
    assert object_keys(storage, storage.result_bucket, "acme/dup/") == ["acme/dup/result.png"]
    assert storage.get_result("acme/dup/result.png").data == b"v2"


def test_presigned_get_works_and_a_tampered_one_does_not(storage: Storage):
    key = storage.put_result("acme", "p1", b"PNGDATA", extension="png", content_type="image/png")
    url = storage.presigned_result_url(key, expiry_seconds=120)
    assert "X-Amz-Expires=120" in url
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.read() == b"PNGDATA" and resp.headers["Content-Type"] == "image/png"
    tampered = url.replace("X-Amz-Expires=120", "X-Amz-Expires=99999")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(tampered, timeout=10)
    assert err.value.code == 403


def test_presigned_put_upload(storage: Storage):
    key, url = storage.presigned_upload_url("acme", "up1", extension="jpg")
    assert key == "acme/up1/input.jpg"
    req = urllib.request.Request(url, data=b"\xff\xd8uploaded", method="PUT",
                                 headers={"Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
    assert storage.get_input(key).data == b"\xff\xd8uploaded"


def test_buckets_get_a_lifecycle_expiry(storage: Storage):
    storage.ensure_buckets()  # idempotent
    for bucket in (storage.input_bucket, storage.result_bucket):
        cfg = storage.client.get_bucket_lifecycle(bucket)
        assert cfg is not None and cfg.rules[0].expiration.days == storage.retention_days


def test_wrong_secret_is_a_configuration_error(settings, storage: Storage):
    bad = Storage.from_settings(settings.model_copy(update={"s3_secret_key": "not-the-secret"}))
    with pytest.raises(ConfigurationError):
        bad.get_input("acme/x/input/0")


def test_missing_object_is_not_found(storage: Storage):
    with pytest.raises(NotFoundError):
        storage.get_input("acme/none/input/0.png")


def test_unreachable_server_is_transient_and_fast():
    s = load_settings(s3_endpoint=f"127.0.0.1:{free_port()}", s3_connect_timeout=0.5, s3_read_timeout=1,
                      s3_http_retries=1)
    st = Storage.from_settings(s)
    t0 = time.monotonic()
    with pytest.raises(StorageUnavailableError) as err:
        st.get_input("acme/x/input/0")
    assert err.value.code == "storage_unavailable" and time.monotonic() - t0 < 10


def test_embedded_server_stops_cleanly_and_frees_its_ports(tmp_path):
    server = S3Server("k", "secret-secret", workdir=tmp_path)
    server.start()
    ports = server.ports()
    assert all(not port_is_free(p) for p in ports[:1])
    server.stop()
    assert server.proc is None
    deadline = time.monotonic() + 10
    while not all(port_is_free(p) for p in ports) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(port_is_free(p) for p in ports)
    import socket

    with socket.socket() as s:  # someone else takes the S3 port: a clear refusal, no half-started server
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", ports[0]))
        s.listen()
        blocker = S3Server("k", "secret-secret", port=ports[0], workdir=tmp_path / "b")
        with pytest.raises(ConfigurationError, match="already in use"):
            blocker.start()
        assert blocker.proc is None
