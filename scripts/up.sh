#!/usr/bin/env bash
# Stand runbox up on this host: prepare it (scripts/setup.sh), then start one process with
# both roles (gateway and executor) against the local RabbitMQ and Docker engine.
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
nohup "$ROOT/.venv/bin/python" -m app serve >>"$LOG" 2>&1 &
echo $! >"$RUN_DIR/runbox.pid"
for _ in $(seq 1 240); do
    if curl -fsS "$URL/readyz" >/dev/null 2>&1; then
        cat <<MSG

runbox is up at $URL   (pid $(cat "$RUN_DIR/runbox.pid"), log $LOG)
  playground:  $URL/
  try it:      curl -s -XPOST $URL/api/v1/jobs -d '{"language":"python","source":"print(42)"}'
  follow it:   curl -N $URL/api/v1/jobs/<id>/events
  stop it:     kill \$(cat $RUN_DIR/runbox.pid)
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
