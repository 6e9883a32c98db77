#!/usr/bin/env bash
# S3 content benchmark (docs/S3.md, issue 16): the same workloads on an
# artfs mount of a local store and on an artfs mount whose content is in a
# bucket of a throwaway moto_server on this machine, in one run.
#
# Rows (ratio = s3 / reference):
#   hot read        sequential read of a cached file, page cache dropped:
#                   s3 mount vs local mount [target >= 0.9]
#   cold read       first read of a file not in the cache (fetched by
#                   ranged GETs): s3 mount vs `curl` downloading the same
#                   object from the same server in one GET, and vs boto3's
#                   download_file (ranged GETs, its defaults) [target >= 0.7]
#   small files     create + write 4 KiB + fsync + close: files/s, s3 vs
#                   local (reported)
#   stat, readdir   of the small files: s3 vs local [target: unchanged, ~1]
#
# Needs root, fusermount3, python3, curl and moto_server
# (scripts/install-deps.sh installs them).
#
# Environment knobs (defaults in brackets):
#   BENCH_DIR        parent of the temp dir [/var/tmp]
#   BENCH_BIG        size of the sequential file, MiB [256]
#   BENCH_FILES      small files [500]
#   BENCH_NO_BUILD   set to 1 to skip `cargo build --release`
#   ARTFS_BIN        artfs binary [target/release/artfs]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIG=${BENCH_BIG:-256}
NFILES=${BENCH_FILES:-500}

die() { echo "bench-s3: $*" >&2; exit 1; }
[[ $(id -u) == 0 ]] || die "run as root (mounting needs it)"
for t in fusermount3 python3 mountpoint curl moto_server; do
    command -v "$t" >/dev/null || die "$t not found (scripts/install-deps.sh)"
done

if [[ ${BENCH_NO_BUILD:-0} != 1 ]]; then
    (cd "$ROOT" && cargo build --release --bin artfs --quiet)
fi
BIN=${ARTFS_BIN:-$ROOT/target/release/artfs}
[[ -x $BIN ]] || die "no artfs binary at $BIN"

T=$(mktemp -d "${BENCH_DIR:-/var/tmp}/artfs-bench-s3.XXXXXX")
PIDS=()
MOTO_PID=
cleanup() {
    for m in "$T"/local/mnt "$T"/s3/mnt; do
        mountpoint -q "$m" 2>/dev/null && { fusermount3 -u "$m" || fusermount3 -uz "$m"; }
    done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    done
    # Stopped by the pid it was started with, after checking it is ours.
    if [[ -n $MOTO_PID ]] && grep -q moto_server "/proc/$MOTO_PID/cmdline" 2>/dev/null; then
        kill "$MOTO_PID"
    fi
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
ratio() { python3 -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); print(f'{a / b:.2f}' if b else 'n/a')" "$1" "$2"; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

PORT=$(free_port)
moto_server -H 127.0.0.1 -p "$PORT" >"$T/moto.log" 2>&1 &
MOTO_PID=$!
ENDPOINT="http://127.0.0.1:$PORT"
for _ in $(seq 100); do curl -s -o /dev/null "$ENDPOINT/" && break; sleep 0.1; done
curl -s -X PUT "$ENDPOINT/bench" >/dev/null
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1
AUTH="Authorization: AWS4-HMAC-SHA256 Credential=bench/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00"

mount_store() { # NAME ARGS...: mount and wait
    local name=$1
    shift
    mkdir -p "$T/$name/mnt"
    "$BIN" mount "$@" "$T/$name/mnt" >"$T/$name.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 200); do mountpoint -q "$T/$name/mnt" && return; sleep 0.05; done
    cat "$T/$name.log" >&2
    die "$name did not mount"
}
mkdir -p "$T/local/backing"
mount_store local "$T/local/backing"
S3ARGS=(s3://bench/store --cache-dir "$T/s3/cache" --db "sqlite://$T/s3/meta.db"
    --s3-endpoint "$ENDPOINT" --cache-size 4G)
mkdir -p "$T/s3"
mount_store s3 "${S3ARGS[@]}"

seq_read() { # FILE: MiB/s of a sequential read, page cache dropped first
    drop_caches
    local t0 t1
    t0=$(now)
    dd if="$1" of=/dev/null bs=1M status=none
    t1=$(now)
    python3 -c "import sys; print(f'{float(sys.argv[1]) / (float(sys.argv[3]) - float(sys.argv[2])):.1f}')" "$BIG" "$t0" "$t1"
}

echo "writing a ${BIG} MiB file on both mounts..."
for side in local s3; do
    dd if=/dev/urandom of="$T/$side/mnt/big" bs=1M count="$BIG" conv=fsync status=none
done
# Read once so both are cached, then measure.
cat "$T/s3/mnt/big" >/dev/null
# Its hash recorded now: a file without one is hashed after the next mount,
# in the background, which fetches it and would race the cold read.
python3 -c 'import os, sys; os.getxattr(sys.argv[1], "user.artstore.sha256")' "$T/s3/mnt/big"
HOT_LOCAL=$(seq_read "$T/local/mnt/big")
HOT_S3=$(seq_read "$T/s3/mnt/big")

# Cold: the cache directory emptied between mounts, then the first read.
fusermount3 -u "$T/s3/mnt"
for _ in $(seq 200); do kill -0 "${PIDS[1]}" 2>/dev/null || break; sleep 0.1; done
rm -rf "$T/s3/cache"
mount_store s3 "${S3ARGS[@]}"
COLD_S3=$(seq_read "$T/s3/mnt/big")
KEY=$(curl -s -H "$AUTH" "$ENDPOINT/bench?list-type=2&prefix=store/objects/" |
    python3 -c 'import re,sys; print([k for k in re.findall(r"<Key>([^<]+)</Key>", sys.stdin.read()) if not k.endswith("attr.json")][0])')
drop_caches
t0=$(now)
curl -s -H "$AUTH" -o /dev/null "$ENDPOINT/bench/$KEY"
t1=$(now)
COLD_CURL=$(python3 -c "import sys; print(f'{float(sys.argv[1]) / (float(sys.argv[3]) - float(sys.argv[2])):.1f}')" "$BIG" "$t0" "$t1")
# boto3's download_file: ranged GETs (its defaults: 8 MiB parts, 10 threads).
drop_caches
COLD_BOTO=$(python3 - "$ENDPOINT" "$KEY" "$T/boto.out" "$BIG" <<'EOF'
import sys, time, boto3
endpoint, key, out, mib = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
t = time.perf_counter()
s3.download_file("bench", key, out)
print(f"{mib / (time.perf_counter() - t):.1f}")
EOF
)
rm -f "$T/boto.out"

small_files() { # DIR: files/s of create + write 4 KiB + fsync + close
    python3 - "$1" "$NFILES" <<'EOF'
import os, sys, time
d, n = sys.argv[1], int(sys.argv[2])
os.makedirs(d, exist_ok=True)
data = os.urandom(4096)
t = time.perf_counter()
for i in range(n):
    fd = os.open(f"{d}/f{i}", os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, data)
    os.fsync(fd)
    os.close(fd)
print(f"{n / (time.perf_counter() - t):.0f}")
EOF
}
meta_rate() { # DIR OP: operations/s of stat of every file, or readdir
    python3 - "$1" "$2" <<'EOF'
import os, sys, time
d, op = sys.argv[1], sys.argv[2]
names = os.listdir(d)
t = time.perf_counter()
if op == "stat":
    for _ in range(3):
        for n in names:
            os.stat(f"{d}/{n}")
    print(f"{3 * len(names) / (time.perf_counter() - t):.0f}")
else:
    for _ in range(20):
        os.listdir(d)
    print(f"{20 / (time.perf_counter() - t):.1f}")
EOF
}
SMALL_LOCAL=$(small_files "$T/local/mnt/small")
SMALL_S3=$(small_files "$T/s3/mnt/small")
# Let the background work of the creates settle first (the S3 side puts
# 500 sidecars to the bucket, and moto shares these two CPUs).
sleep 10
STAT_LOCAL=$(meta_rate "$T/local/mnt/small" stat)
STAT_S3=$(meta_rate "$T/s3/mnt/small" stat)
RD_LOCAL=$(meta_rate "$T/local/mnt/small" readdir)
RD_S3=$(meta_rate "$T/s3/mnt/small" readdir)

printf '%-34s %12s %12s %7s %s\n' row reference s3 ratio target
printf '%-34s %12s %12s %7s %s\n' "hot read MiB/s (vs local mount)" "$HOT_LOCAL" "$HOT_S3" "$(ratio "$HOT_S3" "$HOT_LOCAL")" ">= 0.9"
printf '%-34s %12s %12s %7s %s\n' "cold read MiB/s (vs curl GET)" "$COLD_CURL" "$COLD_S3" "$(ratio "$COLD_S3" "$COLD_CURL")" ">= 0.7"
printf '%-34s %12s %12s %7s %s\n' "cold read MiB/s (vs boto3 ranged)" "$COLD_BOTO" "$COLD_S3" "$(ratio "$COLD_S3" "$COLD_BOTO")" ">= 0.7"
printf '%-34s %12s %12s %7s %s\n' "create+write+fsync files/s" "$SMALL_LOCAL" "$SMALL_S3" "$(ratio "$SMALL_S3" "$SMALL_LOCAL")" "reported"
printf '%-34s %12s %12s %7s %s\n' "stat/s" "$STAT_LOCAL" "$STAT_S3" "$(ratio "$STAT_S3" "$STAT_LOCAL")" "~1"
printf '%-34s %12s %12s %7s %s\n' "readdir of ${NFILES}/s" "$RD_LOCAL" "$RD_S3" "$(ratio "$RD_S3" "$RD_LOCAL")" "~1"
