"""The client codec: requests and responses between a client and a member (bodies; see framing).

* client request: ``[req_id, op, args]``; response: ``[req_id, error | nil, result]`` with
  ``error = [code, message, extra]`` (see docs/architecture.md).

No ``_core`` import here or in :mod:`fastraft.net.framing`: a client runs without the extension.
"""

from __future__ import annotations

from typing import Any

from fastraft.errors import FastraftError
from fastraft.net.framing import (
    DEFAULT_MAX_REQUEST_BYTES,
    U64_LIMIT,
    WireError,
    list_field,
    pack,
    str_map_field,
    u64_field,
    unpack,
)

__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "CLIENT_ENVELOPE_BYTES",
    "DEFAULT_MAX_CLIENT_FRAME",
    "encode_request",
    "decode_request",
    "encode_response",
    "decode_response",
]

# Client frames get room for the envelope on top of the largest request.
CLIENT_ENVELOPE_BYTES = 1024
DEFAULT_MAX_CLIENT_FRAME = DEFAULT_MAX_REQUEST_BYTES + CLIENT_ENVELOPE_BYTES


# ------------------------------------------------------------------------- client protocol


def encode_request(req_id: int, op: str, args: dict[str, Any]) -> bytes:
    """Encode a client request ``[req_id, op, args]`` (body only)."""
    u64_field(req_id, "request id")
    if type(op) is not str:
        raise WireError("op must be a string")
    return pack([req_id, op, str_map_field(args, "args")])


def decode_request(body: bytes) -> tuple[int, str, dict[str, Any]]:
    """Validate the envelope of a client request and return ``(req_id, op, args)``.

    Only the envelope is checked here; the server checks each op's arguments. When the request
    id was readable, the raised :class:`WireError` carries it in ``req_id`` so the server can
    still answer ``BAD_REQUEST`` to the right request.
    """
    obj = unpack(body)
    if type(obj) is list and len(obj) >= 1 and type(obj[0]) is int and 0 <= obj[0] < U64_LIMIT:
        req_id: int | None = obj[0]
    else:
        req_id = None
    try:
        f = list_field(obj, "request", 3)
        u64_field(f[0], "request id")
        if type(f[1]) is not str:
            raise WireError("op must be a string")
        args = str_map_field(f[2], "args")
    except WireError as e:
        e.req_id = req_id
        raise
    return f[0], f[1], args


def _error_triple(error: Any) -> list | None:
    if error is None:
        return None
    if isinstance(error, FastraftError):
        extra = {str(k): v for k, v in error.extra.items()}
        return [error.code, error.message, extra]
    code, message, extra = error
    return [str(code), str(message), dict(extra or {})]


def encode_response(req_id: int, error: Any, result: dict[str, Any] | None) -> bytes:
    """Encode ``[req_id, error, result]``.

    ``error`` is None, a ``(code, message, extra)`` triple or a :class:`FastraftError`.
    """
    u64_field(req_id, "request id")
    return pack([req_id, _error_triple(error), result if result is not None else {}])


def decode_response(body: bytes) -> tuple[int, tuple[str, str, dict] | None, dict[str, Any]]:
    """Return ``(req_id, error, result)``; ``error`` is None or ``(code, message, extra)``."""
    f = list_field(unpack(body), "response", 3)
    req_id = u64_field(f[0], "request id")
    err = f[1]
    error: tuple[str, str, dict] | None = None
    if err is not None:
        e = list_field(err, "error", 3)
        if type(e[0]) is not str or type(e[1]) is not str:
            raise WireError("error code and message must be strings")
        error = (e[0], e[1], str_map_field(e[2], "error extra"))
    result = f[2]
    if result is None:
        result = {}
    return req_id, error, str_map_field(result, "result")
