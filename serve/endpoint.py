"""The one owner of a judge endpoint: Ray joined or started, the route deployed (or an external
OpenAI URL checked), readiness awaited, and everything it started torn down on exit.

    owner = JudgeEndpoint(serve_cfg, model="gemma3-270m")      # deploy serve/'s route
    owner = JudgeEndpoint(serve_cfg, model="m", url="http://gpu-box:8000/v1")   # use a server
    owner.check()           # what fails without Ray fails first: the URL, the model, the port
    with owner as endpoint:  # -> Endpoint(url, model, api_key, max_model_len, route, deployed)
        ...

`score` and `serve` (and so bench's judgefleet method), the benchmarks and the test fixtures all
go through this class, so starting Ray, installing the SIGTERM handler, deploying, waiting and
deleting are written once.
Readiness is read from the route's typed `GET /pools` (`serve.wire`); the endpoint's model card
says its context length and whether it is judgefleet's route (lineage, list prompts, member
preference) or just any OpenAI server.
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

from serve import wire
from serve.config import APP_NAME, ModelConfig, ServeConfig, api_key

log = logging.getLogger(__name__)


class EndpointError(Exception):
    """The judge endpoint cannot be reached, does not serve the model, or cannot be deployed;
    the message names the setting and what to do."""


@dataclass(frozen=True)
class Endpoint:
    url: str  # the OpenAI API base, ending in /v1
    model: str
    api_key: Optional[str]
    max_model_len: Optional[int]  # the judge's context in tokens, when the endpoint states it
    # judgefleet's route (its model card says so): answers carry lineage, and a member can be
    # preferred for a request, so jobs send each row's verdict steps as one list-prompt request.
    route: bool
    deployed: bool  # deployed by this owner (and deleted when it exits)


class JudgeEndpoint:
    def __init__(self, serve_config: ServeConfig, model: str, *, url: Optional[str] = None,
                 api_key_setting: Optional[str] = None, ray_address: Optional[str] = None,
                 ray_num_cpus: Optional[int] = None, app_name: str = APP_NAME, route_prefix: str = "/",
                 timeout_s: float = 900.0):
        self.serve_config = serve_config
        self.model = model
        self.url = url.rstrip("/") if url else None
        self._api_key_setting = api_key_setting
        self._ray_address = ray_address
        self._ray_num_cpus = ray_num_cpus
        self.app_name = app_name
        self._route_prefix = route_prefix
        self._timeout_s = timeout_s
        self._external: Optional[Endpoint] = None
        self._checked = False
        # Whether this owner connected to Ray, started a cluster of its own (its Serve ends with it),
        # started Serve, and deployed the app: it undoes exactly those on exit.
        self._connected = self._own_cluster = self._started_serve = self._deployed = False
        self._previous_sigterm = None

    # -- before Ray ---------------------------------------------------------------------------
    def check(self, timeout_s: float = 10.0) -> None:
        """The checks that need no Ray: an external URL answers, takes the key and serves the
        model; or the port the route will listen on is free."""
        if self.url:
            self._external = self._check_external(timeout_s)
        else:
            check_port_free(self.serve_config.host, self.serve_config.port)
        self._checked = True

    def _check_external(self, timeout_s: float) -> Endpoint:
        url, model = self.url, self.model
        key = api_key(self._api_key_setting, "OPENAI_API_KEY")
        try:
            response = httpx.get(url + "/models", headers=wire.auth_headers(key), timeout=timeout_s)
        except httpx.HTTPError as e:
            raise EndpointError(
                f"judge.url: cannot reach {url} ({type(e).__name__}: {e}); start the server or fix the URL "
                "(it is the API base, usually ending in /v1)"
            ) from None
        if response.status_code in (401, 403):
            raise EndpointError(f"judge.url: {url} refused the API key (HTTP {response.status_code}); "
                                "set judge.api_key or $JUDGEFLEET_API_KEY")
        if response.status_code >= 400:
            raise EndpointError(f"judge.url: GET {url}/models answered HTTP {response.status_code}: "
                                f"{wire.error_message(response.text, response.reason_phrase)}")
        try:
            cards = response.json().get("data") or []
        except (ValueError, AttributeError):
            raise EndpointError(f"judge.url: {url}/models did not answer OpenAI JSON; is this the API base (.../v1)?") from None
        served = {c.get("id"): c for c in cards if isinstance(c, dict)}
        if model not in served:
            raise EndpointError(
                f"judge.model: '{model}' is not served at {url}; it serves: {', '.join(map(str, served)) or 'nothing'}"
            )
        card = served[model]
        return Endpoint(url, model, key, wire.max_model_len(card), wire.is_route_card(card), deployed=False)

    # -- the context ----------------------------------------------------------------------------
    def __enter__(self) -> Endpoint:
        if not self._checked:
            self.check()
        try:
            self._connect_ray()
            self._install_sigterm()  # after Ray: ray.init puts in a handler of its own
            if self._external is not None:
                return self._external
            return self._deploy()
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def __exit__(self, *exc) -> None:
        try:
            if self._deployed:
                self._deployed = False
                _quietly(lambda: _serve().delete(self.app_name), "could not delete the judge route")
            if self._started_serve and not self._own_cluster:  # a cluster of our own takes its Serve with it
                _quietly(lambda: _serve().shutdown(), "could not shut Serve down")
            self._started_serve = False
            if self._connected:
                self._connected = self._own_cluster = False
                import ray

                ray.shutdown()
        finally:
            self._restore_sigterm()

    # -- helpers --------------------------------------------------------------------------------
    def _connect_ray(self) -> None:
        """Join the configured cluster, or start a local one."""
        import ray

        if ray.is_initialized():
            return
        address = self._ray_address or os.environ.get("RAY_ADDRESS")
        common = dict(logging_level=logging.WARNING, include_dashboard=False)
        if address and address != "local":
            ray.init(address=address, **common)
        else:
            self._own_cluster = True
            # address="local": a new cluster of our own, never a stray one started on this machine.
            # Replicas block on their engine rather than on a CPU: more logical CPUs than cores.
            cores = os.cpu_count() or 1
            ray.init(address="local", num_cpus=self._ray_num_cpus or max(8, 4 * cores), **common)
        self._connected = True

    def _deploy(self) -> Endpoint:
        from serve.app import build_app

        serve = _serve()
        cfg = self.serve_config
        logging.getLogger("ray.serve").setLevel(logging.WARNING)
        # Per-request access logs would bury the job's own output; they stay in Ray's log files.
        quiet = {"log_level": "WARNING", "enable_access_log": False}
        direct = cfg.front == "direct"
        self._started_serve = not _serve_running()
        # A direct front owns the port itself: Serve's proxy then stays off.
        serve.start(proxy_location="Disabled" if direct else cfg.proxy_location,
                    http_options={"host": cfg.host, "port": cfg.port}, logging_config=quiet)
        started = time.monotonic()
        prefix = "/" if direct else self._route_prefix
        serve.run(build_app(cfg, self.app_name), name=self.app_name, route_prefix=None if direct else prefix,
                  blocking=False, logging_config=quiet)
        self._deployed = True
        host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::") else cfg.host
        base = f"http://{host}:{cfg.port}{prefix.rstrip('/')}"
        key = api_key(cfg.api_key)
        self._wait_routable(base, key, started)
        card = httpx.get(f"{base}{wire.MODELS_PATH}/{self.model}", headers=wire.auth_headers(key), timeout=30).json()
        return Endpoint(base + "/v1", self.model, key, wire.max_model_len(card), route=True, deployed=True)

    def _wait_routable(self, base: str, key: Optional[str], started: float) -> None:
        """Until the route counts a member up in every pool twice, a refresh apart.

        Replicas come up one by one, and the ingress learns of them from Serve's controller about
        once a second (a count fetched mid-deploy can arrive late): one sighting is not enough,
        or the first requests could find "every member down".
        """
        seen_up = 0
        while seen_up < 2:
            seen_up = seen_up + 1 if self._pools_up(base + wire.POOLS_PATH, key) else 0
            if time.monotonic() - started > self._timeout_s:
                raise EndpointError(f"the judge route did not answer at {base}/v1 within {self._timeout_s:.0f} s; "
                                    "see the replicas' logs under /tmp/ray/session_latest/logs/serve")
            if seen_up < 2:
                time.sleep(1.5 if seen_up else 0.5)

    @staticmethod
    def _pools_up(pools_url: str, key: Optional[str]) -> bool:
        try:
            response = httpx.get(pools_url, headers=wire.auth_headers(key), timeout=10)
            return response.status_code == 200 and wire.every_pool_up(wire.parse_pools(response.json()))
        except (httpx.HTTPError, ValueError):
            return False

    def _install_sigterm(self) -> None:
        # Ray's own SIGTERM handler dumps a stack and exits; ours unwinds like Ctrl-C instead, so
        # a stopped pod or `kill` still writes what was judged, deletes the route and stops Ray.
        if threading.current_thread() is threading.main_thread():
            self._previous_sigterm = signal.signal(signal.SIGTERM, _raise_interrupt)

    def _restore_sigterm(self) -> None:
        if self._previous_sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None


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


async def start_in_process(model: ModelConfig, member: str = "in-process"):
    """A model replica in this process, no Ray, no HTTP (the ceiling `judgefleet bench` measures):
    it answers `completions(body)` / `chat(body)` / `tokenize(body)` with {"status", "body"} and
    has a `card()`; its owner calls `await server.engine.shutdown()`."""
    from dataclasses import asdict

    from serve.model_server import ModelServer

    return await ModelServer.create(asdict(model), member)


def llama_cpp_python_server(model: str, n_ctx: int, alias: str, *options: str, timeout_s: float = 300):
    """llama-cpp-python's own OpenAI server on `model`, in a child process, as a context manager
    yielding (base URL, process): the lm-buddy article's judge server, the bench's baseline."""
    from serve.llama_cpp_python_server import llama_cpp_python_server as server

    return server(model, n_ctx, alias, *options, timeout_s=timeout_s)


def _serve():
    from ray import serve

    return serve


def _serve_running() -> bool:
    """Whether Serve's controller already runs in this cluster (then it is not ours to shut down)."""
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    try:
        ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
        return True
    except ValueError:
        return False


def _quietly(action, what: str) -> None:
    try:
        action()
    except Exception:  # noqa: BLE001 - best effort on the way out
        log.debug(what, exc_info=True)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def process_tree_rss(pids) -> int:
    """`serve.process_memory.tree_rss` for jobs/: resident bytes of processes and their descendants."""
    from serve.process_memory import tree_rss

    return tree_rss(pids)


def quantize_ladder(source, types, out_dir, on_step=None) -> list:
    """`serve.quantize.ladder` for jobs/: one GGUF per llama.cpp type from a 16-bit GGUF (None: the
    bundled judge, expanded), as `LadderFile`s. A source or type the user can fix raises ValueError
    (`serve.quantize.QuantizeError`, one line); anything else that fails is another error."""
    from serve.quantize import ladder

    return ladder(source, types, out_dir, on_step)
