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

A job's own route listens on any free port unless `serve.port` says where (`standing=True`, for
`judgefleet serve`: DEFAULT_PORT). A local Ray this owner starts ends with its driver, whatever
ends the driver: Ray's workers (the replicas) outlive a killed driver by minutes, holding their
ports and answering, so a watchdog process (`_reap_when_orphaned`) kills them within seconds.

Readiness is read from the route's typed `GET /pools` (`serve.wire`); the endpoint's model card
says its context length and whether it is judgefleet's route (lineage, list prompts, member
preference) or just any OpenAI server.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import httpx

from serve import wire
from serve.config import APP_NAME, DEFAULT_PORT, ModelConfig, ServeConfig, api_key

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
                 timeout_s: float = 900.0, standing: bool = False):
        # standing: a route that stays up for other clients (`judgefleet serve`); with serve.port
        # unset it listens on DEFAULT_PORT, where they expect it, not on any free port.
        self.serve_config = serve_config
        self._standing = standing
        self._any_port = False  # the port was picked here, not configured: another may replace it
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
        self._reaper: Optional[subprocess.Popen] = None

    @property
    def port(self) -> Optional[int]:
        """Where the deployed route listens (known after `check`)."""
        return self.serve_config.port

    # -- before Ray ---------------------------------------------------------------------------
    def check(self, timeout_s: float = 10.0) -> Optional[Endpoint]:
        """The checks that need no Ray: an external URL answers, takes the key and serves the
        model (returns it, with what its card states); or the port the route will listen on is free."""
        if self.url:
            self._external = self._check_external(timeout_s)
        else:
            self._resolve_port()
        self._checked = True
        return self._external

    def _resolve_port(self) -> None:
        cfg = self.serve_config
        if cfg.port is None and not self._standing and self._starts_own_cluster():
            # Only this job talks to its route: any free port does, and none is shared with a
            # run before or after it. (A cluster joined may already run Serve on its own port.)
            self.serve_config, self._any_port = replace(cfg, port=free_port(cfg.host)), True
            return
        if cfg.port is None:
            self.serve_config = cfg = replace(cfg, port=DEFAULT_PORT)
        check_port_free(cfg.host, cfg.port)

    def _starts_own_cluster(self) -> bool:
        ray = sys.modules.get("ray")  # not imported yet: not connected yet
        if ray is not None and ray.is_initialized():
            return False
        address = self._ray_address or os.environ.get("RAY_ADDRESS")
        return not address or address == "local"

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
            self._stop_reaper()

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
            self._start_reaper()
        self._connected = True

    def _start_reaper(self) -> None:
        """A watchdog that ends this driver's processes when the driver ends without doing so.

        Ray fate-shares its GCS and raylet with the driver, but not the workers: after a SIGKILL
        (or the OOM killer) the replicas live on for a minute or two, a direct-front ingress still
        listening. The watchdog is the driver's child in a session of its own (a signal to the
        driver's process group spares it); it notes the driver's descendants every half second,
        and once its parent is gone, kills them. On a clean exit the owner stops it first.
        """
        if sys.platform == "win32":
            return
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (str(Path(__file__).resolve().parents[1]),
                                                                         os.environ.get("PYTHONPATH")))))
        code = f"from serve.endpoint import _reap_when_orphaned; _reap_when_orphaned({os.getpid()})"
        try:
            # Its stdin is a pipe whose other end only this process holds: it closes when we end.
            self._reaper = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True,
                                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL)
        except OSError as e:  # a job without its watchdog still runs; only a killed driver leaves strays
            log.warning("could not start the watchdog that ends Ray's processes with this job: %s", e)

    def _stop_reaper(self) -> None:
        if self._reaper is not None:
            reaper, self._reaper = self._reaper, None
            reaper.terminate()  # SIGTERM: stand down, Ray has shut down itself
            _quietly(lambda: reaper.wait(timeout=5), "the watchdog did not stop")
            _quietly(reaper.stdin.close, "closing the watchdog's pipe")

    def _deploy(self) -> Endpoint:
        from serve.app import build_app

        serve = _serve()
        if self._any_port and not port_is_free(self.serve_config.host, self.serve_config.port):
            # Taken since `check` (a free port is only a guess until bound): take another.
            self.serve_config = replace(self.serve_config, port=free_port(self.serve_config.host))
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
            self._previous_sigterm = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum, frame):
        # On a cluster we joined, the route outlives this process unless deleted: `ray job stop`
        # sends SIGTERM and SIGKILLs 3 s later (Ray's RAY_JOB_STOP_WAIT_TIME_S), too soon for the
        # unwinding below to reach __exit__. Ask Serve's controller to delete it now, without
        # waiting; the controller finishes the teardown whether or not this process lives.
        if self._deployed and not self._own_cluster:
            _quietly(lambda: _serve().delete(self.app_name, _blocking=False), "could not delete the judge route")
        raise KeyboardInterrupt

    def _restore_sigterm(self) -> None:
        if self._previous_sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None


def check_port_free(host: str, port: Optional[int], wait_s: float = 10.0) -> None:
    """EndpointError when `port` is taken (None: a port is picked when the route is deployed).

    A run started straight after a killed one finds the port held for a second or two, until the
    killed run's watchdog has ended its ingress: wait that long before calling the port taken."""
    if port is None:
        return
    deadline = time.monotonic() + wait_s
    while not port_is_free(host, port) and time.monotonic() < deadline:
        time.sleep(0.5)
    if not port_is_free(host, port):
        raise EndpointError(
            f"serve.port: {host}:{port} is already in use; pick another (serve.port=8001), leave serve.port unset "
            f"for a job's own route, or if a judgefleet route already runs there, use it with "
            f"judge.url=http://{host}:{port}/v1"
        )


def port_is_free(host: str, port: int) -> bool:
    # SO_REUSEADDR as servers bind, but not SO_REUSEPORT: a listener that shares the port with
    # others (the direct front's does) counts as taking it.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str) -> int:
    """A port free on `host` now, from the kernel's ephemeral range (Ray's workers take theirs
    from 10002-19999, below it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _reap_when_orphaned(driver: int, poll_s: float = 0.5) -> None:
    """The watchdog's body (see `JudgeEndpoint._start_reaper`): while `driver` is this process's
    parent, note its descendants; once it is not, SIGKILL those still running. SIGTERM to the
    watchdog stands it down.

    The end of the driver shows at once as the end of stdin (a pipe only the driver holds), and in
    any case within `poll_s` as a new parent. SIGKILL, not SIGTERM: the driver is gone, Ray's GCS
    and raylet with it, so its workers have nothing left to finish, and a replica shutting down
    gracefully would hold its port (and answer on it) while the next run starts.
    """
    import psutil

    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    me = os.getpid()
    seen, looked, watching_pipe = {}, 0.0, True
    try:
        parent = psutil.Process(driver)
    except psutil.Error:
        return
    while os.getppid() == driver:
        if time.monotonic() - looked >= poll_s:
            looked = time.monotonic()
            try:
                # A psutil.Process knows its start time: is_running() is false for a pid since reused.
                seen = {pid: p for pid, p in seen.items() if p.is_running()}
                seen.update((p.pid, p) for p in parent.children(recursive=True) if p.pid != me and p.pid not in seen)
            except psutil.Error:
                pass
        if watching_pipe and select.select([sys.stdin], [], [], poll_s)[0]:
            watching_pipe = bool(os.read(sys.stdin.fileno(), 1024))  # end of file: the driver is ending
        elif not watching_pipe:
            time.sleep(0.02)  # until the kernel gives this process its new parent
    alive = {pid: p for pid, p in seen.items() if p.is_running()}
    for p in list(alive.values()):  # what they started since the last look (e.g. a replica's engine)
        try:
            alive.update((c.pid, c) for c in p.children(recursive=True) if c.pid != me)
        except psutil.Error:
            pass
    for p in alive.values():
        _quietly(p.kill, "kill")


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


def llama_server(binary: str, model: str, n_ctx_per_slot: int, parallel: int, alias: str, **options):
    """llama.cpp's own C++ `llama-server` on `model`, `parallel` slots, continuous batching, in a
    child process, as a context manager yielding (base URL, process): a peer `judgefleet bench`
    measures. `options`: threads, extra (its own flags), log_path, timeout_s."""
    from serve.llama_cpp_python_server import llama_server as server

    return server(binary, model, n_ctx_per_slot, parallel, alias, **options)


def vllm_server(model: str, alias: str, max_model_len: int, max_num_seqs: int, **options):
    """vLLM's own OpenAI server on `model` (the bundled judge's Hugging Face copy, or `hf_model`),
    in a child process, as a context manager yielding (base URL, process): a peer `judgefleet
    bench` measures. `options`: seed, hf_model, log_path, timeout_s."""
    from serve.llama_cpp_python_server import vllm_server as server

    return server(model, alias, max_model_len, max_num_seqs, **options)


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


def process_tree_rss(pids) -> int:
    """`serve.process_memory.tree_rss` for jobs/: resident bytes of processes and their descendants."""
    from serve.process_memory import tree_rss

    return tree_rss(pids)


def process_tree_uss_pss(pids) -> dict:
    """`serve.process_memory.tree_uss_pss` for jobs/: unique and proportional bytes of a process tree."""
    from serve.process_memory import tree_uss_pss

    return tree_uss_pss(pids)


def quantize_ladder(source, types, out_dir, on_step=None) -> list:
    """`serve.quantize.ladder` for jobs/: one GGUF per llama.cpp type from a 16-bit GGUF (None: the
    bundled judge, expanded), as `LadderFile`s. A source or type the user can fix raises ValueError
    (`serve.quantize.QuantizeError`, one line); anything else that fails is another error."""
    from serve.quantize import ladder

    return ladder(source, types, out_dir, on_step)
