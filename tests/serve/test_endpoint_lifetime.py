"""What a job's endpoint owner leaves behind: no fixed port for a job's own route, and no process
outliving a driver that was killed (SIGKILL of the driver or of its process group).

No Ray here: the driver is a small Python process that starts the owner's watchdog and a tree of
children the way Ray does (a worker in a session of its own, with a child of its own).
`tests/jobs/commands/test_kill_rerun.py` does the same with a real score job."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

import serve.endpoint as endpoint
from serve.config import ServeConfig
from serve.endpoint import EndpointError, JudgeEndpoint
from tests.conftest import REPO, free_port


def test_a_jobs_own_route_takes_a_free_port(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    # As in a job's own process, where Ray is not connected yet (the test session's Ray may be).
    monkeypatch.setitem(sys.modules, "ray", None)
    cfg = ServeConfig()
    owner = JudgeEndpoint(cfg, "gemma3-270m")
    owner.check()
    other = JudgeEndpoint(cfg, "gemma3-270m")
    other.check()
    assert owner.port and other.port and 8000 not in (owner.port, other.port)
    assert cfg.port is None  # the caller's config is left as it is


def test_a_standing_route_or_a_joined_cluster_keeps_the_well_known_port(monkeypatch):
    port = free_port()
    monkeypatch.setattr(endpoint, "DEFAULT_PORT", port)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    standing = JudgeEndpoint(ServeConfig(), "gemma3-270m", standing=True)  # `judgefleet serve`
    standing.check()
    assert standing.port == port
    joined = JudgeEndpoint(ServeConfig(), "gemma3-270m", ray_address="ray://head:10001")  # Serve may run there
    joined.check()
    assert joined.port == port
    explicit = JudgeEndpoint(ServeConfig(port=port), "gemma3-270m")
    with socket_on(port), pytest.raises(EndpointError, match=f"serve.port: 127.0.0.1:{port} is already in use"):
        explicit.check()


def test_a_port_freed_within_seconds_is_waited_for_not_called_taken():
    """A re-run straight after a killed run: the killed run's ingress holds the port until its
    watchdog ends it, a second or two later."""
    import threading

    port = free_port()
    holder = socket_on(port).__enter__()
    threading.Timer(1.5, holder.__exit__).start()
    started = time.monotonic()
    endpoint.check_port_free("127.0.0.1", port)
    assert 1.0 < time.monotonic() - started < 8
    with socket_on(port), pytest.raises(EndpointError, match="already in use"):
        endpoint.check_port_free("127.0.0.1", port, wait_s=1.0)


class socket_on:
    def __init__(self, port):
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.sock.close()


# A driver as Ray's leaves things: a worker in a session of its own (Ray's workers have their own
# process groups, so a signal to the driver's group misses them) that has a child of its own.
DRIVER = textwrap.dedent("""
    import json, subprocess, sys, time
    from serve.config import ServeConfig
    from serve.endpoint import JudgeEndpoint

    owner = JudgeEndpoint(ServeConfig(), "m")
    owner._start_reaper()
    worker = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                               "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
                               "time.sleep(600)"], start_new_session=True)
    time.sleep(2)  # the watchdog looks every half second
    reaper = owner._reaper.pid
    if sys.argv[1] == "stand-down":
        owner._stop_reaper()
    print(json.dumps({"reaper": reaper, "worker": worker.pid}), flush=True)
    time.sleep(600)
""")


def start_driver(mode):
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, mode], cwd=REPO, stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        pids = json.loads(driver.stdout.readline())
    except ValueError:
        driver.kill()
        raise
    tree = [psutil.Process(pids["worker"]), *psutil.Process(pids["worker"]).children(recursive=True)]
    assert len(tree) == 2
    return driver, pids, tree


def gone_within(processes, seconds):
    _, alive = psutil.wait_procs(processes, timeout=seconds)
    for p in alive:  # do not leave them behind whatever the outcome
        p.kill()
    return not alive


@pytest.mark.parametrize("how", ["driver", "group"])
def test_nothing_outlives_a_killed_driver(how):
    driver, pids, tree = start_driver("watch")
    reaper = psutil.Process(pids["reaper"])
    if how == "group":
        os.killpg(driver.pid, signal.SIGKILL)  # the driver's group: the watchdog, in a session of its own, stays
    else:
        driver.kill()
    driver.wait()
    started = time.monotonic()
    assert gone_within(tree, 10), "the driver's worker outlived it"
    assert time.monotonic() - started < 5
    assert gone_within([reaper], 5)  # and the watchdog ends once it is done


def test_a_stood_down_watchdog_ends_nothing():
    """On a clean exit the owner has stopped Ray itself; the watchdog goes without touching anything."""
    driver, pids, tree = start_driver("stand-down")
    assert pids["reaper"] is not None and not psutil.pid_exists(pids["reaper"])  # stopped and waited for
    driver.kill()
    driver.wait()
    time.sleep(2)
    survived = [p.is_running() for p in tree]
    for p in tree:
        p.kill()
    assert all(survived)
