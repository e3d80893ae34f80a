"""Pure parts of runtime membership: request validation, the join query's wire format, the
client's argument checks and fastractl's printed settings."""

from __future__ import annotations

import asyncio

import click
import msgpack
import pytest

from fastraft.client.api import Header, MemberChange, _member_add_args, _member_id_arg
from fastraft.client.api import Member as ClientMember
from fastraft.config import member_id
from fastraft.ctl import join_settings, parse_member_id as ctl_member_id
from fastraft.errors import BadRequestError
from fastraft.server.join import query_member
from fastraft.server.membership import (
    Member,
    Membership,
    members_from_wire,
    check_promote,
    encode_member_context,
    new_member_id,
    parse_member_add,
    parse_member_id,
)
from fastraft.net.transport import PeerTransport
from fastraft.net.framing import WireError
from fastraft.net.peercodec import decode_join_answer, encode_hello, encode_join_answer

MEMBERS = {
    "a1": {"name": "n1", "peer_urls": ["http://127.0.0.1:2380"], "client_urls": [],
           "is_learner": False},
    "b2": {"name": "n2", "peer_urls": ["http://127.0.0.1:2390"], "client_urls": [],
           "is_learner": True},
}



def _membership(wire: dict[str, dict]) -> Membership:
    ms = Membership(0, [])
    ms.load(members_from_wire(wire))
    return ms


def test_membership_round_trips_its_wire_form_and_keeps_own_client_urls() -> None:
    ms = Membership(0xA1, ["http://127.0.0.1:2379"])
    ms.load(members_from_wire(MEMBERS))
    assert ms.get(0xB2) == Member(0xB2, "n2", ["http://127.0.0.1:2390"], [], True)
    # Our own client URLs are the local truth, in a loaded record or a published one.
    assert ms.wire()["a1"]["client_urls"] == ["http://127.0.0.1:2379"]
    assert ms.set_client_urls(0xA1, ["http://elsewhere:1"])
    assert ms.get(0xA1).client_urls == ["http://127.0.0.1:2379"]
    assert ms.set_client_urls(0xB2, ["http://127.0.0.1:2391"]) and not ms.set_client_urls(9, [])
    ms.promote(0xB2)
    ms.add(0xC3, {"name": "n3", "peer_urls": ["http://127.0.0.1:2400"]}, learner=True)
    ms.remove(0xA1)
    assert ms.wire() == {
        "b2": {"name": "n2", "peer_urls": ["http://127.0.0.1:2390"],
               "client_urls": ["http://127.0.0.1:2391"], "is_learner": False},
        "c3": {"name": "n3", "peer_urls": ["http://127.0.0.1:2400"], "client_urls": [],
               "is_learner": True}}
    assert [m["id"] for m in ms.listing()] == [0xB2, 0xC3]
    assert ms.peer_addrs() == {0xB2: ("127.0.0.1", 2390), 0xC3: ("127.0.0.1", 2400)}


def test_parse_member_add_canonicalizes_and_validates() -> None:
    assert parse_member_add({"name": "n4", "peer_urls": ["127.0.0.1:2410", "http://127.0.0.1:2410"],
                             "learner": True}) == ("n4", ["http://127.0.0.1:2410"], True)
    assert parse_member_add({"name": "n4", "peer_urls": ["http://h:1"]})[2] is False
    bad = [
        ({"name": "", "peer_urls": ["http://h:1"]}, "name"),
        ({"name": "a,b", "peer_urls": ["http://h:1"]}, "name"),
        ({"name": 5, "peer_urls": ["http://h:1"]}, "name"),
        ({"name": "n", "peer_urls": []}, "non-empty list"),
        ({"name": "n", "peer_urls": "http://h:1"}, "non-empty list"),
        ({"name": "n", "peer_urls": [7]}, "not a string"),
        ({"name": "n", "peer_urls": ["https://h:1"]}, "TLS not supported"),
        ({"name": "n", "peer_urls": ["http://h"]}, "missing port"),
        ({"name": "n", "peer_urls": ["http://h:1"], "learner": 1}, "learner must be a bool"),
    ]
    for args, msg in bad:
        with pytest.raises(BadRequestError, match=msg):
            parse_member_add(args)


def test_new_member_id_refuses_clashes() -> None:
    mid = new_member_id("n3", ["http://127.0.0.1:2400"], "tok", _membership(MEMBERS))
    assert mid == member_id("n3", ["http://127.0.0.1:2400"], "tok")
    with pytest.raises(BadRequestError, match="name 'n1' is already used by member a1"):
        new_member_id("n1", ["http://127.0.0.1:9999"], "tok", _membership(MEMBERS))
    with pytest.raises(BadRequestError, match="peer URL http://127.0.0.1:2390 is already used"):
        new_member_id("n9", ["http://127.0.0.1:2390"], "tok", _membership(MEMBERS))
    taken = {format(mid, "x"): {"name": "other", "peer_urls": []}}
    with pytest.raises(BadRequestError, match="already exists"):
        new_member_id("n3", ["http://127.0.0.1:2400"], "tok", _membership(taken))


def test_parse_member_id_and_check_promote() -> None:
    assert parse_member_id("member_remove", {"id": 0xA1}, _membership(MEMBERS)) == 0xA1
    for args, msg in [({"id": 0xC3}, "not found"), ({}, "must be a member id"),
                      ({"id": "a1"}, "must be a member id"), ({"id": True}, "must be a member id"),
                      ({"id": 0}, "must be a member id")]:
        with pytest.raises(BadRequestError, match=msg):
            parse_member_id("member_remove", args, _membership(MEMBERS))
    check_promote(0xB2, _membership(MEMBERS), learner_match=90, leader_match=100)  # 90%: in sync
    with pytest.raises(BadRequestError, match="in sync with leader"):
        check_promote(0xB2, _membership(MEMBERS), learner_match=89, leader_match=100)
    with pytest.raises(BadRequestError, match="in sync with leader"):
        check_promote(0xB2, _membership(MEMBERS), learner_match=None, leader_match=100)
    with pytest.raises(BadRequestError, match="not a learner"):
        check_promote(0xA1, _membership(MEMBERS), learner_match=100, leader_match=100)


def test_member_context() -> None:
    ctx = msgpack.unpackb(encode_member_context("n4", ["http://h:1"]), raw=False)
    assert ctx == {"name": "n4", "peer_urls": ["http://h:1"], "client_urls": []}


def test_join_answer_round_trip_and_garbage() -> None:
    cid, members = decode_join_answer(encode_join_answer(0x1234, MEMBERS))
    assert cid == 0x1234 and members == MEMBERS
    with pytest.raises(WireError):
        decode_join_answer(encode_hello(1, 2))
    with pytest.raises(WireError, match="not hex"):
        decode_join_answer(encode_join_answer(1, {"zz": {}}))
    with pytest.raises(WireError, match="strings"):
        decode_join_answer(encode_join_answer(1, {"a1": {"peer_urls": [1]}}))
    with pytest.raises(WireError):
        decode_join_answer(b"\xc1")


def test_transport_answers_join_query_on_loopback() -> None:
    async def run() -> tuple[int, dict]:
        t = PeerTransport(0xA1, 0x77, ("127.0.0.1", 0), {}, lambda m: None)
        t.on_join_query = lambda: (0x77, MEMBERS)
        await t.start()
        try:
            return await query_member(t.listen_addr, 0xC3, timeout=5.0)
        finally:
            await t.stop()

    assert asyncio.run(run()) == (0x77, members_from_wire(MEMBERS))


def test_client_argument_checks() -> None:
    assert _member_add_args("n4", "http://h:1, http://h:2", True) == {
        "name": "n4", "peer_urls": ["http://h:1", "http://h:2"], "learner": True}
    with pytest.raises(ValueError):
        _member_add_args("", ["http://h:1"], False)
    with pytest.raises(ValueError):
        _member_add_args("n4", [], False)
    assert _member_id_arg("ff") == {"id": 255} and _member_id_arg(7) == {"id": 7}
    for bad in ("xyz", 0, -1, 1 << 64):
        with pytest.raises(ValueError):
            _member_id_arg(bad)  # type: ignore[arg-type]


def test_ctl_join_settings_and_id_parsing() -> None:
    new = ClientMember(0xC3, "n4", ["http://127.0.0.1:2410"], [], True)
    change = MemberChange(Header(1, 2, 3, 4), new, [
        ClientMember(0xA1, "n1", ["http://127.0.0.1:2380"], ["http://127.0.0.1:2379"], False), new],
        "tok")
    assert join_settings(change) == [
        ("FASTRAFT_NAME", "n4"),
        ("FASTRAFT_INITIAL_CLUSTER", "n1=http://127.0.0.1:2380,n4=http://127.0.0.1:2410"),
        ("FASTRAFT_INITIAL_ADVERTISE_PEER_URLS", "http://127.0.0.1:2410"),
        ("FASTRAFT_INITIAL_CLUSTER_STATE", "existing"),
        ("FASTRAFT_INITIAL_CLUSTER_TOKEN", "tok"),
    ]
    assert ctl_member_id("8e9e05c52164694d") == 0x8E9E05C52164694D
    for bad in ("zz", "0", "1" * 17):
        with pytest.raises(click.BadParameter):
            ctl_member_id(bad)
