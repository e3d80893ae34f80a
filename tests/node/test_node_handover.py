"""SIGTERM of the leader (a rolling update's step) as writing clients see it: the stopping leader
hands leadership over and sends its clients on to the new leader; no write is refused or left
with an unknown outcome, and every acknowledged write is there afterwards.

Behaviour only: how long writes pause is measured by bench/failover.py.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

from fastraft import Client
from fastraft.client.codec import decode_response, encode_request
from fastraft.errors import FastraftError
from fastraft.net.framing import MAX_PEER_FRAME, FrameDecoder, frame
from polling import wait_for  # tests/ is on pytest's pythonpath


def _writer(endpoints: str, tag: int, acked: list[bytes], errors: list[str],
            stop: threading.Event) -> None:
    with Client(endpoints, timeout=5.0) as c:
        for i in range(100_000):  # bounded; ended by `stop` long before
            if stop.is_set():
                return
            key = b"w%d/%06d" % (tag, i)
            try:
                c.put(key, key)
            except FastraftError as e:
                errors.append(f"{key!r}: {type(e).__name__}: {e.message}")
                continue
            acked.append(key)


def test_writing_clients_see_no_error_across_sigterm_handovers(make_cluster) -> None:
    lc = make_cluster(3)
    acked: list[bytes] = []
    errors: list[str] = []
    stop = threading.Event()
    writers = [threading.Thread(target=_writer, args=(lc.endpoints, t, acked, errors, stop))
               for t in range(3)]
    for w in writers:
        w.start()
    try:
        for _ in range(2):  # two steps of a rolling update
            wait_for(lambda: len(acked) >= 50, 20, "writes before the stop")
            leader = lc.wait_leader()
            m = lc.member(leader)
            assert m.proc is not None
            before = len(acked)
            os.kill(m.proc.pid, signal.SIGTERM)
            assert m.proc.wait(timeout=10) == 0
            rest = [x.name for x in lc.members if x.alive]
            assert lc.wait_leader(timeout=5, among=rest) != leader
            wait_for(lambda: len(acked) >= before + 50, 20, "writes after the handover")
            lc.start(leader)
            lc.wait_ready(leader)
    finally:
        stop.set()
        for w in writers:
            w.join(30)
    assert not errors, errors[:5]
    with Client(lc.endpoints) as c:
        for key in acked:
            got = c.get(key).kvs
            assert got and got[0].value == key, key


class _Pipeline:
    """One raw connection to a member: a thread sends puts of new keys in pipelined bursts, at
    most WINDOW unanswered (as a client library pipelines), while the caller reads the answers
    (request id i puts key i - 1)."""

    WINDOW = 300

    def __init__(self, endpoint: str, limit: int) -> None:
        host, port = endpoint.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.keys = [b"p/%06d" % i for i in range(limit)]
        self.sent = 0
        self.answered = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._send, daemon=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.answers: dict[int, tuple | None] = {}
        self.sent_at_refusal = -1

    def _send(self) -> None:
        burst = 100
        deadline = time.monotonic() + 5.0  # bounded, in time and count
        while (not self.stop.is_set() and self.sent < len(self.keys)
               and time.monotonic() < deadline):
            with self.lock:
                room = self.answered + self.WINDOW - self.sent
                first, self.sent = self.sent, min(len(self.keys), self.sent + min(burst, room))
                last = self.sent
            if first == last:
                time.sleep(0.001)
                continue
            data = b"".join(frame(encode_request(i + 1, "put", {"key": self.keys[i],
                                                                "value": b"x" * 256}))
                            for i in range(first, last))
            try:
                self.sock.sendall(data)
            except OSError:
                return
            time.sleep(0.001)

    def start(self) -> None:
        self.thread.start()
        self.reader.start()

    def _read(self) -> None:
        """Answers (request id -> error, None = success) until the member closes; and how many
        requests had been sent when the first refusal came back (those must all be answered:
        sending stops there, as a client told NOT_LEADER goes elsewhere)."""
        out = self.answers
        dec = FrameDecoder(MAX_PEER_FRAME)
        deadline = time.monotonic() + 30.0  # bounded; the member closes well before
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(1 << 20)
            except (socket.timeout, ConnectionError):
                break
            if not data:
                break
            for body in dec.feed(data):
                rid, err, _ = decode_response(body)
                out[rid] = err
                with self.lock:
                    self.answered = len(out)
                if err is not None and self.sent_at_refusal < 0:
                    self.stop.set()
                    with self.lock:
                        self.sent_at_refusal = self.sent
        self.stop.set()


def test_the_stopping_leaders_pending_writes_get_a_definite_answer(make_cluster) -> None:
    """Writes that reach the leader around its SIGTERM (proposed before it, or arriving during
    the handover) are each acknowledged, or answered NOT_LEADER / NOT_COMMITTED (not applied,
    safe to resend): never an outcome-unknown or a STOPPING answer, never a connection closed
    on them. What was acknowledged is there, what was refused is not."""
    lc = make_cluster(3)
    leader = lc.wait_leader()
    m = lc.member(leader)
    assert m.proc is not None
    p = _Pipeline(m.endpoint, 30_000)
    try:
        p.start()
        wait_for(lambda: p.answered >= 500, 10, "puts answered before the stop")
        os.kill(m.proc.pid, signal.SIGTERM)
        p.reader.join(40)
    finally:
        p.stop.set()
        p.sock.close()
        p.thread.join(10)
        p.reader.join(10)
    answers, sent_at_refusal = p.answers, p.sent_at_refusal
    assert m.proc.wait(timeout=10) == 0
    assert sent_at_refusal > 0, "the leader never refused a write: it stopped serving silently"
    unanswered = [i for i in range(1, sent_at_refusal + 1) if i not in answers]
    assert not unanswered, f"{len(unanswered)} requests never answered, e.g. {unanswered[:5]}"
    codes: dict[str, int] = {}
    for err in answers.values():
        code = "OK" if err is None else err[0]
        codes[code] = codes.get(code, 0) + 1
    assert set(codes) <= {"OK", "NOT_LEADER", "NOT_COMMITTED"}, codes
    rest = [x.name for x in lc.members if x.alive]
    lc.wait_leader(timeout=5, among=rest)
    with Client(",".join(lc.member(x).endpoint for x in rest)) as c:
        present = {kv.key for kv in c.get(b"p/", prefix=True).kvs}
    for rid, err in answers.items():
        key = p.keys[rid - 1]
        if err is None:
            assert key in present, f"{key!r} was acknowledged and is missing"
        else:
            assert key not in present, f"{key!r} was answered {err[0]} and was applied"
