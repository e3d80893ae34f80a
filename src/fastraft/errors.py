"""The error types fastraft users catch.

Every error a server sends has a stable ``code``; the client turns it back into the matching
exception class, so ``except fastraft.NoLeaderError`` works the same against a local core and a
remote cluster.
"""

from __future__ import annotations


class FastraftError(Exception):
    """Base class of every fastraft error."""

    code = "INTERNAL"

    def __init__(self, message: str = "", **extra: object) -> None:
        super().__init__(message or self.__class__.__doc__ or self.code)
        self.message = message or (self.__class__.__doc__ or self.code).strip()
        self.extra = extra


class NoLeaderError(FastraftError):
    """no leader: the cluster has no quorum or an election is in progress"""

    code = "NO_LEADER"


class NotLeaderError(FastraftError):
    """this member is not the leader"""

    code = "NOT_LEADER"

    # leader: the core's id (int) or, on the wire and in clients, its hex form.
    def __init__(self, message: str = "", leader: int | str = 0, **extra: object) -> None:
        super().__init__(message, leader=leader, **extra)
        self.leader = leader


class TimeoutError(FastraftError):  # noqa: A001 - deliberately shadows the builtin inside fastraft
    """request timed out: the outcome of a write is unknown"""

    code = "TIMEOUT"


class BadRequestError(FastraftError):
    """malformed request"""

    code = "BAD_REQUEST"


class UnknownOperationError(BadRequestError):
    """unknown operation"""

    code = "UNKNOWN_OP"


class KeyTooLargeError(BadRequestError):
    """key is too large"""

    code = "KEY_TOO_LARGE"


class ValueTooLargeError(BadRequestError):
    """value is too large"""

    code = "VALUE_TOO_LARGE"


class RequestTooLargeError(BadRequestError):
    """request is too large"""

    code = "REQUEST_TOO_LARGE"


class ResponseTooLargeError(BadRequestError):
    """The answer would be larger than the member sends in one response."""

    code = "RESPONSE_TOO_LARGE"


class CompactedError(FastraftError):
    """required revision has been compacted"""

    code = "COMPACTED"


class FutureRevisionError(FastraftError):
    """required revision is a future revision"""

    code = "FUTURE_REV"


class NotCommittedError(FastraftError):
    """the proposal was replaced by a new leader's entry: it was not applied"""

    code = "NOT_COMMITTED"


class StoppingError(FastraftError):
    """the member is stopping"""

    code = "STOPPING"


class ConfChangeInProgressError(FastraftError):
    """a membership change is already in progress"""

    code = "CONF_CHANGE_IN_PROGRESS"


class ProposalDroppedError(FastraftError):
    """proposal dropped: leadership transfer in progress"""

    code = "PROPOSAL_DROPPED"


class LeaderTransferError(FastraftError):
    """a leadership transfer (move-leader) did not happen; the leader is unchanged or another
    member leads"""

    code = "LEADER_TRANSFER_FAILED"


class SnapshotFileError(FastraftError):
    """a snapshot file is missing, foreign, truncated or corrupt"""

    code = "SNAPSHOT_FILE"


class DataDirError(FastraftError):
    """the data directory cannot be used by this member"""

    code = "DATA_DIR"


class ConfigError(FastraftError):
    """invalid configuration"""

    code = "CONFIG"


class UnavailableError(FastraftError):
    """no endpoint could be reached: the request was not sent"""

    code = "UNAVAILABLE"



class LeaseUnavailableError(FastraftError):
    """lease read refused: this leader cannot prove its lease (use a linearizable read)"""

    code = "LEASE_UNAVAILABLE"


class TooStaleError(FastraftError):
    """bounded-staleness read refused: this member's state may be older than the bound"""

    code = "TOO_STALE"


class WatchError(FastraftError):
    """a watch ended before the caller cancelled it"""

    code = "WATCH_ENDED"

    def __init__(self, message: str = "", resume_revision: int = 0, **extra: object) -> None:
        super().__init__(message, resume_revision=resume_revision, **extra)
        # Watch again from here (same range) to continue without a gap or a duplicate.
        self.resume_revision = resume_revision


class WatchCanceledError(WatchError):
    """the server cancelled the watch (slow consumer, member stopping)"""

    code = "WATCH_CANCELED"


class WatchLostError(WatchError):
    """the connection to the watched member was lost"""

    code = "WATCH_LOST"

_BY_CODE: dict[str, type[FastraftError]] = {}
for _cls in list(globals().values()):
    if isinstance(_cls, type) and issubclass(_cls, FastraftError):
        _BY_CODE.setdefault(_cls.code, _cls)


def error_from_code(code: str, message: str, extra: dict | None = None) -> FastraftError:
    """Rebuild the exception a server reported (unknown codes become ``FastraftError``)."""
    cls = _BY_CODE.get(code, FastraftError)
    err = cls(message, **(extra or {}))
    err.code = code
    return err
