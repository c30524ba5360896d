"""The ingress deployment: the `Router` behind Ray Serve's HTTP proxy, or on its own listener.

front="proxy": Serve's proxy receives HTTP and hands each request to this replica (the standard
Serve setup: `serve run`, RayService, a proxy on every node).
front="direct": the replica also listens on host:port itself (aiohttp, SO_REUSEPORT so several
replicas on a node share the port), which skips the proxy hop - measured on 2 cores, the proxy
alone adds about 7 ms and caps a trivial route near 280 requests/s.

It is the Ray half of routing: it connects the members the builder describes (`MemberSpec`) and
keeps their running replica counts current from Serve's controller; the `Router` decides.

Both fronts stop reading a body past `serve.openai.MAX_BODY_BYTES` (413), and both cancel the
request when its client disconnects, which cancels it on the replica too (`serve.members`).
"""

import asyncio
import logging
from typing import Dict, List, Optional

from fastapi import FastAPI, Request
from fastapi.responses import Response
from ray import serve

from serve.members import MemberSpec, pool_members
from serve.openai import MAX_BODY_BYTES
from serve.pool import Pool
from serve.router import Reply, Router

log = logging.getLogger(__name__)
# How often replica counts are read from Serve's controller: often while some member is down or
# starting (a replacement is used the moment it runs), rarely when all are up. Each read is a
# full serve.status() - the controller builds, and the ingress unpickles, every deployment's
# details - which at 1 s cost ~9 CPU-seconds per 100 s between the two: on a 2-core node, time
# taken from the judges. A replica that dies under a request is marked down at once anyway.
REFRESH_S = 1.0
SETTLED_REFRESH_S = 5.0


# Defined before the deployment: Serve pickles the class when it is decorated, with the module's
# names known by then.
async def refresh_replicas_forever(pools: List[Pool], app_name: str) -> None:
    """Keep each member's running replica count current, from Serve's controller."""
    while True:
        try:
            status = await asyncio.to_thread(serve.status)
            deployments = status.applications[app_name].deployments
            for pool in pools:
                for member in pool.members:
                    info = deployments.get(member.deployment) if member.deployment else None
                    if info is not None:
                        states = {str(getattr(k, "value", k)): v for k, v in info.replica_states.items()}
                        pool.set_replicas(member, states.get("RUNNING", 0),
                                          states.get("STARTING", 0) + states.get("RECOVERING", 0))
        except Exception:  # noqa: BLE001 - keep routing on the last known state
            log.debug("could not refresh replica counts", exc_info=True)
        await asyncio.sleep(SETTLED_REFRESH_S if all(pool.settled() for pool in pools) else REFRESH_S)


async def read_capped(request: Request) -> Optional[bytes]:
    """The body, or None once it is past MAX_BODY_BYTES (the rest is not read into memory)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def http_response(reply: Reply) -> Response:
    return Response(reply.payload(), status_code=reply.status, headers=reply.headers, media_type="application/json")


async def listen_direct(router: Router, host: str, port: int):
    """The direct front: an aiohttp listener that hands requests to `router`; returns its runner
    (`await runner.cleanup()` stops it)."""
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            reply = router.too_large()
        else:
            reply = await router.handle(request.method, request.path, request.headers, body)
        return web.Response(body=reply.payload(), status=reply.status, headers=reply.headers,
                            content_type="application/json")

    server = web.Application(client_max_size=MAX_BODY_BYTES)
    server.router.add_route("*", "/{tail:.*}", handle)
    # handler_cancellation: a client that disconnects cancels its handler (aiohttp's default lets
    # it run on), and so its request on the replica.
    runner = web.AppRunner(server, access_log=None, handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_port=True, backlog=2048).start()
    return runner


app = FastAPI(title="judgefleet route", docs_url=None, redoc_url=None)
# Every method reaches the router, so even a wrong one gets an OpenAI-shaped answer.
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


@serve.deployment(name="ingress", max_ongoing_requests=2000)
@serve.ingress(app)
class Ingress:
    async def __init__(self, pools: Dict[str, List[MemberSpec]], api_key: Optional[str], retry_after_s: int,
                       app_name: str, direct: Optional[dict] = None):
        self._router = Router(pool_members(pools), api_key, retry_after_s)
        loop = asyncio.get_running_loop()
        self._refresher = loop.create_task(refresh_replicas_forever(list(self._router.pools.values()), app_name))
        self._listener = None
        if direct:
            self._listener = await listen_direct(self._router, direct["host"], direct["port"])

    @app.api_route("/{path:path}", methods=_METHODS)
    async def any_route(self, path: str, request: Request) -> Response:
        body = await read_capped(request)
        if body is None:
            return http_response(self._router.too_large())
        return http_response(await self._router.handle(request.method, path, request.headers, body))
