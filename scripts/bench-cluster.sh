#!/usr/bin/env bash
# Cluster benchmark (docs/CLUSTER.md): how soon a change committed on the
# writer is visible through a replica's mount. One writer and one replica
# on this machine share a throwaway PostgreSQL (unix socket) and the
# writer's objects; N files are created on the writer one at a time, and
# each is stat'ed through the replica until it appears. Reported: p50,
# p99 and max, with Redis hints and without (polling only).
#
# Targets (issue 15): with Redis, p99 <= 100 ms; without, p99 <= the poll
# interval + 50 ms.
#
# Needs root, fusermount3, python3, PostgreSQL's server binaries and
# redis-server (scripts/install-deps.sh installs them).
#
# Environment knobs (defaults in brackets):
#   BENCH_DIR        parent of the temp dir [/var/tmp]
#   BENCH_CHANGES    changes measured per run [1000]
#   BENCH_POLL_MS    the replica's poll interval [1000]
#   BENCH_NO_BUILD   set to 1 to skip `cargo build --release`
#   ARTFS_BIN        artfs binary [target/release/artfs]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CHANGES=${BENCH_CHANGES:-1000}
POLL_MS=${BENCH_POLL_MS:-1000}

die() { echo "bench-cluster: $*" >&2; exit 1; }
[[ $(id -u) == 0 ]] || die "run as root (mounting needs it)"
for t in fusermount3 python3 mountpoint redis-server runuser; do
    command -v "$t" >/dev/null || die "$t not found (scripts/install-deps.sh)"
done
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[[ -n $PGBIN ]] || die "no PostgreSQL server binaries (scripts/install-deps.sh)"

if [[ ${BENCH_NO_BUILD:-0} != 1 ]]; then
    (cd "$ROOT" && cargo build --release --bin artfs --quiet)
fi
BIN=${ARTFS_BIN:-$ROOT/target/release/artfs}
[[ -x $BIN ]] || die "no artfs binary at $BIN"

T=$(mktemp -d "${BENCH_DIR:-/var/tmp}/artfs-bench-cluster.XXXXXX")
PIDS=()
REDIS_PID=
cleanup() {
    for m in "$T"/w/mnt "$T"/r*/mnt; do
        mountpoint -q "$m" 2>/dev/null && { fusermount3 -u "$m" || fusermount3 -uz "$m"; }
    done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    done
    # Stopped by the pid it was started with, after checking it is ours.
    if [[ -n $REDIS_PID ]] && grep -q redis-server "/proc/$REDIS_PID/cmdline" 2>/dev/null; then
        kill "$REDIS_PID"
    fi
    [[ -d $T/pg/data ]] &&
        runuser -u postgres -- "$PGBIN/pg_ctl" -D "$T/pg/data" -m immediate stop >/dev/null 2>&1
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# PostgreSQL on a private unix socket.
chmod o+x "$T"
mkdir -p "$T/pg/sock"
chown -R postgres: "$T/pg"
runuser -u postgres -- "$PGBIN/initdb" -D "$T/pg/data" -A trust -U postgres >/dev/null
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$T/pg/data" -l "$T/pg/log" -w \
    -o "-k $T/pg/sock -c listen_addresses= -p 5498" start >/dev/null
runuser -u postgres -- "$PGBIN/createdb" -h "$T/pg/sock" -p 5498 artfs
DB="postgres:///artfs?host=$T/pg/sock&port=5498&user=postgres"

# Redis on a private port, no persistence.
RPORT=$(free_port)
redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$T" \
    >"$T/redis.log" 2>&1 &
REDIS_PID=$!
REDIS="redis://127.0.0.1:$RPORT/0"

# mount NAME BACKING ARGS...: start a daemon, wait for its mount.
mount_node() {
    local name=$1 backing=$2
    shift 2
    mkdir -p "$T/$name/mnt"
    ARTFS_LOG=${ARTFS_LOG:-warn} "$BIN" mount "$backing" "$T/$name/mnt" --db "$DB" "$@" \
        >"$T/$name.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 200); do
        mountpoint -q "$T/$name/mnt" && return
        kill -0 "${PIDS[-1]}" 2>/dev/null || { cat "$T/$name.log" >&2; die "$name exited"; }
        sleep 0.05
    done
    die "$name did not mount"
}

# A replica's BACKING: the writer's objects and store id, its own state.
replica_backing() {
    mkdir -p "$T/$1/backing/.artfs"
    ln -s "$T/w/backing/objects" "$T/$1/backing/objects"
    cp "$T/w/backing/.artfs/store-id" "$T/$1/backing/.artfs/"
}

mkdir -p "$T/w/backing"
mount_node w "$T/w/backing" --redis "$REDIS"
replica_backing r1
replica_backing r2
mount_node r1 "$T/r1/backing" --replica --poll-ms "$POLL_MS" --redis "$REDIS"
mount_node r2 "$T/r2/backing" --replica --poll-ms "$POLL_MS"

measure() {
    python3 - "$T/w/mnt" "$T/$1/mnt" "$CHANGES" "$2" <<'EOF'
import os, sys, time
w, r, n, label = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
os.makedirs(os.path.join(w, label), exist_ok=True)
lat = []
for i in range(n):
    name = os.path.join(label, f"f{i}")
    t0 = time.perf_counter()
    with open(os.path.join(w, name), "wb") as f:
        f.write(b"x")
    while True:
        try:
            os.stat(os.path.join(r, name))
            break
        except FileNotFoundError:
            time.sleep(0.0005)
    lat.append((time.perf_counter() - t0) * 1000)
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
print(f"{label:<12} {n:>6} {q(0.5):>9.1f} {q(0.99):>9.1f} {lat[-1]:>9.1f}")
EOF
}

echo "# change visible on a replica (create on the writer, stat on the replica), ms"
echo "# poll interval ${POLL_MS} ms; target p99: redis <= 100, poll <= $((POLL_MS + 50))"
printf '%-12s %6s %9s %9s %9s\n' side changes p50 p99 max
measure r1 redis
measure r2 poll
