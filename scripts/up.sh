#!/usr/bin/env bash
# Stand runbox up on this host: prepare it (scripts/setup.sh), start the Docker gate (the only
# process holding the engine's socket), then one process with both roles (gateway and
# executor) against the local RabbitMQ, reaching the engine only through the gate's socket.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"

export RUNBOX_HOST="${RUNBOX_HOST:-127.0.0.1}"
export RUNBOX_PORT="${RUNBOX_PORT:-8080}"
RUN_DIR="${RUNBOX_RUN_DIR:-/var/run/runbox}"
LOG="${RUNBOX_LOG_DIR:-/var/log/runbox}/runbox.log"
mkdir -p "$RUN_DIR" "$(dirname "$LOG")"
URL="http://$RUNBOX_HOST:$RUNBOX_PORT"

if [ -f "$RUN_DIR/runbox.pid" ] && kill -0 "$(cat "$RUN_DIR/runbox.pid")" 2>/dev/null; then
    echo "runbox is already running (pid $(cat "$RUN_DIR/runbox.pid")) at $URL"
    exit 0
fi
cd "$ROOT"

# The gate: its Docker API on a Unix socket, its /healthz, /readyz and /metrics on GATE_PORT.
GATE_PORT="${GATE_PORT:-8079}"
export RUNBOX_GATE_SOCKET="${RUNBOX_GATE_SOCKET:-$RUN_DIR/gate.sock}"
export RUNBOX_DOCKER_URL="unix://$RUNBOX_GATE_SOCKET"
if ! { [ -f "$RUN_DIR/gate.pid" ] && kill -0 "$(cat "$RUN_DIR/gate.pid")" 2>/dev/null; }; then
    RUNBOX_PORT="$GATE_PORT" nohup "$ROOT/.venv/bin/python" -m app gate >>"$(dirname "$LOG")/gate.log" 2>&1 &
    echo $! >"$RUN_DIR/gate.pid"
    for _ in $(seq 1 60); do
        curl -fsS "http://$RUNBOX_HOST:$GATE_PORT/readyz" >/dev/null 2>&1 && break
        sleep 0.5
    done
    if ! curl -fsS "http://$RUNBOX_HOST:$GATE_PORT/readyz" >/dev/null 2>&1; then
        echo "the Docker gate did not start; see $(dirname "$LOG")/gate.log" >&2
        exit 1
    fi
fi

nohup "$ROOT/.venv/bin/python" -m app serve >>"$LOG" 2>&1 &
echo $! >"$RUN_DIR/runbox.pid"
for _ in $(seq 1 240); do
    if curl -fsS "$URL/readyz" >/dev/null 2>&1; then
        cat <<MSG

runbox is up at $URL   (pid $(cat "$RUN_DIR/runbox.pid"), log $LOG)
  playground:  $URL/
  try it:      curl -s -XPOST $URL/api/v1/jobs -d '{"language":"python","source":"print(42)"}'
  follow it:   curl -N $URL/api/v1/jobs/<id>/events
  gate:        http://$RUNBOX_HOST:$GATE_PORT/metrics (Docker API on $RUNBOX_GATE_SOCKET)
  stop it:     kill \$(cat $RUN_DIR/runbox.pid) \$(cat $RUN_DIR/gate.pid)
MSG
        exit 0
    fi
    if ! kill -0 "$(cat "$RUN_DIR/runbox.pid")" 2>/dev/null; then
        echo "runbox exited during start; the end of $LOG:" >&2
        tail -20 "$LOG" >&2
        exit 1
    fi
    sleep 0.5
done
echo "runbox did not become ready in 120 s; see $LOG" >&2
exit 1
