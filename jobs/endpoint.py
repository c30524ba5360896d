"""Where the judge answers: an external OpenAI URL, checked up front, or the route deployed here.

The checks that need no Ray (is the URL reachable, does it serve the model, is the port free)
run before Ray starts, so a typo costs a second, not a cluster start.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from typing import Optional

import httpx

from jobs.client.http import error_message
from jobs.config import JobConfig
from jobs.errors import EndpointError

log = logging.getLogger(__name__)


@dataclass
class Endpoint:
    url: str
    model: str
    api_key: Optional[str]
    max_model_len: Optional[int]
    deployed: bool = False


def api_key(cfg: JobConfig) -> Optional[str]:
    return cfg.judge.api_key or os.environ.get("JUDGEFLEET_API_KEY") or os.environ.get("OPENAI_API_KEY")


def check_external(cfg: JobConfig, timeout_s: float = 10.0) -> Endpoint:
    """GET {url}/models: the endpoint answers, accepts our key and serves judge.model."""
    url, model, key = cfg.judge.url.rstrip("/"), cfg.judge.model, api_key(cfg)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        response = httpx.get(f"{url}/models", headers=headers, timeout=timeout_s)
    except httpx.HTTPError as e:
        raise EndpointError(
            f"judge.url: cannot reach {url} ({type(e).__name__}: {e}); start the server or fix the URL "
            "(it is the API base, usually ending in /v1)"
        ) from None
    if response.status_code in (401, 403):
        raise EndpointError(f"judge.url: {url} refused the API key (HTTP {response.status_code}); set judge.api_key or $JUDGEFLEET_API_KEY")
    if response.status_code >= 400:
        raise EndpointError(f"judge.url: GET {url}/models answered HTTP {response.status_code}: {error_message(response.text, response.reason_phrase)}")
    try:
        cards = response.json().get("data") or []
    except (ValueError, AttributeError):
        raise EndpointError(f"judge.url: {url}/models did not answer OpenAI JSON; is this the API base (.../v1)?") from None
    served = {c.get("id"): c for c in cards if isinstance(c, dict)}
    if model not in served:
        raise EndpointError(
            f"judge.model: '{model}' is not served at {url}; it serves: {', '.join(map(str, served)) or 'nothing'}"
        )
    return Endpoint(url, model, key, _max_model_len(served[model]))


def check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            raise EndpointError(
                f"serve.port: {host}:{port} is already in use; pick another (serve.port=8001), or if a judgefleet "
                f"route already runs there, use it with judge.url=http://{host}:{port}/v1"
            ) from None


def connect_ray(cfg: JobConfig) -> bool:
    """Join the configured cluster, or start a local one; True if this call started Ray."""
    import ray

    if ray.is_initialized():
        return False
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    common = dict(logging_level=logging.WARNING, include_dashboard=False)
    if address and address != "local":
        ray.init(address=address, **common)
    else:
        # address="local": a new cluster of our own, never a stray one started on this machine.
        cores = os.cpu_count() or 1
        ray.init(address="local", num_cpus=cfg.ray.num_cpus or max(8, 4 * cores), **common)
    # Ray's own SIGTERM handler dumps a stack and exits; ours unwinds like Ctrl-C instead, so
    # a stopped pod or `kill` still deletes the route and shuts Ray down cleanly.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupt)
    return True


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def deploy_route(cfg: JobConfig, timeout_s: float = 900.0, app_name: Optional[str] = None,
                 route_prefix: str = "/") -> Endpoint:
    """Deploy the serve/ app (blocking until its replicas are up) and return its URL."""
    from ray import serve

    from serve.app import APP_NAME, api_key, build_app

    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    app_name = app_name or APP_NAME
    host, port = cfg.serve.host, cfg.serve.port
    # Per-request access logs would bury the job's own output; they stay in Ray's log files.
    quiet = {"log_level": "WARNING", "enable_access_log": False}
    direct = cfg.serve.front == "direct"
    # A direct front owns the port itself: Serve's proxy then stays off.
    serve.start(proxy_location="Disabled" if direct else cfg.serve.proxy_location,
                http_options={"host": host, "port": port}, logging_config=quiet)
    started = time.monotonic()
    serve.run(build_app(cfg.serve, app_name), name=app_name, route_prefix=None if direct else route_prefix,
              blocking=False, logging_config=quiet)
    if direct:
        route_prefix = "/"
    connect_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{connect_host}:{port}{route_prefix.rstrip('/')}/v1"
    key = api_key(cfg.serve)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    # The replicas come up one by one, and the ingress learns of them from the controller about
    # once a second (a count it fetched mid-deploy can arrive late): wait until it counts a member
    # up in every pool twice, a refresh apart, or the first requests could find "every member down".
    pools_url = url[: -len("/v1")] + "/pools"
    seen_up = 0
    while seen_up < 2:
        seen_up = seen_up + 1 if _routable(pools_url, headers) else 0
        if time.monotonic() - started > timeout_s:
            raise EndpointError(f"the judge route did not answer at {url} within {timeout_s:.0f} s")
        if seen_up < 2:
            time.sleep(1.5 if seen_up else 0.5)
    card = httpx.get(f"{url}/models/{cfg.judge.model}", headers=headers, timeout=30).json()
    return Endpoint(url, cfg.judge.model, key, _max_model_len(card), deployed=True)


def _routable(pools_url: str, headers: dict) -> bool:
    try:
        response = httpx.get(pools_url, headers=headers, timeout=10)
        pools = response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return False
    return isinstance(pools, dict) and bool(pools) and all(
        any(not member.get("down", True) for member in members) for members in pools.values()
    )


def remove_route(app_name: Optional[str] = None) -> None:
    from ray import serve

    from serve.app import APP_NAME

    try:
        serve.delete(app_name or APP_NAME)
    except Exception:  # noqa: BLE001 - best effort on the way out
        log.debug("could not delete the serve app", exc_info=True)


def _max_model_len(card: dict) -> Optional[int]:
    value = card.get("max_model_len") if isinstance(card, dict) else None
    return int(value) if isinstance(value, int) and value > 0 else None
