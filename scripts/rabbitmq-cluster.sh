#!/usr/bin/env bash
# A three-node RabbitMQ cluster on this one machine, for tests and trials of the cluster setup.
#
#   scripts/rabbitmq-cluster.sh start        # start (or complete) the cluster; idempotent
#   scripts/rabbitmq-cluster.sh urls         # the RUNBOX_AMQP_URL value listing every node
#   scripts/rabbitmq-cluster.sh leader NAME  # the node leading quorum queue or stream NAME
#   scripts/rabbitmq-cluster.sh kill N       # SIGKILL node N (1-3), as a crash would
#   scripts/rabbitmq-cluster.sh revive N     # start node N again after a kill; it rejoins
#   scripts/rabbitmq-cluster.sh restart [S]  # stop RabbitMQ on every node, wait S s (3), start it again
#   scripts/rabbitmq-cluster.sh stop         # stop every node and delete their data
#
# The nodes are runbox-c1..3@<host> with their own ports and directories (AMQP 5701-5703,
# distribution 25701-25703, Prometheus 15701-15703). They form a cluster of their own: the
# machine's default node (rabbit@<host>, port 5672) is neither joined nor touched. Each node
# enables only the Prometheus plugin, so its metrics can be scraped as in production.
# docs/deploy.md describes the same setup on real hosts.
set -euo pipefail

BASE="${RUNBOX_CLUSTER_DIR:-/var/lib/rabbitmq/runbox-cluster}"
HOST="$(hostname -s)"
NODES=(1 2 3)

name() { echo "runbox-c$1@$HOST"; }
amqp_port() { echo $((5700 + $1)); }
dist_port() { echo $((25700 + $1)); }
prom_port() { echo $((15700 + $1)); }
ctl() { local n=$1; shift; rabbitmqctl -q -n "$(name "$n")" "$@"; }
log() { printf '[cluster %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

running() { ctl "$1" ping >/dev/null 2>&1; }

start_node() {
    local n=$1 dir="$BASE/n$1"
    if running "$n"; then return 0; fi
    mkdir -p "$dir/mnesia" "$dir/log"
    echo '[rabbitmq_prometheus].' >"$dir/enabled_plugins"
    # Peer discovery from a fixed list, as docs/deploy.md sets up real hosts: blank nodes booted
    # together form one cluster by themselves (RabbitMQ serialises them with a lock).
    {
        echo "cluster_formation.peer_discovery_backend = classic_config"
        for m in "${NODES[@]}"; do echo "cluster_formation.classic_config.nodes.$m = $(name "$m")"; done
    } >"$dir/rabbitmq.conf"
    chown -R rabbitmq:rabbitmq "$BASE"
    log "starting $(name "$n") on port $(amqp_port "$n")"
    # Its own session, so the node outlives the shell (and test) that started it.
    env RABBITMQ_NODENAME="$(name "$n")" \
        RABBITMQ_NODE_PORT="$(amqp_port "$n")" \
        RABBITMQ_DIST_PORT="$(dist_port "$n")" \
        RABBITMQ_MNESIA_BASE="$dir/mnesia" \
        RABBITMQ_LOG_BASE="$dir/log" \
        RABBITMQ_PID_FILE="$dir/pid" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
        RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" \
        RABBITMQ_SERVER_START_ARGS="-rabbitmq_prometheus tcp_config [{port,$(prom_port "$n")}]" \
        setsid rabbitmq-server -detached >/dev/null 2>&1 </dev/null || true
}

await_node() {
    local n=$1 deadline=$((SECONDS + 120))
    until ctl "$n" await_startup >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then log "$(name "$n") did not start; see $BASE/n$n/log"; return 1; fi
        sleep 1
    done
}

in_cluster() {  # node N already lists node 1 as a running member
    ctl "$1" cluster_status --formatter json 2>/dev/null | grep -q "\"$(name 1)\""
}

start() {
    for n in "${NODES[@]}"; do start_node "$n"; done
    for n in "${NODES[@]}"; do await_node "$n"; done
    for n in "${NODES[@]:1}"; do
        if ! in_cluster "$n"; then
            log "joining $(name "$n") to $(name 1)"
            ctl "$n" stop_app >/dev/null 2>&1
            ctl "$n" reset >/dev/null 2>&1
            ctl "$n" join_cluster "$(name 1)" >/dev/null 2>&1
            ctl "$n" start_app >/dev/null 2>&1
        fi
    done
    for n in "${NODES[@]}"; do await_node "$n"; done
    log "cluster up: $(urls)"
}

urls() {
    local out=()
    for n in "${NODES[@]}"; do out+=("amqp://guest:guest@127.0.0.1:$(amqp_port "$n")/"); done
    local IFS=,
    echo "${out[*]}"
}

leader() {  # the node leading a quorum queue or stream, e.g. leader runbox.jobs.python
    local found
    for n in "${NODES[@]}"; do
        # Bounded: under heavy load a listing can stall; then ask the next node.
        found="$(timeout 30 rabbitmqctl -q -n "$(name "$n")" list_queues name leader --no-table-headers 2>/dev/null \
            | awk -v q="$1" '$1 == q { sub(/^runbox-c/, "", $2); sub(/@.*/, "", $2); print $2; exit }')" || true
        if [ -n "$found" ]; then echo "$found"; return 0; fi
    done
    return 1
}

kill_node() {
    local pid
    pid="$(cat "$BASE/n$1/pid" 2>/dev/null || true)"
    if [ -z "$pid" ]; then log "no pid for $(name "$1")"; return 1; fi
    log "SIGKILL $(name "$1") (pid $pid)"
    kill -KILL "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
}

revive() {
    start_node "$1"
    await_node "$1"
}

restart() {  # the whole broker down and up again, as a RabbitMQ restart is on one node
    for n in "${NODES[@]}"; do log "stop_app $(name "$n")"; ctl "$n" stop_app >/dev/null; done
    sleep "${1:-3}"
    # In parallel: a starting node waits for its peers' tables (the last one stopped must be back).
    local pids=()
    for n in "${NODES[@]}"; do ctl "$n" start_app >/dev/null 2>&1 & pids+=($!); done
    for pid in "${pids[@]}"; do wait "$pid" || true; done
    for n in "${NODES[@]}"; do await_node "$n"; done
    log "every node started again"
}

stop() {
    local pids=()
    for n in "${NODES[@]}"; do  # together: the data is deleted anyway, so no node need outlive another
        if running "$n"; then
            log "stopping $(name "$n")"
            { ctl "$n" stop >/dev/null 2>&1 || true; } & pids+=($!)
        fi
    done
    for pid in "${pids[@]}"; do wait "$pid"; done
    rm -rf "$BASE"
}

case "${1:-}" in
    start) start ;;
    urls) urls ;;
    leader) leader "$2" ;;
    kill) kill_node "$2" ;;
    revive) revive "$2" ;;
    restart) restart "${2:-3}" ;;
    stop) stop ;;
    *) echo "usage: $0 start|urls|leader QUEUE|kill N|revive N|restart [S]|stop" >&2; exit 2 ;;
esac
