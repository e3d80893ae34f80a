"""`fastraft statefulset probe PATH` (the image's HEALTHCHECK): 0 on 200, 1 otherwise."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from fastraft.statefulset import probe


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        code = 200 if self.path == "/health" else 503
        body = b'{"health": "true"}' if code == 200 else b"readyz check failed: no leader"
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    srv = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(timeout=5)


def test_probe_answers_by_status_code_without_a_pod_name(server: int) -> None:
    env = {"HOSTNAME": "3f2a9c1b7d0e", "FASTRAFT_METRICS_PORT": str(server)}
    ok, line = probe(env, "/health")
    assert ok and line.endswith('200 {"health": "true"}')
    ok, line = probe(env, "/readyz")
    assert not ok and "503 readyz check failed: no leader" in line


def test_probe_uses_the_mapped_address_and_reports_a_refused_connection(server: int) -> None:
    env = {"HOSTNAME": "fastraft-1", "FASTRAFT_METRICS_PORT": str(server),
           "FASTRAFT_HOSTS": "fastraft-1=127.0.0.1"}
    assert probe(env, "/health")[0]
    env["FASTRAFT_HOSTS"] = "fastraft-1=127.0.0.2"  # nothing listens there
    ok, line = probe(env, "/health", timeout=2.0)
    assert not ok and line.startswith(f"http://127.0.0.2:{server}/health: ")
