"""Benchmarks of the wire codec: peer messages carrying a batch, and client request framing.

Run: python -m pytest bench/test_codec_bench.py --benchmark-enable
"""

from __future__ import annotations

from fastraft._core import Message
from fastraft.raft.core import MsgType
from fastraft.net.framing import FrameDecoder, frame
from fastraft.net.peercodec import decode_message, encode_message
from fastraft.client.codec import decode_request, encode_request, encode_response

VALUE = b"v" * 256
ENTRIES = [(i, 3, 0, VALUE) for i in range(1000, 1064)]
APP = Message(type=int(MsgType.MsgApp), to=2, frm=1, term=3, log_term=3, index=999,
              entries=ENTRIES, commit=990)


def test_encode_msgapp_64(benchmark) -> None:
    body = benchmark(encode_message, APP)
    assert len(body) > 64 * 256


def test_decode_msgapp_64(benchmark) -> None:
    body = encode_message(APP)
    m = benchmark(decode_message, body)
    assert m.entries == ENTRIES and m.commit == 990


def test_client_requests_64_per_read(benchmark) -> None:
    """What the server does with one read() holding 64 pipelined puts: split the frames, decode
    each request, encode each answer (the state machine's work excluded)."""
    chunk = b"".join(frame(encode_request(i, "put", {"key": b"key/%08d" % i, "value": VALUE}))
                     for i in range(64))
    decoder = FrameDecoder(1 << 21)
    result = {"revision": 7, "header": {"revision": 7, "raft_term": 3, "member_id": 1}}

    def serve() -> bytes:
        out = []
        for body in decoder.feed(chunk):
            req_id, _op, _args = decode_request(body)
            out.append(frame(encode_response(req_id, None, result)))
        return b"".join(out)

    reply = benchmark(serve)
    assert decoder.pending == 0 and reply.count(b"revision") == 128
