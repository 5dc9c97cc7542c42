"""The node agent's kubelet endpoint: where a real kube-apiserver fetches ``pods/log``.

A real API server does not store logs: for ``GET …/pods/NAME/log`` it connects to the kubelet of the pod's
node (the preferred address in the Node's status, port ``daemonEndpoints.kubeletEndpoint.Port``), over TLS
with its kubelet client certificate, and streams ``/containerLogs/NS/POD/CONTAINER`` back. One agent plays
every node, so every Node names this one endpoint (127.0.0.1, see ``realapi``); the path says which pod.

Like the kubelet, an error is a 400 with the message as plain text, which the API server hands to the client
as the status message (``container "c" in pod "p" is waiting to start: ContainerCreating``).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

from aiohttp import web


class KubeletEndpoint:
    def __init__(self, logs: Callable[[str, str, str], str | None], running: Callable[[str, str], bool],
                 cert_file: str, key_file: str, client_ca_file: str):
        """``logs(ns, pod, container)``: the text so far, or None when the container has not started;
        ``running(ns, pod)``: whether more may come (a follow stream ends when it is False)."""
        self.logs, self.running = logs, running
        self.ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=client_ca_file)
        self.ssl.load_cert_chain(cert_file, key_file)
        self.ssl.verify_mode = ssl.CERT_REQUIRED  # only the API server (its kubelet client certificate)
        self.port = 0
        self.clients: list[str] = []  # the certificate subjects that connected (what the tests check)
        self._runner: web.AppRunner | None = None

    async def start(self) -> KubeletEndpoint:
        app = web.Application()
        app.router.add_get("/containerLogs/{ns}/{pod}/{container}", self._log)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _log(self, request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peercert") or {}
        self.clients.append(next((v for rdn in peer.get("subject", ()) for k, v in rdn if k == "commonName"), ""))
        ns, pod, container = (request.match_info[k] for k in ("ns", "pod", "container"))
        text = self.logs(ns, pod, container)
        if text is None:
            return web.Response(status=400, text=f'container "{container}" in pod "{pod}" is waiting to start: '
                                                 "ContainerCreating")
        tail = request.query.get("tailLines")
        if tail and tail.isdigit():
            text = "".join(text.splitlines(keepends=True)[-int(tail):]) if int(tail) else ""
        if request.query.get("follow") not in ("true", "1"):
            return web.Response(text=text, content_type="text/plain")
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        await resp.write(text.encode())
        sent = len(self.logs(ns, pod, container) or "")
        while self.running(ns, pod):
            await asyncio.sleep(0.1)
            cur = self.logs(ns, pod, container) or ""
            if len(cur) > sent:
                await resp.write(cur[sent:].encode())
                sent = len(cur)
        cur = self.logs(ns, pod, container) or ""
        if len(cur) > sent:
            await resp.write(cur[sent:].encode())
        await resp.write_eof()
        return resp
