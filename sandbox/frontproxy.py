"""The API endpoint of a real-API world: a loopback TCP proxy in front of the real kube-apiserver.

The kubeconfig points here. TLS passes through untouched (the client verifies the real API server's
certificate), so the proxy sees bytes only. While k3s restarts on the server that serves the kubeconfig,
``set_down(True)`` stops listening and drops every open connection, as the real restart does: clients
get "connection refused" until ``set_down(False)`` listens again on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import time


class FrontProxy:
    def __init__(self, upstream_port: int, port: int = 0, host: str = "127.0.0.1"):
        self.host, self.port, self.upstream_port = host, port, upstream_port
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self.down = False
        self.up_windows: list[dict] = []  # each return of the port (the real API server is ready at once)

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    async def start(self) -> FrontProxy:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def set_down(self, down: bool) -> None:
        if down == self.down:
            return
        self.down = down
        if down:
            await self._close()
        else:
            await self.start()
            now = time.time()
            self.up_windows.append({"up": now, "ready": now})

    async def stop(self) -> None:
        await self._close()

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for w in list(self._conns):
            with contextlib.suppress(Exception):
                w.transport.abort()
        self._conns.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        self._conns.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()
        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self._conns.discard(writer)
            self._conns.discard(up_writer)
