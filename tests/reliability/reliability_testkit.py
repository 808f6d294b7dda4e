"""Helpers shared by the reliability tests (imported by name; conftest puts this folder on sys.path)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import urllib.request
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from finpredict.common.testing import ServiceProcess, wait_for


def metric_value(proc: ServiceProcess, sample: str, **labels: str) -> float:
    """The sum of the samples named ``sample`` whose labels include ``labels`` (0 when none)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.metrics_port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                total += float(s.value)
    return total


@dataclass
class SlowProxy:
    """A TCP proxy on loopback in front of ``upstream_port``: a slow server and a slow uplink.

    ``response_delay_s`` delays every segment from the server to the client (order kept), as a
    slow server would; ``upload_rate_bps`` throttles the client-to-server direction to that many
    bytes per second. Both can be changed while connections are open."""

    upstream_port: int
    response_delay_s: float = 0.0
    upload_rate_bps: float | None = None
    port: int = 0
    _loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    _thread: threading.Thread | None = None
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> SlowProxy:
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop
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
        assert self._thread is not None
        self._thread.join(timeout=10)
        self._loop.close()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_w.close()
            return
        for r, w, upstream in ((client_r, up_w, True), (up_r, client_w, False)):
            task = asyncio.ensure_future(self._pipe(r, w, upstream))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: bool) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def send() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                if upstream and self.upload_rate_bps:
                    await asyncio.sleep(len(data) / self.upload_rate_bps)
                writer.write(data)
                await writer.drain()

        sender = asyncio.ensure_future(send())
        try:
            while data := await reader.read(16 * 1024):
                delay = 0.0 if upstream else self.response_delay_s
                await queue.put((time.monotonic() + delay, data))
            await queue.put((0.0, b""))
            await sender
        except (ConnectionError, asyncio.CancelledError):
            sender.cancel()
        finally:
            with contextlib.suppress(Exception):
                writer.close()


def wait_port_closed(proc: ServiceProcess, timeout: float = 20) -> None:
    wait_for(lambda: proc.proc.poll() is not None, timeout, f"{proc.name} to exit")
