"""Bytes between processes: framing, the peer codec, the peer transport, snapshot streams and
the client listener (the msgpack front end over the member's KV service).

``framing`` imports no ``_core`` (the client codec builds on it); ``peercodec`` and everything
peer-side does.
"""
