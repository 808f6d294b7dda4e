"""A TCP proxy on loopback that makes a server slow or its uplink narrow, or cuts it off,
changeable while connections are open: for deadline, retry, circuit-breaker and partition tests."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time


class DelayProxy:
    """A TCP proxy on loopback in front of ``upstream_port``: a slow server and a slow uplink.

    ``response_delay_s`` delays every segment from the server to the client (order kept), as a
    slow server or network would; ``upload_rate_bps`` throttles the client-to-server direction to
    that many bytes per second (``None``: no limit). Both can be changed while connections are
    open. :meth:`cut` closes every connection and refuses new ones (a partition) until
    :meth:`restore`. Use it as a context manager, or :meth:`start` and :meth:`stop`."""

    def __init__(
        self, upstream_port: int, response_delay_s: float = 0.0, upload_rate_bps: float | None = None
    ) -> None:
        self.upstream_port = upstream_port
        self.response_delay_s = response_delay_s
        self.upload_rate_bps = upload_rate_bps
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.refusing = False

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> DelayProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._accept, "127.0.0.1", 0), self._loop
        ).result(timeout=10)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def stop(self) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def cut(self) -> None:
        """Closes every open connection (both sides) and refuses new ones until :meth:`restore`."""

        async def close_all() -> None:
            self.refusing = True
            for writer in list(self._writers):
                writer.close()

        asyncio.run_coroutine_threadsafe(close_all(), self._loop).result(timeout=10)

    def restore(self) -> None:
        self.refusing = False

    def __enter__(self) -> DelayProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self.refusing:
            client_w.close()
            return
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_w.close()
            return
        self._writers.update((client_w, up_w))
        for reader, writer, upload in ((client_r, up_w, True), (up_r, client_w, False)):
            task = asyncio.ensure_future(self._pipe(reader, writer, upload))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upload: bool) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def forward() -> None:
            while (item := await queue.get())[1]:
                due, data = item
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                if upload and self.upload_rate_bps:
                    await asyncio.sleep(len(data) / self.upload_rate_bps)
                writer.write(data)
                await writer.drain()

        sender = asyncio.ensure_future(forward())
        try:
            while data := await reader.read(16 * 1024):
                delay = 0.0 if upload else self.response_delay_s
                queue.put_nowait((time.monotonic() + delay, data))
            queue.put_nowait((0.0, b""))
            await sender
        except (ConnectionError, asyncio.CancelledError):
            sender.cancel()
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()
