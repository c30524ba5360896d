"""The ingress deployment: the `Router` behind Ray Serve's HTTP proxy, or on its own listener.

front="proxy": Serve's proxy receives HTTP and hands each request to this replica (the standard
Serve setup: `serve run`, RayService, a proxy on every node).
front="direct": the replica also listens on host:port itself (aiohttp, SO_REUSEPORT so several
replicas on a node share the port), which skips the proxy hop - measured on 2 cores, the proxy
alone adds about 7 ms and caps a trivial route near 280 requests/s.
"""

from typing import Dict, List, Optional

from fastapi import FastAPI, Request
from fastapi.responses import Response
from ray import serve

from serve.router import Router

app = FastAPI(title="judgefleet route", docs_url=None, redoc_url=None)


@serve.deployment(name="ingress", max_ongoing_requests=2000)
@serve.ingress(app)
class Ingress:
    async def __init__(self, pools: Dict[str, List[dict]], api_key: Optional[str], retry_after_s: int, app_name: str,
                       direct: Optional[dict] = None):
        import asyncio

        self._router = Router(pools, api_key, retry_after_s, app_name)
        loop = asyncio.get_running_loop()
        self._refresher = loop.create_task(self._router.refresh_forever())
        self._site = None
        if direct:
            await self._listen(direct["host"], direct["port"])

    @app.api_route("/{path:path}", methods=["GET", "POST"])
    async def any_route(self, path: str, request: Request) -> Response:
        reply = await self._router.handle(request.method, path, request.headers, await request.body())
        return Response(reply.payload(), status_code=reply.status, headers=reply.headers, media_type="application/json")

    async def _listen(self, host: str, port: int) -> None:
        from aiohttp import web

        async def handle(request: web.Request) -> web.Response:
            reply = await self._router.handle(request.method, request.path, request.headers, await request.read())
            return web.Response(body=reply.payload(), status=reply.status, headers=reply.headers,
                                content_type="application/json")

        server = web.Application(client_max_size=64 << 20)
        server.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(server, access_log=None)
        await runner.setup()
        self._site = web.TCPSite(runner, host, port, reuse_port=True, backlog=2048)
        await self._site.start()
