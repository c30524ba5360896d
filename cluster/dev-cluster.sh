#!/usr/bin/env bash
# A development Ray cluster of several nodes on one machine: a head that schedules (job drivers, the
# Serve controller and ingress) and CPU judge nodes that offer what conf/examples/dev-fleet.yaml's
# judge asks for (the `judge_cpu` resource, the label judgefleet/node-kind=cpu). Every node is a real
# `ray start --block` with its own ports and its own temp dir, so the cluster never touches another
# Ray on the machine; `down` stops exactly the nodes `up` started (SIGTERM; each drains and exits).
#
#   cluster/dev-cluster.sh up        # head + DEV_CLUSTER_JUDGES CPU judge nodes; waits until all are alive
#   cluster/dev-cluster.sh status    # `ray status` of this cluster
#   cluster/dev-cluster.sh env       # the variables that point Ray's tools at it (eval "$(... env)")
#   cluster/dev-cluster.sh down
#
# Settings (environment): DEV_CLUSTER_DIR (state, logs, temp dirs; /tmp/judgefleet-dev),
# DEV_CLUSTER_PORT (the head's GCS port; 6390), DEV_CLUSTER_DASHBOARD_PORT (8266), DEV_CLUSTER_JUDGES (2),
# DEV_CLUSTER_JUDGE_CPUS (logical CPUs of each judge node; 4), DEV_CLUSTER_PORT_BASE (the first of the
# nodes' own port blocks, 1000 ports each; 20000), DEV_CLUSTER_OBJECT_STORE (bytes per node; 500 MB).
#
# Token authentication stays on, as Ray 2.60 ships it. The cluster's token is a file of its own
# ($DEV_CLUSTER_DIR/auth_token, made at `up`), not ~/.ray/auth_token; `env` prints what Ray's
# tools need to use it: RAY_AUTH_MODE=token, RAY_AUTH_TOKEN_PATH and RAY_ADDRESS.
set -euo pipefail

dir="${DEV_CLUSTER_DIR:-/tmp/judgefleet-dev}"
gcs_port="${DEV_CLUSTER_PORT:-6390}"
dashboard_port="${DEV_CLUSTER_DASHBOARD_PORT:-8266}"
judges="${DEV_CLUSTER_JUDGES:-2}"
judge_cpus="${DEV_CLUSTER_JUDGE_CPUS:-4}"
port_base="${DEV_CLUSTER_PORT_BASE:-20000}"
# Every node would size its object store from the machine's memory (30% each): a few nodes on one
# machine would claim most of /dev/shm between them.
object_store="${DEV_CLUSTER_OBJECT_STORE:-500000000}"
ray_bin="${RAY:-ray}"

export RAY_AUTH_MODE=token
export RAY_AUTH_TOKEN_PATH="$dir/auth_token"
# Ray writes the address of "the" local cluster to /tmp/ray/ray_current_cluster; naming the address
# everywhere keeps this cluster apart from any other one on the machine.
address="127.0.0.1:$gcs_port"

print_env() {
    echo "export RAY_AUTH_MODE=token"
    echo "export RAY_AUTH_TOKEN_PATH=$RAY_AUTH_TOKEN_PATH"
    # The GCS address serves both: a driver joins it, and Ray's Jobs CLI finds the dashboard
    # (http://127.0.0.1:$dashboard_port) from it.
    echo "export RAY_ADDRESS=$address"
}

# Each node: its own block of ports, so nodes never race for the defaults (dashboard agent 52365,
# metrics, worker ports 10002-19999). Node k (head = 0) uses port_base + 1000 k ... + 999.
node_ports() {
    local base=$((port_base + 1000 * $1))
    echo "--node-manager-port=$base --object-manager-port=$((base + 1))" \
         "--dashboard-agent-listen-port=$((base + 2)) --dashboard-agent-grpc-port=$((base + 3))" \
         "--runtime-env-agent-port=$((base + 4)) --metrics-export-port=$((base + 5))" \
         "--min-worker-port=$((base + 100)) --max-worker-port=$((base + 999))"
}

start_node() {  # name, ray start arguments...
    local name="$1"; shift
    # setsid: the node outlives this script and its terminal; `down` stops it by pid.
    setsid "$ray_bin" start --block --disable-usage-stats --temp-dir="$dir/tmp-$name" \
        --object-store-memory="$object_store" "$@" \
        >"$dir/$name.log" 2>&1 < /dev/null &
    echo "$! $name" >> "$dir/pids"
}

alive_nodes() {
    "$ray_bin" status --address="$address" 2>/dev/null | grep -c "^ [0-9]* node_" || true
}

up() {
    if [ -s "$dir/pids" ]; then
        echo "a dev cluster is already up (pids in $dir/pids); run '$0 down' first" >&2
        exit 1
    fi
    mkdir -p "$dir"
    : > "$dir/pids"
    [ -s "$RAY_AUTH_TOKEN_PATH" ] || python3 -c "import secrets; print(secrets.token_hex(32))" > "$RAY_AUTH_TOKEN_PATH"
    chmod 600 "$RAY_AUTH_TOKEN_PATH"
    # shellcheck disable=SC2046
    start_node head --head --port="$gcs_port" --dashboard-port="$dashboard_port" --dashboard-host=127.0.0.1 \
        --ray-client-server-port=$((gcs_port + 1)) --num-cpus=2 --resources='{"head": 1}' \
        --labels=judgefleet/node-kind=head $(node_ports 0)
    local nodes=$((judges + 1))
    for _ in $(seq 1 60); do
        "$ray_bin" status --address="$address" >/dev/null 2>&1 && break
        sleep 1
    done
    for k in $(seq 1 "$judges"); do
        # shellcheck disable=SC2046
        start_node "cpu-judge-$k" --address="$address" --num-cpus="$judge_cpus" --resources='{"judge_cpu": 1}' \
            --labels=judgefleet/node-kind=cpu $(node_ports "$k")
    done
    local alive=0
    for _ in $(seq 1 90); do
        alive=$(alive_nodes)
        if [ "$alive" -ge "$nodes" ]; then
            echo "dev cluster up: $alive nodes (head + $judges CPU judge nodes); logs in $dir"
            print_env
            return 0
        fi
        sleep 1
    done
    echo "dev cluster: $alive of $nodes nodes alive after 90 s; see the logs in $dir (stopping it)" >&2
    down
    exit 1
}

down() {
    [ -s "$dir/pids" ] || { echo "no dev cluster is up (no $dir/pids)"; return 0; }
    # Worker nodes first, the head last; each `ray start --block` stops its node on SIGTERM.
    local pids
    pids=$(tac "$dir/pids" | cut -d' ' -f1)
    for pid in $pids; do
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
        kill -KILL -- "-$pid" 2>/dev/null || true   # what did not drain in 40 s (its session's processes)
    done
    rm -f "$dir/pids"
    echo "dev cluster down"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) "$ray_bin" status --address="$address" ;;
    env) print_env ;;
    *) echo "usage: $0 up|status|env|down" >&2; exit 2 ;;
esac
