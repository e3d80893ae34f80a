"""Framing (net/framing.py), the peer codec (net/peercodec.py) and the client codec
(client/codec.py), with hypothesis fuzzing of every decoder."""

from __future__ import annotations

import struct
import time

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastraft._core import Message
from fastraft.errors import BadRequestError
from fastraft.net.framing import MAX_PEER_FRAME, FrameDecoder, FrameTooLargeError, WireError, frame
from fastraft.net.peercodec import (
    decode_hello,
    decode_message,
    encode_hello,
    encode_message,
    make_snapshot,
)
from fastraft.client.codec import (
    DEFAULT_MAX_CLIENT_FRAME,
    DEFAULT_MAX_REQUEST_BYTES,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)

U64 = st.integers(min_value=0, max_value=(1 << 64) - 1)


def test_limits() -> None:
    assert DEFAULT_MAX_REQUEST_BYTES == 1_572_864
    assert DEFAULT_MAX_CLIENT_FRAME == 1_572_864 + 1024
    assert MAX_PEER_FRAME == 64 * 1024 * 1024


# ----------------------------------------------------------------------------- framing


def test_frame_prefix() -> None:
    assert frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert frame(b"") == b"\x00\x00\x00\x00"


def test_decoder_splits_frames_across_arbitrary_chunks() -> None:
    bodies = [b"", b"a", b"hello" * 100, bytes(range(256))]
    stream = b"".join(frame(b) for b in bodies)
    for step in (1, 2, 3, 5, 7, 64, len(stream)):
        dec = FrameDecoder(1 << 20)
        got: list[bytes] = []
        for i in range(0, len(stream), step):
            got.extend(dec.feed(stream[i : i + step]))
        assert got == bodies, step
        assert dec.pending == 0


@given(st.lists(st.binary(max_size=300), max_size=20), st.lists(st.integers(1, 50), max_size=40))
@settings(max_examples=200, deadline=None)
def test_decoder_roundtrip_fuzz(bodies: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(frame(b) for b in bodies)
    dec = FrameDecoder(1000)
    got: list[bytes] = []
    pos = 0
    for c in cuts:
        got.extend(dec.feed(stream[pos : pos + c]))
        pos += c
    got.extend(dec.feed(stream[pos:]))
    assert got == bodies


def test_decoder_many_small_frames_is_linear() -> None:
    # 200k tiny frames in one read must not cost a copy of the remaining buffer per frame.
    stream = frame(b"xy") * 200_000
    dec = FrameDecoder(100)
    # This thread's CPU time (other processes on the cores do not count): linear is ~0.1 s;
    # a copy of the rest of the buffer per frame would move ~120 GB: over ten seconds.
    t0 = time.thread_time()
    got = dec.feed(stream)
    elapsed = time.thread_time() - t0
    assert len(got) == 200_000 and got[0] == b"xy" and got[-1] == b"xy"
    assert elapsed < 2.0


def test_decoder_large_frame_in_many_pieces() -> None:
    body = b"z" * (4 << 20)
    stream = frame(body)
    dec = FrameDecoder(8 << 20)
    out: list[bytes] = []
    t0 = time.thread_time()  # this thread's CPU, as above
    for i in range(0, len(stream), 4096):
        out.extend(dec.feed(stream[i : i + 4096]))
    assert out == [body]
    assert time.thread_time() - t0 < 2.0


def test_decoder_rejects_oversized_announcement_before_body() -> None:
    dec = FrameDecoder(10)
    ok = frame(b"fine")
    with pytest.raises(FrameTooLargeError) as ei:
        dec.feed(ok + struct.pack(">I", 11))  # only the header of the big frame has arrived
    assert ei.value.size == 11 and ei.value.limit == 10
    assert ei.value.frames == [b"fine"]
    assert ei.value.code == "REQUEST_TOO_LARGE"
    assert isinstance(ei.value, WireError)
    # A frame exactly at the limit is fine.
    assert FrameDecoder(10).feed(frame(b"0123456789")) == [b"0123456789"]


# ------------------------------------------------------------------------- peer messages

entry_st = st.tuples(U64, U64, st.sampled_from([0, 1]), st.binary(max_size=40))
snapshot_st = st.none() | st.builds(
    make_snapshot, U64, U64, st.lists(U64, max_size=5).map(tuple),
    st.lists(U64, max_size=3).map(tuple), st.none() | st.binary(max_size=50))
message_st = st.builds(
    Message,
    type=st.integers(1, 12), to=U64, frm=U64, term=U64, log_term=U64, index=U64,
    entries=st.lists(entry_st, max_size=5), commit=U64, reject=st.booleans(),
    reject_hint=U64, snapshot=snapshot_st, context=st.binary(max_size=20),
)


@given(message_st)
@settings(max_examples=300, deadline=None)
def test_message_roundtrip(m: Message) -> None:
    d = decode_message(encode_message(m))
    assert d == m
    assert all(type(e) is tuple for e in d.entries)
    if m.snapshot is not None:
        s, t = d.snapshot, m.snapshot
        assert (s.index, s.term, tuple(s.voters), tuple(s.learners), s.data) == (
            t.index, t.term, tuple(t.voters), tuple(t.learners), t.data) if not isinstance(
            s, tuple) else s == t


def test_message_concrete_fields() -> None:
    m = Message(type=1, to=2, frm=3, term=4, log_term=5, index=6,
                entries=[(7, 4, 0, b"cmd"), (8, 4, 1, b"cc")], commit=6, context=b"rid")
    d = decode_message(encode_message(m))
    assert (d.type, d.to, d.frm, d.term, d.log_term, d.index, d.commit) == (1, 2, 3, 4, 5, 6, 6)
    assert list(d.entries) == [(7, 4, 0, b"cmd"), (8, 4, 1, b"cc")]
    assert d.context == b"rid" and d.reject is False and d.snapshot is None


def _valid_fields() -> list:
    return [1, 2, 3, 4, 5, 6, [[7, 4, 0, b"x"]], 6, False, 0, None, b""]


@pytest.mark.parametrize("pos,bad", [
    (0, 0), (0, 13), (0, -1), (0, "1"), (0, True), (1, -5), (2, -1),
    (3, 1.5), (6, "nope"), (6, [[1, 2, 3]]), (6, [[1, 2, 9, b""]]), (6, [[1, 2, 0, "str"]]),
    (6, [[-1, 2, 0, b""]]), (8, 1), (8, None), (10, [1, 2]), (10, [1, 2, [-1], [], None]),
    (10, [1, 2, [], [], "data"]), (11, "ctx"), (11, None),
])
def test_decode_message_rejects_bad_fields(pos: int, bad: object) -> None:
    f = _valid_fields()
    decode_message(msgpack.packb(f))  # the baseline is valid
    f[pos] = bad
    with pytest.raises(WireError):
        decode_message(msgpack.packb(f, use_bin_type=True))


def test_decode_message_rejects_wrong_arity_and_garbage() -> None:
    f = _valid_fields()
    for body in (msgpack.packb(f[:-1]), msgpack.packb(f + [1]), b"", b"\xc1", b"\x92\x01",
                 msgpack.packb({"a": 1}), msgpack.packb(f) + b"\x00", b"\xff" * 10,
                 msgpack.packb([1 << 64 - 1] * 12)):
        with pytest.raises(WireError):
            decode_message(body)


@given(st.binary(max_size=200))
@settings(max_examples=500, deadline=None)
def test_decoders_only_raise_wire_error_on_random_bytes(data: bytes) -> None:
    for dec in (decode_message, decode_request, decode_response, decode_hello):
        try:
            dec(data)
        except WireError:
            pass


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 64) - 1) | st.floats()
    | st.text(max_size=10) | st.binary(max_size=10),
    lambda children: st.lists(children, max_size=13) | st.dictionaries(
        st.text(max_size=5), children, max_size=4),
    max_leaves=30,
)


@given(msgpack_values)
@settings(max_examples=500, deadline=None)
def test_decoders_only_raise_wire_error_on_structured_junk(obj: object) -> None:
    body = msgpack.packb(obj, use_bin_type=True)
    for dec in (decode_message, decode_request, decode_response, decode_hello):
        try:
            dec(body)
        except WireError:
            pass


@given(st.lists(msgpack_values, min_size=12, max_size=12))
@settings(max_examples=80, deadline=None)
def test_decode_message_twelve_junk_fields(fields: list) -> None:
    try:
        m = decode_message(msgpack.packb(fields, use_bin_type=True))
    except WireError:
        return
    assert isinstance(m, Message)


# ------------------------------------------------------------------------- hello


def test_hello_roundtrip_and_rejects() -> None:
    assert decode_hello(encode_hello(0xABC, 0x123)) == (0xABC, 0x123)
    with pytest.raises(WireError):
        decode_hello(msgpack.packb(["other", 1, 1, 2]))
    with pytest.raises(WireError):
        decode_hello(msgpack.packb(["fastraft-peer", 2, 1, 2]))
    with pytest.raises(WireError):
        decode_hello(msgpack.packb(["fastraft-peer", 1, -1, 2]))
    with pytest.raises(WireError):
        encode_hello(-1, 2)


# ------------------------------------------------------------------------- client protocol


def test_request_roundtrip() -> None:
    body = encode_request(7, "put", {"key": b"k", "value": b"v", "prev_kv": False})
    assert decode_request(body) == (7, "put", {"key": b"k", "value": b"v", "prev_kv": False})
    assert msgpack.unpackb(body) == [7, "put", {"key": b"k", "value": b"v", "prev_kv": False}]


@pytest.mark.parametrize("obj,req_id", [
    ([1, "put"], 1), ([1, "put", {}, 4], 1), (["1", "put", {}], None), ([-1, "put", {}], None),
    ([True, "put", {}], None), ([2, b"put", {}], 2), ([3, "put", []], 3), ([4, "put", None], 4),
    ({"id": 1}, None), ("x", None),
])
def test_decode_request_rejects(obj: object, req_id: int | None) -> None:
    with pytest.raises(WireError) as ei:
        decode_request(msgpack.packb(obj, use_bin_type=True))
    assert ei.value.req_id == req_id
    assert isinstance(ei.value, BadRequestError) and ei.value.code == "BAD_REQUEST"


def test_decode_request_rejects_non_str_keys() -> None:
    body = msgpack.packb([1, "put", {b"key": b"k"}], use_bin_type=True)
    with pytest.raises(WireError):
        decode_request(body)


def test_encode_request_rejects_bad_input() -> None:
    with pytest.raises(WireError):
        encode_request(-1, "put", {})
    with pytest.raises(WireError):
        encode_request(1, "put", {1: 2})  # type: ignore[dict-item]
    with pytest.raises(WireError):
        encode_request(1, "put", {"k": object()})


def test_response_roundtrip() -> None:
    res = {"header": {"revision": 3}, "kvs": [], "count": 0, "more": False}
    assert decode_response(encode_response(5, None, res)) == (5, None, res)
    err = ("NOT_LEADER", "not leader", {"leader": "a1", "leader_urls": ["http://h:1"]})
    assert decode_response(encode_response(6, err, None)) == (6, err, {})


def test_response_from_exception() -> None:
    from fastraft.errors import NoLeaderError

    rid, err, res = decode_response(encode_response(9, NoLeaderError(), {}))
    assert rid == 9 and err is not None and err[0] == "NO_LEADER" and res == {}


@pytest.mark.parametrize("obj", [
    [1, None], [1, ["X", "m"], {}], [1, [1, "m", {}], {}], [1, None, [1]], [-1, None, {}],
    [1, ["X", "m", []], {}],
])
def test_decode_response_rejects(obj: object) -> None:
    with pytest.raises(WireError):
        decode_response(msgpack.packb(obj, use_bin_type=True))
