"""The sync thread: fsyncs the log store off the event loop (group commit)."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable

__all__ = ["Syncer"]


class Syncer:
    """One thread that runs ``storage.sync()`` when asked and reports its end to the loop
    (``call_soon_threadsafe``), so the loop works on while the disk syncs; the sync itself
    releases the GIL. Lighter than an executor (no Future per sync). One sync at a time (the
    host has one ready outstanding).
    """

    def __init__(self, sync: Callable[[], None], name: str) -> None:
        self._sync = sync
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._started = threading.Lock()
        self._started.acquire()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            req = self._requests.get()
            if req is None:
                return
            loop, on_done = req
            err: BaseException | None = None
            self._started.release()
            try:
                self._sync()
            except BaseException as e:  # handed to the loop, which stops the member
                err = e
            try:
                loop.call_soon_threadsafe(on_done, err)
            except RuntimeError:  # the loop is closed: the member is gone
                pass

    def start(self, loop: asyncio.AbstractEventLoop,
              on_done: Callable[[BaseException | None], None]) -> None:
        """Begin a sync; ``on_done(error or None)`` is called on ``loop`` at its end.

        Returns once the sync thread runs: a thread that was only woken would need the GIL to
        reach the GIL-free fsync, and would not get it while the loop thread keeps working, so
        nothing would overlap."""
        self._requests.put((loop, on_done))
        if not self._started.acquire(timeout=30.0):  # bounded: never hang the loop for good
            raise RuntimeError("the sync thread did not start the sync")

    def stop(self) -> None:
        """End the thread after the syncs already asked for (the DB must outlive them)."""
        self._requests.put(None)
        self._thread.join()
