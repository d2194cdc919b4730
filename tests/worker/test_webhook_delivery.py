"""Webhook delivery against a real HTTP(S) receiver on 127.0.0.1, with a resolver that the test
controls (the stand-in for DNS, so its answer can change between submit and delivery): the address
delivery connects to is the one it checked, every time (DNS rebinding), and a refusal is counted
and logged without the receiver being called."""

from __future__ import annotations

import logging
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from maskq.service.webhook_address import WebhookAddressRefusedError, checked_addresses, parse
from worker import webhooks

SECRET = "whsec_" + "QUJD" * 8
PUBLIC = "93.184.216.34"  # what the name answers at submit
NAME = "hooks.example.test"  # .test never resolves in real DNS: only the test's resolver knows it


class Receiver:
    """Records each POST (path, headers, body, the TLS name the client asked for) and answers 204."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.sni: list[str | None] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                outer.requests.append((self.path, dict(self.headers.items()), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            tls.sni_callback = lambda sock, name, ctx: self.sni.append(name)
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rx = Receiver()
    yield rx
    rx.close()


def changing(*answers: list[str]) -> tuple[list[str], Callable[[str, int], list[str]]]:
    """A resolver giving each answer in turn (the last one from then on), and the names it was asked."""
    asked: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        asked.append(host)
        return answers[min(len(asked), len(answers)) - 1]

    return asked, resolver


def count(outcome: str) -> float:
    return REGISTRY.get_sample_value("maskq_webhook_deliveries_total", {"outcome": outcome}) or 0.0


def signed(body: bytes = b'{"type":"job.succeeded"}') -> tuple[bytes, dict[str, str]]:
    return body, webhooks.headers_for(SECRET, "msg_j1_succeeded", body)


@pytest.mark.parametrize("inside", ["127.0.0.1", "::ffff:127.0.0.1", "169.254.169.254", "10.0.0.5"])
def test_a_name_rebound_to_an_inside_address_at_delivery_is_not_called(receiver, caplog, inside) -> None:
    url = f"http://{NAME}:{receiver.port}/hooks"
    asked, resolver = changing([PUBLIC], [inside])
    assert checked_addresses(parse(url), allow_private=False, resolver=resolver) == [PUBLIC]  # submit: fine
    before = count("refused_address")
    body, headers = signed()
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="worker.webhooks"), \
            pytest.raises(WebhookAddressRefusedError) as e:
        webhooks.post(url, body, headers, timeout=5, allow_private=False, resolver=resolver)
    assert time.monotonic() - t0 < 2  # refused before any connection attempt
    assert asked == [NAME, NAME]  # resolved again at delivery, by the deliverer
    assert receiver.requests == []
    assert count("refused_address") == before + 1
    refused = str(e.value.details["address"])
    assert refused == inside.removeprefix("::ffff:")
    [record] = [r for r in caplog.records if r.name == "worker.webhooks"]
    assert record.webhook_host == NAME and record.refused_address == refused  # type: ignore[attr-defined]
    assert NAME in record.getMessage() and refused in record.getMessage()
    # the same receiver is reachable when the policy allows it: the empty inbox above means "refused"
    webhooks.post(url, body, headers, timeout=5, allow_private=True, resolver=changing(["127.0.0.1"])[1])
    assert len(receiver.requests) == 1


def test_allow_private_delivers_to_the_resolved_address_with_the_urls_host(receiver) -> None:
    url = f"http://{NAME}:{receiver.port}/hooks/maskq?tenant=t1"
    before = count("delivered")
    body, headers = signed()
    asked, resolver = changing(["127.0.0.1"])
    assert webhooks.post(url, body, headers, timeout=5, allow_private=True, resolver=resolver) == 204
    [(path, got, sent)] = receiver.requests
    assert path == "/hooks/maskq?tenant=t1"
    assert got["Host"] == f"{NAME}:{receiver.port}"  # the URL's name, not the address connected to
    assert sent == body and webhooks.verify(SECRET, got, sent)
    assert asked == [NAME] and count("delivered") == before + 1


def test_the_next_checked_address_is_tried_when_one_refuses_the_connection(receiver) -> None:
    # 127.0.0.2 is loopback too, but the receiver listens on 127.0.0.1 only: connection refused
    asked, resolver = changing(["127.0.0.2", "127.0.0.1"])
    body, headers = signed()
    assert webhooks.post(f"http://{NAME}:{receiver.port}/h", body, headers, 5, allow_private=True,
                         resolver=resolver) == 204
    assert len(receiver.requests) == 1 and asked == [NAME]


def test_no_dns_answer_at_delivery_is_retried_not_dropped(receiver) -> None:
    def nxdomain(host: str, port: int) -> list[str]:
        raise OSError(-2, "Name or service not known")

    before = count("unresolved")
    with pytest.raises(webhooks.WebhookDeliveryError):  # autoretried by WebhookTask
        webhooks.post(f"http://{NAME}:{receiver.port}/h", *signed(), 5, allow_private=True, resolver=nxdomain)
    assert count("unresolved") == before + 1 and receiver.requests == []


@pytest.fixture
def tls_receiver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    """An HTTPS receiver with a self-signed certificate for NAME only (no IP in it), trusted by this
    process through SSL_CERT_FILE (OpenSSL reads it whenever a context loads the default CAs)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-keyout", str(key),
                    "-out", str(cert), "-subj", f"/CN={NAME}", "-addext", f"subjectAltName=DNS:{NAME}"],
                   check=True, capture_output=True, timeout=60)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    rx = Receiver(tls=ctx)
    yield rx
    rx.close()


def test_https_connects_to_the_address_and_verifies_the_urls_name(tls_receiver) -> None:
    rx = tls_receiver
    resolver = changing(["127.0.0.1"])[1]
    assert webhooks.post(f"https://{NAME}:{rx.port}/h", *signed(), 5, allow_private=True, resolver=resolver) == 204
    assert rx.sni == [NAME] and rx.requests[0][1]["Host"] == f"{NAME}:{rx.port}"
    # the certificate names NAME, not 127.0.0.1 nor another name answering with the same address
    for url in (f"https://other.example.test:{rx.port}/h", f"https://127.0.0.1:{rx.port}/h"):
        with pytest.raises(webhooks.WebhookDeliveryError, match="doesn't match"):
            webhooks.post(url, *signed(), 5, allow_private=True, resolver=resolver)
    assert len(rx.requests) == 1
