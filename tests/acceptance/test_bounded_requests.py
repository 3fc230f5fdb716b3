"""Bounded requests against the served process: a body over the limit is refused while
it streams in, before authentication, without the server holding it in memory."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import Engine as DBEngine

from escrowflow import tokens
from tests.conftest import table_counts
from tests.served import START, Server

pytestmark = pytest.mark.slow  # each test starts `escrowflow serve`

MB = 1024 * 1024


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _post_raw(port: int, headers: str, body_bytes: int) -> bytes:
    """POST `body_bytes` of body (sent from a thread, stopped when the server closes)
    and return what the server answered."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(60)

    def send_body() -> None:
        chunk = b"x" * (64 * 1024)
        sent = 0
        try:
            sock.sendall(headers.encode())
            while sent < body_bytes:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            return  # the server hung up: it will not read the rest

    sender = threading.Thread(target=send_body, daemon=True)
    sender.start()
    answer = b""
    try:
        while b"\r\n\r\n" not in answer or len(answer) < answer.index(b"\r\n\r\n") + 4 + 10:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    finally:
        sock.close()
        sender.join(30)
    return answer


def test_a_200_mb_body_without_a_token_is_refused_unread(server: Server) -> None:
    before = rss_kib(server.process.pid)
    answer = _post_raw(
        server.port,
        f"POST /v1/contracts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {200 * MB}\r\n\r\n",
        200 * MB,
    )
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 413"), answer[:300]
    body = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert body["code"] == "body_too_large" and body["details"]["limit"] == MB
    grown = (rss_kib(server.process.pid) - before) / 1024
    assert grown < 20, f"the server's memory grew by {grown:.0f} MB"


def test_a_chunked_body_is_cut_at_the_limit_while_streaming(server: Server) -> None:
    """No Content-Length: the body is read only up to the limit."""
    before = rss_kib(server.process.pid)
    chunk = b"x" * (64 * 1024)
    framed = (b"%x\r\n" % len(chunk) + chunk + b"\r\n").decode()
    answer = _post_raw(
        server.port,
        "POST /v1/contracts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n" + framed * 48,  # 3 MiB: three times the limit
        0,
    )
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert (rss_kib(server.process.pid) - before) / 1024 < 20


def test_a_2_mib_body_with_a_valid_token_is_refused_and_changes_nothing(
    server: Server, db: DBEngine
) -> None:
    token = tokens.create(db, START, "web", ["act:client"])["token"]
    before = table_counts(db)
    milestones = [{"title": "x" * 180, "amount": 50_000}] * 12_000  # ~2.4 MiB of JSON
    response = httpx.post(
        f"{server.url}/v1/contracts",
        json={"freelancer_id": "ada", "title": "Big", "currency": "USD", "milestones": milestones},
        headers={"Authorization": f"Bearer {token}", "Escrowflow-Actor": "client:acme"},
        timeout=30,
    )
    assert response.status_code == 413 and response.json()["code"] == "body_too_large"
    assert table_counts(db) == before


def test_json_nested_too_deep_is_refused(server: Server) -> None:
    deep = "[" * 5_000 + "]" * 5_000
    response = httpx.post(
        f"{server.url}/v1/contracts",
        content=deep,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 400 and response.json()["code"] == "json_too_deep"
