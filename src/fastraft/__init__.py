"""fastraft: a Raft-replicated key-value store with a native hot path."""

from fastraft._version import __version__
from fastraft.errors import (
    BadRequestError,
    CompactedError,
    FastraftError,
    KeyTooLargeError,
    NoLeaderError,
    NotLeaderError,
    TimeoutError,
    ValueTooLargeError,
)

__all__ = [
    "__version__",
    "BadRequestError",
    "CompactedError",
    "FastraftError",
    "KeyTooLargeError",
    "NoLeaderError",
    "NotLeaderError",
    "TimeoutError",
    "ValueTooLargeError",
]
