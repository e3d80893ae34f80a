"""The client side: :class:`Client` (blocking) and :class:`AsyncClient` (asyncio), their result
types, and the client codec. Imports no ``fastraft._core``: a client runs without the extension.
"""

from fastraft.client.api import (
    Client,
    AsyncClient,
    KeyValue,
    Header,
    PutResult,
    GetResult,
    DeleteResult,
    TxnResult,
    Member,
    MemberChange,
    Compare,
    Op,
    parse_endpoint,
    prefix_range_end,
    Watch,
    AsyncWatch,
    WatchEvent,
)

__all__ = [
    "Client",
    "AsyncClient",
    "KeyValue",
    "Header",
    "PutResult",
    "GetResult",
    "DeleteResult",
    "TxnResult",
    "Member",
    "MemberChange",
    "Compare",
    "Op",
    "parse_endpoint",
    "prefix_range_end",
    "Watch",
    "AsyncWatch",
    "WatchEvent",
]
