#!/usr/bin/env bash
# Bring the development fleet of cluster/dev-fleet.yaml (several Ray nodes on this machine) up or down.
#   cluster/dev-cluster.sh up      # head + 2 CPU judge nodes + 1 judge_gpu node; waits for them
#   cluster/dev-cluster.sh status
#   cluster/dev-cluster.sh down    # stops every Ray process this machine's `ray start` began
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
config="${JUDGEFLEET_DEV_FLEET:-$here/dev-fleet.yaml}"
nodes="${JUDGEFLEET_DEV_NODES:-4}"   # head + the min_workers of dev-fleet.yaml

case "${1:-}" in
  up)
    RAY_FAKE_CLUSTER=1 ray start --head --num-cpus=2 --autoscaling-config="$config"
    for _ in $(seq 1 60); do
      alive=$(python -c "import ray; ray.init(address='auto', logging_level='ERROR'); print(sum(n['Alive'] for n in ray.nodes()))")
      [ "$alive" -ge "$nodes" ] && { echo "dev fleet up: $alive nodes"; exit 0; }
      sleep 2
    done
    echo "dev fleet: only $alive of $nodes nodes after 120 s; see 'ray status'" >&2
    exit 1
    ;;
  status)
    ray status
    ;;
  down)
    ray stop
    ;;
  *)
    echo "usage: $0 up|status|down" >&2
    exit 2
    ;;
esac
