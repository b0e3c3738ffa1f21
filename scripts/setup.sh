#!/usr/bin/env bash
# Prepare a Debian 12 host for runbox, idempotently: Docker engine, gVisor, RabbitMQ,
# Prometheus, a base image when no registry answers, the Python environment and the
# sandbox images. Re-running it only starts what is stopped and builds what changed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${RUNBOX_VENV:-$ROOT/.venv}"
LOG_DIR="${RUNBOX_LOG_DIR:-/var/log/runbox}"
export DEBIAN_FRONTEND=noninteractive
mkdir -p "$LOG_DIR"

log() { printf '[setup %(%H:%M:%S)T] %s\n' -1 "$*"; }

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

APT_UPDATED=0
apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$APT_UPDATED" = 0 ]; then $SUDO apt-get update -qq; APT_UPDATED=1; fi
    log "installing ${missing[*]}"
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local deadline=$((SECONDS + $1)) what=$2; shift 2
    until "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then log "timed out waiting for $what"; return 1; fi
        sleep 0.5
    done
}

# --- Docker engine -----------------------------------------------------------------------
# An engine that already answers is used as it is; only a host without one gets docker.io.
if ! docker info >/dev/null 2>&1; then
    if ! command -v dockerd >/dev/null 2>&1; then apt_install docker.io; fi
fi

# --- gVisor -----------------------------------------------------------------------------------
# Debian 12's runsc (a December 2022 snapshot) stays registered as "runsc". runbox uses a
# current gVisor, Debian 13's, as "runbox-runsc" (RUNBOX_GVISOR_RUNTIME): its binary is taken
# from the trixie package with apt's own tools, through a package list kept apart from the
# system's (nothing of trixie is ever installed or upgraded), and run with --oci-seccomp so
# the project's seccomp profile is enforced inside gVisor too, and --host-uds=open so that a
# sandbox's agent can connect to the socket its executor offers in the one directory the
# sandbox mounts (RUNBOX_AGENT_SOCKET_DIR; the gate refuses any other mount of the host).
apt_install runsc iptables ca-certificates curl
GVISOR_DIR=/usr/local/lib/runbox
GVISOR_VERSION="0.0~20240729"
install_gvisor() {
    local have=""
    [ -x "$GVISOR_DIR/runsc" ] && have="$("$GVISOR_DIR/runsc" --version 2>/dev/null || true)"
    case "$have" in *"version $GVISOR_VERSION"*) return 0 ;; esac
    log "installing gVisor $GVISOR_VERSION (Debian 13's runsc) as $GVISOR_DIR/runsc"
    local state=/var/lib/runbox/apt-trixie work
    $SUDO mkdir -p "$state/lists/partial" "$state/cache/archives/partial" /etc/runbox
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
        | $SUDO tee /etc/runbox/trixie.list >/dev/null
    local apt_opts=(-o Dir::Etc::SourceList=/etc/runbox/trixie.list -o Dir::Etc::SourceParts=/dev/null
        -o Dir::State::Lists="$state/lists" -o Dir::Cache="$state/cache"
        -o Dir::Etc::Preferences=/dev/null -o Dir::Etc::PreferencesParts=/dev/null)
    $SUDO apt-get "${apt_opts[@]}" update -qq
    work="$(mktemp -d)"
    (cd "$work" && $SUDO apt-get "${apt_opts[@]}" download "runsc=$GVISOR_VERSION*" >/dev/null 2>&1 \
        || $SUDO apt-get "${apt_opts[@]}" download runsc >/dev/null)
    dpkg-deb -x "$work"/runsc_*.deb "$work/x"
    $SUDO install -D -m 0755 "$work/x/usr/bin/runsc" "$GVISOR_DIR/runsc"
    rm -rf "$work"
}
install_gvisor
DAEMON_JSON=/etc/docker/daemon.json
want_daemon_json() {
    python3 - "$DAEMON_JSON" "$GVISOR_DIR/runsc" <<'PY'
import json, sys, os
path, gvisor = sys.argv[1], sys.argv[2]
cfg = {}
if os.path.exists(path):
    with open(path) as f:
        text = f.read()
    cfg = json.loads(text) if text.strip() else {}
runtimes = cfg.setdefault("runtimes", {})
want = {
    "runsc": {"path": "/usr/bin/runsc", "runtimeArgs": ["--network=none"]},
    "runbox-runsc": {"path": gvisor, "runtimeArgs": ["--network=none", "--oci-seccomp", "--host-uds=open"]},
}
if all(runtimes.get(name) == spec for name, spec in want.items()):
    sys.exit(0)
runtimes.update(want)
os.makedirs(os.path.dirname(path), exist_ok=True)
with open(path, "w") as f:
    json.dump(cfg, f, indent=2)
sys.exit(10)
PY
}
set +e; want_daemon_json; changed=$?; set -e
if [ "$changed" != 0 ] && [ "$changed" != 10 ]; then log "could not write $DAEMON_JSON"; exit 1; fi

if ! docker info >/dev/null 2>&1; then
    log "starting dockerd"
    if command -v systemctl >/dev/null 2>&1 && systemctl is-system-running >/dev/null 2>&1; then
        $SUDO systemctl start docker
    else
        nohup dockerd >"$LOG_DIR/dockerd.log" 2>&1 &
    fi
    wait_for 60 "the Docker engine" docker info
elif [ "$changed" = 10 ]; then
    # SIGHUP reloads the runtimes; running containers are not touched (never restart dockerd).
    log "reloading dockerd for the gVisor runtimes"
    $SUDO kill -HUP "$(pidof dockerd)" || true
    sleep 1
fi
wait_for 30 "runbox-runsc in docker info" sh -c "docker info 2>/dev/null | grep -q runbox-runsc"

# --- RabbitMQ ---------------------------------------------------------------------------------
apt_install rabbitmq-server
# The default 1024 open files starves RabbitMQ's file handle cache once a few hundred quorum
# queues and streams exist, and it then hangs rather than failing. Debian's su applies no
# limits.d, but the start script sources rabbitmq-env.conf as shell.
ENV_CONF=/etc/rabbitmq/rabbitmq-env.conf
if ! grep -q "runbox: open files" "$ENV_CONF" 2>/dev/null; then
    printf '# runbox: open files\nulimit -n "$(ulimit -Hn)" 2>/dev/null || true\n' | $SUDO tee -a "$ENV_CONF" >/dev/null
fi
if ! rabbitmq-diagnostics -q check_port_connectivity >/dev/null 2>&1; then
    log "starting RabbitMQ"
    if command -v systemctl >/dev/null 2>&1 && systemctl is-system-running >/dev/null 2>&1; then
        $SUDO systemctl start rabbitmq-server
    else
        $SUDO rabbitmq-server -detached >/dev/null 2>&1 || true
    fi
    wait_for 90 "RabbitMQ" rabbitmq-diagnostics -q ping
    wait_for 60 "RabbitMQ's AMQP port" rabbitmq-diagnostics -q check_port_connectivity
fi

# --- Prometheus (the tests check scrape config, rules and dashboards against it) -------------
apt_install prometheus
# The package's own service is not wanted; tests start their own server.

# --- the Debian images the sandbox bases start from ------------------------------------------------
# Debian 12 for most toolchains and Debian 13 for the newer versions beside them. With no
# registry answering, each is bootstrapped from Debian's own packages with debootstrap.
bootstrap_image() {  # bootstrap_image SUITE IMAGE
    local suite=$1 image=$2 dir
    docker image inspect "$image" >/dev/null 2>&1 && return 0
    timeout 60 docker pull -q "$image" >/dev/null 2>&1 && return 0
    log "no registry answered; bootstrapping $image with debootstrap"
    apt_install debootstrap
    dir="$(mktemp -d)"
    debootstrap --variant=minbase "$suite" "$dir" http://deb.debian.org/debian >"$LOG_DIR/debootstrap-$suite.log" 2>&1
    tar -C "$dir" -c . | docker import - "$image" >/dev/null
    rm -rf "$dir"
}
bootstrap_image bookworm debian:bookworm-slim
bootstrap_image trixie debian:trixie-slim

# --- headless browser for the playground tests (Debian's Chromium and its matching driver) ------
apt_install chromium chromium-driver

# --- Python environment -------------------------------------------------------------------------
PY="${RUNBOX_PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    "$PY" -m venv "$VENV"
fi
stamp="$VENV/.runbox-installed"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    log "installing the runbox package and its development extras"
    "$VENV/bin/pip" install -q --upgrade pip >/dev/null
    "$VENV/bin/pip" install -q -e "$ROOT[dev,infra,load]"
    touch "$stamp"
fi

# --- sandbox images -----------------------------------------------------------------------------
# The shared bases first, then every language image, two at a time (see app/images.py).
# RUNBOX_BUILD_LANGUAGES limits the build to some unit keys (space separated).
log "building sandbox images"
# shellcheck disable=SC2086
"$VENV/bin/python" -m app.images build ${RUNBOX_BUILD_LANGUAGES:-}
log "setup done"
