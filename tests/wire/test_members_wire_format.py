"""Members are ``Member`` records between modules and the map hex id -> record only where bytes
are written: these bytes are pinned. The expected hex was produced by the code before members
became records across modules (main 8055cb2, where the map itself crossed them), so a member that
joins, streams or restarts across the change reads what the other wrote."""

from __future__ import annotations

import pytest

from fastraft.net.framing import WireError
from fastraft.net.peercodec import decode_join_answer, encode_join_answer
from fastraft.net.snapstream import decode_end, encode_end
from fastraft.server.membership import Member, Membership, members_from_wire, members_to_wire
from fastraft.server.snapshot import decode_snapshot, encode_snapshot

WIRE = {
    "a1": {"name": "n1", "peer_urls": ["http://127.0.0.1:2380"],
           "client_urls": ["http://stale:1"], "is_learner": False},
    "b2": {"name": "n2", "peer_urls": ["http://127.0.0.1:2390"], "client_urls": [],
           "is_learner": True},
}

# msgpack of the map: a1 (own client URLs replace the stale ones), b2, then c3 added.
MEMBERS_HEX = (
    "83a2613184a46e616d65a26e31a9706565725f75726c7391b5687474703a2f2f3132372e302e302e313a3233"
    "3830ab636c69656e745f75726c7391b5687474703a2f2f3132372e302e302e313a32333739aa69735f6c6561"
    "726e6572c2a2623284a46e616d65a26e32a9706565725f75726c7391b5687474703a2f2f3132372e302e302e"
    "313a32333930ab636c69656e745f75726c7390aa69735f6c6561726e6572c3a2633384a46e616d65a26e33a9"
    "706565725f75726c7391b5687474703a2f2f3132372e302e302e313a32343030ab636c69656e745f75726c73"
    "90aa69735f6c6561726e6572c3"
)


def _membership() -> Membership:
    ms = Membership(0xA1, ["http://127.0.0.1:2379"])
    ms.load(members_from_wire(WIRE))  # as read from storage meta "members"
    ms.add(0xC3, {"name": "n3", "peer_urls": ["http://127.0.0.1:2400"]}, learner=True)
    return ms


def test_stored_members_are_the_same_bytes() -> None:
    import msgpack  # storage meta values are msgpack (storage/logstore.py put_meta)

    assert msgpack.packb(_membership().wire(), use_bin_type=True).hex() == MEMBERS_HEX


def test_join_answer_is_the_same_bytes_and_reads_back_as_members() -> None:
    ms = _membership()
    body = encode_join_answer(0x77, ms.wire())
    assert body.hex() == "94ad66617374726166742d6a6f696e0177" + MEMBERS_HEX
    cid, wire = decode_join_answer(body)
    assert cid == 0x77 and members_from_wire(wire) == ms.copy()


def test_snapshot_stream_end_and_install_members_are_the_same_bytes() -> None:
    ms = _membership()
    view_members = ms.copy()  # what a snapshot view holds
    ms.remove(0xB2)  # a later change must not leak into the view
    digest = bytes(range(32))
    body = encode_end(3, 100, digest, members_to_wire(view_members))
    assert body.hex() == "45940364c420" + digest.hex() + MEMBERS_HEX
    # The receiver: members read at the wire edge, written back for the install batch.
    wire = decode_end(body)[3]
    import msgpack

    assert msgpack.packb(members_to_wire(members_from_wire(wire)),
                         use_bin_type=True).hex() == MEMBERS_HEX


def test_snapshot_data_is_the_same_bytes() -> None:
    ms = _membership()
    data = encode_snapshot(5, ms.copy(), b"kv")
    assert data.hex() == ("4652534e41503031" "0000000000000005" "92" + MEMBERS_HEX + "c4026b76")
    index, members, kv_data = decode_snapshot(data)
    assert (index, kv_data) == (5, b"kv") and members == ms.copy()
    assert members[0] == Member(0xA1, "n1", ["http://127.0.0.1:2380"],
                                ["http://127.0.0.1:2379"], False)


@pytest.mark.parametrize("bad", [
    {"zz": {"name": "x"}},                       # not a hex id
    {"a1": ["not", "a", "record"]},              # not a record
    {"a1": {"name": "x", "peer_urls": 5}},       # URLs not a list
])
def test_members_that_are_not_records_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        members_from_wire(bad)
    # The snapshot stream's end frame passes its shape check; the members edge refuses.
    body = encode_end(1, 1, bytes(32), bad)
    try:
        wire = decode_end(body)[3]
    except WireError:
        return
    with pytest.raises(ValueError):
        members_from_wire(wire)
