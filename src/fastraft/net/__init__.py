"""Bytes between processes: framing, the peer codec, the peer transport, snapshot streams and
the client listener (the msgpack front end over the member's KV service).

``framing`` and ``snapstream`` import no ``_core`` (the client codec builds on the first; the
backup file of ``fastractl snapshot save`` reuses the second's frames); ``peercodec`` and the
rest of the peer side do.
"""
