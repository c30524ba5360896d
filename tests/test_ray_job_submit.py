"""`ray job submit` on a real Ray cluster of three nodes (cluster/dev-cluster.sh: a head and two CPU
judge nodes, each its own `ray start`, token authentication on as Ray ships it).

The README's commands, run as written (plus a few rows' worth of limits): the job runs on the
head, its judge replicas on the nodes that offer `judge_cpu`, its scores where output.dir says;
and a job pointed at a route already deployed on the cluster uses that route, deploying none.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO, ctrl_c_reaches_it, free_port

pytestmark = pytest.mark.integration

SCRIPT = REPO / "cluster" / "dev-cluster.sh"
CONFIG = "conf/examples/dev-fleet.yaml"
# A few short rows: what is tested is where things run, not how well the toy judge judges.
SMALL = ["dataset.limit=4", "sampling.max_tokens=24"]


def _cluster_env(state_dir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(
        PATH=os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", ""))),
        DEV_CLUSTER_DIR=str(state_dir),
        DEV_CLUSTER_PORT=str(free_port()),
        DEV_CLUSTER_DASHBOARD_PORT=str(free_port()),
        DEV_CLUSTER_JUDGE_CPUS="3",
    )
    return env


def _sh(env, *args, timeout=120, check=True) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, f"{args}: rc {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _exported(env_script: str) -> dict:
    """The variables `dev-cluster.sh env` prints as `export K=V` lines."""
    return dict(re.findall(r"^export (\w+)=(\S+)", env_script, flags=re.M))


def _ray_processes(state_dir: Path) -> list:
    out = subprocess.run(["pgrep", "-af", str(state_dir)], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "pgrep" not in line]


@pytest.fixture(scope="module")
def dev_cluster():
    # A short temp dir: Ray's socket paths under it must stay within the 107-byte limit of AF_UNIX.
    state_dir = Path(tempfile.mkdtemp(prefix="jf-dev-", dir="/tmp"))
    env = _cluster_env(state_dir)
    try:
        up = _sh(env, "bash", SCRIPT, "up", timeout=180)
        assert "3 nodes" in up.stdout
        env.update(_exported(_sh(env, "bash", SCRIPT, "env").stdout))
        assert env["RAY_AUTH_MODE"] == "token" and Path(env["RAY_AUTH_TOKEN_PATH"]).is_file()
        nodes = json.loads(_sh(env, sys.executable, "-c", (
            "import json, ray; ray.init(logging_level='ERROR'); "
            "print(json.dumps([{'id': n['NodeID'], 'resources': n['Resources']} for n in ray.nodes() if n['Alive']]))"
        )).stdout.strip().splitlines()[-1])
        judge_nodes = {n["id"] for n in nodes if "judge_cpu" in n["resources"]}
        head = {n["id"] for n in nodes if "node:__internal_head__" in n["resources"]}
        assert len(judge_nodes) == 2 and len(head) == 1
        yield SimpleNamespace(env=env, dir=state_dir, judge_nodes=judge_nodes, head=head.pop())
    finally:
        _sh(env, "bash", SCRIPT, "down", timeout=200, check=False)
        left = _ray_processes(state_dir)
        shutil.rmtree(state_dir, ignore_errors=True)
        assert not left, f"processes of the dev cluster outlived it: {left}"


def _submit(cluster, *args, timeout=600) -> str:
    """`ray job submit --working-dir . -- judgefleet score ...`, followed to its end; the job's id."""
    result = _sh(cluster.env, "ray", "job", "submit", "--working-dir", ".", "--", "judgefleet", "score", *args,
                 timeout=timeout, check=False)
    log = result.stdout + result.stderr
    found = re.search(r"Job '(raysubmit_\w+)' submitted successfully", log)
    assert found, log[-4000:]
    status = _job_status(cluster, found.group(1))
    assert status == "SUCCEEDED", f"{status}\n{log[-4000:]}"
    assert result.returncode == 0
    return log


def _job_status(cluster, job: str) -> str:
    """The Jobs API's own word on a job (the CLI's wording differs by state)."""
    return _sh(cluster.env, sys.executable, "-c", "import sys; from ray.job_submission import JobSubmissionClient; "
               "print(JobSubmissionClient().get_job_status(sys.argv[1]).value)", job).stdout.split()[-1]


def _alive_replicas(cluster) -> dict:
    """Serve replica actors alive on the cluster: replica id -> node id."""
    out = _sh(cluster.env, "ray", "list", "actors", "--filter", "state=ALIVE", "--format", "json", "--limit", "1000")
    actors = json.loads(out.stdout)
    return {a["name"].rsplit("#", 1)[-1]: a["node_id"] for a in actors
            if (a.get("name") or "").startswith("SERVE_REPLICA::")}


def _scores(out_dir: Path) -> list:
    shards = sorted((out_dir / "scores").glob("part-*.parquet"))
    assert shards, f"no shards under {out_dir}"
    return [row for shard in shards for row in pq.read_table(shard).to_pylist()]


def test_readme_job_submit_runs_replicas_on_the_judge_nodes(dev_cluster, tmp_path):
    out = tmp_path / "dev-fleet"
    log = _submit(dev_cluster, CONFIG, f"output.dir={out}", *SMALL)
    assert "deploying the judge route" in log and "samples scored" in log

    rows = _scores(out)
    assert len(rows) == 4 and all(r["errors"] is None and r["judge_backend"] == "llama.cpp" for r in rows)
    nodes = {r["judge_node"] for r in rows}
    # Every row was judged on a node offering judge_cpu; none on the head, where the job ran.
    assert nodes <= dev_cluster.judge_nodes, (nodes, dev_cluster.judge_nodes)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows"] == summary["scored"] == 4
    # The job's own route went with it: no replica is left on the cluster.
    assert _alive_replicas(dev_cluster) == {}


def test_job_uses_a_route_already_deployed_on_the_cluster(dev_cluster, tmp_path):
    port = free_port()
    # `judgefleet serve` on the head machine, joined to the cluster by RAY_ADDRESS (as a user would run it).
    route_log = tmp_path / "serve.log"
    with open(route_log, "w") as log_file:  # a file, not a pipe nobody reads once it is up
        route = subprocess.Popen(["judgefleet", "serve", CONFIG, f"serve.port={port}"], cwd=REPO, env=dev_cluster.env,
                                 stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
                                 preexec_fn=ctrl_c_reaches_it)
    try:
        deadline = time.monotonic() + 300
        while "judge route ready" not in route_log.read_text():
            assert time.monotonic() < deadline and route.poll() is None, route_log.read_text()[-3000:]
            time.sleep(1)
        replicas = _alive_replicas(dev_cluster)
        judges = {rid for rid, node in replicas.items() if node in dev_cluster.judge_nodes}
        assert len(judges) == 2  # one per judge node; the ingress sits on the head
        assert set(replicas.values()) - dev_cluster.judge_nodes == {dev_cluster.head}

        out = tmp_path / "on-route"
        log = _submit(dev_cluster, CONFIG, f"judge.url=http://127.0.0.1:{port}/v1", f"output.dir={out}", *SMALL)
        assert "deploying the judge route" not in log

        rows = _scores(out)
        assert len(rows) == 4 and all(r["errors"] is None for r in rows)
        assert {r["judge_replica"] for r in rows} <= judges
        # The route outlives the job, with the same replicas.
        assert _alive_replicas(dev_cluster) == replicas
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=10).status_code == 200
    finally:
        route.send_signal(signal.SIGINT)  # Ctrl-C, as a user stops it
        try:
            route.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(route.pid, signal.SIGKILL)
            route.wait()
    assert route.returncode == 130, route_log.read_text()[-3000:]  # stopped by Ctrl-C, as a shell reports it
    assert _alive_replicas(dev_cluster) == {}


def test_ray_job_stop_takes_the_route_down_and_a_rerun_resumes(dev_cluster, tmp_path):
    """`ray job stop` SIGTERMs the job and SIGKILLs it 3 s later: its route must not stay behind on
    the cluster (holding the judge nodes and the port), and the same submit straight after works."""
    out = tmp_path / "stopped"
    args = [CONFIG, f"output.dir={out}", "dataset.limit=6", "sampling.max_tokens=24"]
    submitted = _sh(dev_cluster.env, "ray", "job", "submit", "--no-wait", "--working-dir", ".", "--",
                    "judgefleet", "score", *args)
    job = re.search(r"Job '(raysubmit_\w+)' submitted successfully", submitted.stdout + submitted.stderr).group(1)
    deadline = time.monotonic() + 300
    while len(_alive_replicas(dev_cluster)) < 3:  # the route is up: an ingress and two judges
        assert time.monotonic() < deadline, "the job's route never came up"
        time.sleep(1)
    _sh(dev_cluster.env, "ray", "job", "stop", job, timeout=60)
    assert _job_status(dev_cluster, job) == "STOPPED"
    deadline = time.monotonic() + 90
    while _alive_replicas(dev_cluster):
        assert time.monotonic() < deadline, f"the stopped job's route is still up: {_alive_replicas(dev_cluster)}"
        time.sleep(2)

    log = _submit(dev_cluster, *args)
    assert "samples scored" in log
    rows = _scores(out)
    assert len(rows) == len({r["row_id"] for r in rows}) == 6 and all(r["errors"] is None for r in rows)
    assert _alive_replicas(dev_cluster) == {}
