"""fastraft: a Raft-replicated key-value store with a native hot path.

The public surface: the clients (:class:`Client`, :class:`AsyncClient`), their result types and
txn builders, and the exceptions they raise. The server is run with ``fastraft serve``; the core
(:mod:`fastraft.raft`) and the adapters (storage, transport, kv) are importable for tests and
tools but are not a stable API.
"""

from fastraft._version import __version__
from fastraft.client import (
    AsyncClient,
    Client,
    Compare,
    DeleteResult,
    GetResult,
    Header,
    KeyValue,
    Member,
    Op,
    PutResult,
    TxnResult,
    Watch,
    AsyncWatch,
    WatchEvent,
)
from fastraft.errors import (
    BadRequestError,
    CompactedError,
    DataDirError,
    FastraftError,
    FutureRevisionError,
    KeyTooLargeError,
    NoLeaderError,
    NotCommittedError,
    NotLeaderError,
    RequestTooLargeError,
    StoppingError,
    TimeoutError,
    UnavailableError,
    UnknownOperationError,
    ValueTooLargeError,
    WatchCanceledError,
    WatchError,
    WatchLostError,
)

__all__ = [
    "__version__",
    "AsyncClient",
    "Client",
    "Compare",
    "DeleteResult",
    "GetResult",
    "Header",
    "KeyValue",
    "Member",
    "Op",
    "PutResult",
    "TxnResult",
    "Watch",
    "AsyncWatch",
    "WatchEvent",
    "BadRequestError",
    "CompactedError",
    "DataDirError",
    "FastraftError",
    "FutureRevisionError",
    "KeyTooLargeError",
    "NoLeaderError",
    "NotCommittedError",
    "NotLeaderError",
    "RequestTooLargeError",
    "StoppingError",
    "TimeoutError",
    "UnavailableError",
    "UnknownOperationError",
    "ValueTooLargeError",
    "WatchCanceledError",
    "WatchError",
    "WatchLostError",
]
