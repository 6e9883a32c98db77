#!/usr/bin/env bash
# Workload benchmark: the same workloads on a plain directory ("raw") and on
# an artfs mount whose BACKING lives on the same filesystem, in one run.
# Prints a table of metric / raw / artfs / ratio / target. See benches/README.md.
#
# Needs root (drop_caches, mounting), fio, fusermount3 and python3; the
# "api" rows need ab (apache2-utils), curl and openssl, and nginx for the
# static-server reference.
#
# Environment knobs (defaults in brackets):
#   BENCH_DIR      parent of the temp dir [/var/tmp]; must not be tmpfs
#   BENCH_LOOP     size of a fresh ext4 image (e.g. 24G) made in BENCH_DIR
#                  and mounted on a loop device (direct I/O) for this run
#                  alone: both sides then start on a file system no earlier
#                  run has filled and freed (ext4's inode allocator slows on
#                  one that has, see benches/README "Noise"); one inode per
#                  4 KiB, enough for the scale run's 3M files [unset: run in
#                  BENCH_DIR itself]
#   BENCH_RUNTIME  seconds per time-bounded fio run [5]
#   BENCH_SEQ_SIZE size of the sequential file [512M]
#   BENCH_RAND_SIZE size of the random-I/O file [256M]
#   BENCH_FILES    files for the metadata rows [10000]
#   BENCH_PHASES   which rows to run: "io" (seq and rand), "meta", "api" (the
#                  HTTP door under ab, loopback, RS256 token), "scale" (the
#                  million-file run; opt-in, minutes long) ["io meta api"]
#   BENCH_SCALE_FILES files of the scale run [1000000]
#   BENCH_SCALE_DIRS  directories they are spread over [10]
#   BENCH_API_CLIENTS concurrent clients of the api rows [32]
#   BENCH_API_BIG  size of the file of the api bulk rows (download, upload) [1G]
#   BENCH_API_REPS runs of each api bulk row; the median is reported [3]
#   BENCH_API_TLS  1: the api rows over HTTPS too, from a second daemon
#                  (its own store, a self-signed certificate) against nginx
#                  with the same certificate; 0: plain HTTP only [1]
#   BENCH_API_RTT_MS with the HTTPS rows: also upload 256 MiB over HTTP/1.1
#                  and HTTP/2 through a proxy adding this many ms each way
#                  (benches/delay_proxy.py), a far client; 0: skip [25]
#   BENCH_NO_BUILD set to 1 to skip `cargo build --release`
#   BENCH_MOUNT_ARGS extra arguments for `artfs mount` (e.g. "--threads 2") []
#   BENCH_IO_URING auto: serve the mount over FUSE-over-io_uring (`--io-uring`)
#                  where the kernel has it, setting the machine-wide
#                  /sys/module/fuse/parameters/enable_uring to Y for the
#                  run and back afterwards; 0: over /dev/fuse [auto]
#   ARTFS_BIN      artfs binary [target/release/artfs]
#   BENCH_CAP      capacity of a third mount measured beside the default
#                  one (every write checked by the daemon) [100G]; 0: none
#   BENCH_CAP_PT   1: a fourth mount with that capacity and
#                  --capacity-passthrough (the "cappt" side); 0: none [1]
#   BENCH_RO       1: a fifth mount, a store in ro mode with that capacity
#                  (the "ro" side: its files written while it was rw, then
#                  `artfs mode ro`), measured on the read rows; 0: none [1]
#   BENCH_PG       auto: also run every row on a second mount whose tables
#                  are in a throwaway local PostgreSQL (unix socket), the
#                  "pg" side, reported against SQLite; 0: skip [auto]
#   BENCH_KEEP     set to 1 to keep the temp dir (and the daemon log)
#   BENCH_OUT      where to copy the results [target/bench/]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY="$ROOT/benches/meta_bench.py"
RUNTIME=${BENCH_RUNTIME:-5}
SEQ_SIZE=${BENCH_SEQ_SIZE:-512M}
RAND_SIZE=${BENCH_RAND_SIZE:-256M}
NFILES=${BENCH_FILES:-10000}
PHASES=${BENCH_PHASES:-io meta api}
API_CLIENTS=${BENCH_API_CLIENTS:-32}
API_BIG=${BENCH_API_BIG:-1G}
API_REPS=${BENCH_API_REPS:-3}
API_TLS=${BENCH_API_TLS:-1}
API_RTT_MS=${BENCH_API_RTT_MS:-25}
STAT_PASSES=3
READDIR_PASSES=5
SEQ_WRITE_REPS=5
OUT_DIR=${BENCH_OUT:-$ROOT/target/bench}

die() { echo "bench: $*" >&2; exit 1; }
[[ $(id -u) == 0 ]] || die "run as root (drop_caches and mounting need it)"
for t in fio fusermount3 python3 mountpoint; do
    command -v "$t" >/dev/null || die "$t not found (scripts/install-deps.sh installs fio and fuse3)"
done
if [[ $PHASES == *api* ]]; then
    for t in ab curl openssl; do
        command -v "$t" >/dev/null || die "$t not found (scripts/install-deps.sh installs apache2-utils, curl and openssl)"
    done
fi

if [[ ${BENCH_NO_BUILD:-0} != 1 ]]; then
    (cd "$ROOT" && cargo build --release --bin artfs --quiet)
fi
BIN=${ARTFS_BIN:-$ROOT/target/release/artfs}
[[ -x $BIN ]] || die "no artfs binary at $BIN"

PARENT=${BENCH_DIR:-/var/tmp}
LOOP_IMG=
LOOP_DEV=
loop_cleanup() {
    [[ -n $LOOP_IMG ]] || return 0
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then
        echo "kept $LOOP_IMG.mnt on $LOOP_DEV (umount it, then losetup -d $LOOP_DEV and rm $LOOP_IMG)"
        return 0
    fi
    mountpoint -q "$LOOP_IMG.mnt" && umount "$LOOP_IMG.mnt"
    [[ -n $LOOP_DEV ]] && losetup -d "$LOOP_DEV"
    rmdir "$LOOP_IMG.mnt" 2>/dev/null
    rm -f "$LOOP_IMG"
}
if [[ -n ${BENCH_LOOP:-} ]]; then
    command -v mkfs.ext4 >/dev/null && command -v losetup >/dev/null || die "BENCH_LOOP needs mkfs.ext4 and losetup"
    trap 'set +e; loop_cleanup' EXIT
    LOOP_IMG=$(mktemp "$PARENT/artfs-bench-fs.XXXXXX")
    truncate -s "$BENCH_LOOP" "$LOOP_IMG"
    # Inode tables and journal written now, not by ext4lazyinit during the run.
    mkfs.ext4 -q -F -i 4096 -E lazy_itable_init=0,lazy_journal_init=0 "$LOOP_IMG"
    LOOP_DEV=$(losetup --find --show --direct-io=on "$LOOP_IMG")
    mkdir "$LOOP_IMG.mnt"
    mount "$LOOP_DEV" "$LOOP_IMG.mnt"
    PARENT=$LOOP_IMG.mnt
fi
T=$(mktemp -d "$PARENT/artfs-bench.XXXXXX")
[[ $(stat -f -c %T "$T") != tmpfs ]] || die "$T is on tmpfs; set BENCH_DIR to a disk-backed dir"
# Spread raw/ and backing/ over separate ext4 block groups (Orlov's
# top-directory rule), away from whatever earlier runs freed near /var/tmp.
chattr +T "$T" 2>/dev/null || true
mkdir -p "$T/backing" "$T/mnt" "$T/raw"
RESULTS="$T/results.txt"
LOG="$T/artfs.log"
PID=
URING_PARAM=/sys/module/fuse/parameters/enable_uring
URING_WAS=
URING_ARGS=
if [[ ${BENCH_IO_URING:-auto} != 0 && -w $URING_PARAM ]]; then
    URING_WAS=$(cat "$URING_PARAM")
    echo Y >"$URING_PARAM"
    URING_ARGS=--io-uring
fi

PG_PID=
CAP_PID=
CAPPT_PID=
RO_PID=
TLS_PID=
PGBIN=
NGINX_PID=
PROXY_PID=
# Stop a helper this script started, by the pid it was started with, and
# only once its command line shows it is ours (never by name):
# stop_ours PID PATTERN [SIGNAL].
stop_ours() {
    [[ -n $1 ]] || return 0
    if tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q "$2"; then
        kill "-${3:-TERM}" "$1"
        wait "$1" 2>/dev/null || true
    fi
}
cleanup() {
    set +e
    stop_ours "$PROXY_PID" delay_proxy.py
    stop_ours "$NGINX_PID" "nginx.*$T/nginx/nginx.conf" QUIT
    for m in "$T/mnt" "$T/mnt-pg" "$T/mnt-cap" "$T/mnt-cappt" "$T/mnt-ro" "$T/mnt-tls"; do
        if mountpoint -q "$m"; then
            fusermount3 -u "$m" || fusermount3 -uz "$m"
        fi
    done
    for p in $PID $PG_PID $CAP_PID $CAPPT_PID $RO_PID $TLS_PID; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    # Our own server in our own fresh data directory.
    [[ -n $PGBIN && -d $T/pg/data ]] &&
        runuser -u postgres -- "$PGBIN/pg_ctl" -D "$T/pg/data" -m immediate stop >/dev/null 2>&1
    [[ -n $URING_WAS ]] && echo "$URING_WAS" >"$URING_PARAM"
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then
        echo "kept $T"
    elif [[ -z $LOOP_IMG ]]; then
        rm -rf "$T"
    fi
    # A fresh file system goes whole (faster than removing 3M files).
    loop_cleanup
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The api rows: the HTTP door on a free loopback port, an RS256 key (as
# the issue measured), every token acting as root.
API_ARGS=()
if [[ $PHASES == *api* ]]; then
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$T/jwt.key" 2>/dev/null
    openssl pkey -in "$T/jwt.key" -pubout -out "$T/jwt.pub"
    API_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    API_ARGS=(--api "127.0.0.1:$API_PORT" --jwt-key "$T/jwt.pub" --api-uid 0)
    if [[ $API_TLS != 0 ]]; then
        openssl req -x509 -newkey rsa:2048 -nodes -keyout "$T/tls.key" -out "$T/tls.crt" -days 2 \
            -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1,DNS:localhost 2>/dev/null
        TLS_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    fi
fi

# shellcheck disable=SC2086 # BENCH_MOUNT_ARGS is a list of arguments
ARTFS_LOG=${ARTFS_LOG:-info,fuser::session=error} "$BIN" mount "$T/backing" "$T/mnt" \
    $URING_ARGS ${BENCH_MOUNT_ARGS:-} "${API_ARGS[@]}" >"$LOG" 2>&1 &
PID=$!
# Wait until daemon $2 (its log $3, named $4 in errors) has mounted $1.
wait_mounted() {
    for _ in $(seq 100); do
        mountpoint -q "$1" && return 0
        kill -0 "$2" 2>/dev/null || { cat "$3" >&2; die "$4 exited before mounting"; }
        sleep 0.1
    done
    die "$4 did not mount within 10 s"
}
wait_mounted "$T/mnt" "$PID" "$LOG" artfs

declare -A DIRS=([raw]="$T/raw" [artfs]="$T/mnt")

# The HTTPS door: a second daemon on a store of its own (one daemon
# serves one door), the same key and options; no trash, so the uploads'
# files, removed between runs, do not pile up there.
if [[ -n ${TLS_PORT:-} ]]; then
    mkdir -p "$T/backing-tls" "$T/mnt-tls"
    # shellcheck disable=SC2086 # BENCH_MOUNT_ARGS is a list of arguments
    ARTFS_LOG=${ARTFS_LOG:-info,fuser::session=error} "$BIN" mount "$T/backing-tls" "$T/mnt-tls" \
        $URING_ARGS ${BENCH_MOUNT_ARGS:-} --trash-days 0 --api "127.0.0.1:$TLS_PORT" --jwt-key "$T/jwt.pub" \
        --api-uid 0 --tls-cert "$T/tls.crt" --tls-key "$T/tls.key" >"$T/artfs-tls.log" 2>&1 &
    TLS_PID=$!
    wait_mounted "$T/mnt-tls" "$TLS_PID" "$T/artfs-tls.log" "artfs (tls)"
fi
SIDES=(raw artfs)

# The "pg" side: the same daemon with its tables in PostgreSQL, on a
# private unix socket (no TCP), the server started and stopped here.
if [[ ${BENCH_PG:-auto} != 0 ]]; then
    PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    if [[ -n $PGBIN ]] && id postgres >/dev/null 2>&1; then
        chmod o+x "$T"
        mkdir -p "$T/pg/sock" "$T/backing-pg" "$T/mnt-pg"
        chown -R postgres: "$T/pg"
        runuser -u postgres -- "$PGBIN/initdb" -D "$T/pg/data" -A trust -U postgres >/dev/null
        runuser -u postgres -- "$PGBIN/pg_ctl" -D "$T/pg/data" -l "$T/pg/log" -w \
            -o "-k $T/pg/sock -c listen_addresses= -p 5499" start >/dev/null
        runuser -u postgres -- "$PGBIN/createdb" -h "$T/pg/sock" -p 5499 artfs
        PG_URL="postgres:///artfs?host=$T/pg/sock&port=5499&user=postgres"
        # shellcheck disable=SC2086 # BENCH_MOUNT_ARGS is a list of arguments
        ARTFS_LOG=${ARTFS_LOG:-info,fuser::session=error} "$BIN" mount "$T/backing-pg" "$T/mnt-pg" \
            --db "$PG_URL" $URING_ARGS ${BENCH_MOUNT_ARGS:-} >"$T/artfs-pg.log" 2>&1 &
        PG_PID=$!
        wait_mounted "$T/mnt-pg" "$PG_PID" "$T/artfs-pg.log" "artfs (pg)"
        DIRS[pg]="$T/mnt-pg"
        SIDES+=(pg)
    else
        echo "# no PostgreSQL here (scripts/install-deps.sh installs it): pg rows skipped"
    fi
fi

# The "cap" side: the configuration archives run, a store with a capacity
# (every write checked by the daemon: writers are served by it, uncached
# when write-only; readers go by passthrough).
if [[ ${BENCH_CAP:-100G} != 0 ]]; then
    mkdir -p "$T/backing-cap" "$T/mnt-cap"
    # shellcheck disable=SC2086 # BENCH_MOUNT_ARGS is a list of arguments
    ARTFS_LOG=${ARTFS_LOG:-info,fuser::session=error} "$BIN" mount "$T/backing-cap" "$T/mnt-cap" \
        --capacity "${BENCH_CAP:-100G}" $URING_ARGS ${BENCH_MOUNT_ARGS:-} >"$T/artfs-cap.log" 2>&1 &
    CAP_PID=$!
    wait_mounted "$T/mnt-cap" "$CAP_PID" "$T/artfs-cap.log" "artfs (cap)"
    DIRS[cap]="$T/mnt-cap"
    SIDES+=(cap)
fi
# The "cappt" side: the same capacity with --capacity-passthrough (writes
# by passthrough, each checked by fanotify pre-content events).
if [[ ${BENCH_CAP:-100G} != 0 && ${BENCH_CAP_PT:-1} != 0 ]]; then
    mkdir -p "$T/backing-cappt" "$T/mnt-cappt"
    # shellcheck disable=SC2086 # BENCH_MOUNT_ARGS is a list of arguments
    ARTFS_LOG=${ARTFS_LOG:-info,fuser::session=error} "$BIN" mount "$T/backing-cappt" "$T/mnt-cappt" \
        --capacity "${BENCH_CAP:-100G}" --capacity-passthrough $URING_ARGS ${BENCH_MOUNT_ARGS:-} \
        >"$T/artfs-cappt.log" 2>&1 &
    CAPPT_PID=$!
    wait_mounted "$T/mnt-cappt" "$CAPPT_PID" "$T/artfs-cappt.log" "artfs (cappt)"
    DIRS[cappt]="$T/mnt-cappt"
    SIDES+=(cappt)
fi

# The "ro" side: a store as archives keep most of theirs, in ro mode with
# the capacity (reads by passthrough, as in every mode). Its files are
# written while it is rw, then `artfs mode` turns it ro under the running
# mount; only the read rows run on it (RO_SIDE is added to those loops).
RO_SIDE=()
if [[ ${BENCH_RO:-1} != 0 && ($PHASES == *io* || $PHASES == *meta*) ]]; then
    mkdir -p "$T/backing-ro" "$T/mnt-ro"
    RO_CAP=()
    [[ ${BENCH_CAP:-100G} == 0 ]] || RO_CAP=(--capacity "${BENCH_CAP:-100G}")
    # shellcheck disable=SC2086 # BENCH_MOUNT_ARGS is a list of arguments
    ARTFS_LOG=${ARTFS_LOG:-info,fuser::session=error} "$BIN" mount "$T/backing-ro" "$T/mnt-ro" \
        --mode rw "${RO_CAP[@]}" $URING_ARGS ${BENCH_MOUNT_ARGS:-} >"$T/artfs-ro.log" 2>&1 &
    RO_PID=$!
    wait_mounted "$T/mnt-ro" "$RO_PID" "$T/artfs-ro.log" "artfs (ro)"
    if [[ $PHASES == *io* ]]; then
        dd if=/dev/urandom of="$T/mnt-ro/seq.dat" bs=1M \
            count=$(($(numfmt --from=iec "$SEQ_SIZE") >> 20)) status=none
        dd if=/dev/zero of="$T/mnt-ro/rand.dat" bs=1M \
            count=$(($(numfmt --from=iec "$RAND_SIZE") >> 20)) status=none
    fi
    if [[ $PHASES == *meta* ]]; then
        mkdir "$T/mnt-ro/meta"
        python3 "$PY" create "$T/mnt-ro/meta" "$NFILES" >/dev/null
    fi
    "$BIN" mode "$T/backing-ro" ro >/dev/null
    # The mount follows within a second (a change is then refused, EROFS);
    # and the files are hashed first, so that no background hashing runs
    # beside another side's rows.
    ro_ready() {
        ! touch -c "$T/mnt-ro" 2>/dev/null &&
            "$BIN" status "$T/backing-ro" | grep -Eq '^unhashed files: +0$'
    }
    for _ in $(seq 600); do ro_ready && break; sleep 0.1; done
    ro_ready || die "the ro side did not turn read-only and hashed within 60 s (see $T/artfs-ro.log)"
    DIRS[ro]="$T/mnt-ro"
    RO_SIDE=(ro)
fi

# Write back dirty data and drop page cache, dentries and inodes, so that
# each measured run starts from the same state on both sides. (The artfs
# daemon's own metadata cache is part of artfs and is not dropped.)
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }

record() { # side metric json
    local v
    v=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["value"])' "$3")
    echo "$1 $2 $v $3" >>"$RESULTS"
    printf '  %-6s %-11s %12.1f  %s\n' "$1" "$2" "$v" "$3"
}

FIO_COMMON=(--ioengine=psync --direct=0 --invalidate=0 --fallocate=none --numjobs=1
    --iodepth=1 --group_reporting --output-format=json)

fio_run() { # side metric fio-args...
    local side=$1 metric=$2
    shift 2
    fio "${FIO_COMMON[@]}" "$@" >"$T/fio.json" 2>"$T/fio.err" || { cat "$T/fio.err" >&2; die "fio failed"; }
    record "$side" "$metric" "$(python3 "$PY" fio "$T/fio.json" "$metric")"
}

warm() { cat "$1" >/dev/null; }

echo "# artfs workload bench $(date -u +%FT%TZ)" >"$RESULTS"
{
    echo "# host: $(uname -r), $(nproc) CPUs, fs $(stat -f -c %T "$T") under $T${LOOP_DEV:+ (a fresh ext4 of ${BENCH_LOOP} on $LOOP_DEV)}"
    transport="/dev/fuse"
    if [[ -n $URING_ARGS ]]; then
        # The ring threads log their first request; touch the mount first.
        stat "$T/mnt" >/dev/null
        sleep 0.5
        if grep -q 'FUSE over io_uring: queue' "$LOG"; then
            transport="FUSE over io_uring (enable_uring set to Y for this run)"
        else
            transport="/dev/fuse (io_uring asked for, not granted)"
        fi
    fi
    echo "# artfs: $(grep -o 'FUSE passthrough enabled\|kernel lacks FUSE passthrough' "$LOG" | head -1), requests over $transport${BENCH_MOUNT_ARGS:+, mounted with $BENCH_MOUNT_ARGS}"
    echo "# fio $(fio --version), runtime ${RUNTIME}s, seq ${SEQ_SIZE}, rand ${RAND_SIZE}, ${NFILES} files"
} | tee -a "$RESULTS"

if [[ $PHASES == *io* ]]; then
echo "== seq write (${SEQ_SIZE} new file, bs 1M, buffered, no fsync; median of ${SEQ_WRITE_REPS})"
for s in "${SIDES[@]}"; do
    d=${DIRS[$s]}
    runs=()
    for _ in $(seq "$SEQ_WRITE_REPS"); do
        rm -f "$d/seq.dat"
        drop
        fio "${FIO_COMMON[@]}" --name=seqwrite --filename="$d/seq.dat" --rw=write --bs=1M \
            --size="$SEQ_SIZE" --runtime="$RUNTIME" >"$T/fio.json" 2>"$T/fio.err" ||
            { cat "$T/fio.err" >&2; die "fio failed"; }
        runs+=("$(python3 "$PY" fio "$T/fio.json" seq_write)")
    done
    record "$s" seq_write "$(python3 -c 'import json,sys,statistics as st
r=[json.loads(a)["value"] for a in sys.argv[1:]]
print(json.dumps({"value": st.median(r), "runs_mib_s": [round(v) for v in r]}))' "${runs[@]}")"
done

echo "== seq read (${SEQ_SIZE}, bs 1M, page cache warmed, ${RUNTIME}s)"
for s in "${SIDES[@]}" "${RO_SIDE[@]}"; do
    d=${DIRS[$s]}
    drop
    warm "$d/seq.dat"
    fio_run "$s" seq_read --name=seqread --filename="$d/seq.dat" --rw=read --bs=1M \
        --size="$SEQ_SIZE" --time_based --runtime="$RUNTIME"
    [[ $s == ro ]] || rm -f "$d/seq.dat"
done

echo "== rand read 4k (${RAND_SIZE}, page cache warmed, ${RUNTIME}s)"
for s in "${SIDES[@]}" "${RO_SIDE[@]}"; do
    d=${DIRS[$s]}
    [[ $s == ro ]] ||
        dd if=/dev/zero of="$d/rand.dat" bs=1M count=$(($(numfmt --from=iec "$RAND_SIZE") >> 20)) status=none
    drop
    warm "$d/rand.dat"
    fio_run "$s" rand_read --name=randread --filename="$d/rand.dat" --rw=randread --bs=4k \
        --size="$RAND_SIZE" --time_based --runtime="$RUNTIME" --randrepeat=1
done

echo "== rand write 4k (${RAND_SIZE} existing file, page cache warmed, buffered, no fsync, ${RUNTIME}s)"
for s in "${SIDES[@]}"; do
    d=${DIRS[$s]}
    drop
    warm "$d/rand.dat"
    fio_run "$s" rand_write --name=randwrite --filename="$d/rand.dat" --rw=randwrite --bs=4k \
        --size="$RAND_SIZE" --time_based --runtime="$RUNTIME" --randrepeat=1
    rm -f "$d/rand.dat"
done

fi

if [[ $PHASES == *meta* ]]; then
echo "== metadata (${NFILES} files in one directory)"
# Row by row, raw then artfs, as for the I/O rows: both sides create before
# either unlinks. ext4 without a journal skips inodes freed in the last
# five minutes when it allocates, and one side's 10 000 unlinks made the
# other side's creates that follow pay for scanning past them.
for s in "${SIDES[@]}"; do mkdir "${DIRS[$s]}/meta"; done
for row in create stat readdir open_read unlink; do
    sides=("${SIDES[@]}")
    [[ $row == create || $row == unlink ]] || sides+=("${RO_SIDE[@]}")
    for s in "${sides[@]}"; do
        d=${DIRS[$s]}/meta
        drop
        case $row in
        create) record "$s" create "$(python3 "$PY" create "$d" "$NFILES")" ;;
        stat) record "$s" stat "$(python3 "$PY" stat "$d" "$NFILES" "$STAT_PASSES")" ;;
        readdir) record "$s" readdir "$(python3 "$PY" readdir "$d" "$NFILES" "$READDIR_PASSES")" ;;
        open_read)
            out=$(python3 "$PY" open_read "$d" "$NFILES" "$STAT_PASSES")
            record "$s" open_read "$out"
            # The passes after the first (page cache and dentries warm) alone.
            record "$s" open_read_warm "$(python3 -c 'import json, sys
print(json.dumps({"value": json.loads(sys.argv[1])["warm_files_s"]}))' "$out")"
            ;;
        unlink) record "$s" unlink "$(python3 "$PY" unlink "$d" "$NFILES")" ;;
        esac
    done
done
for s in "${SIDES[@]}"; do rmdir "${DIRS[$s]}/meta"; done
# Just written: create, then at once stat (one pass) and unlink the same
# files, nothing dropped in between; only the stat and the unlink count.
for s in "${SIDES[@]}"; do
    d=${DIRS[$s]}/meta-warm
    mkdir "$d"
    drop
    python3 "$PY" create "$d" "$NFILES" >/dev/null
    record "$s" stat_warm "$(python3 "$PY" stat "$d" "$NFILES" 1)"
    record "$s" unlink_warm "$(python3 "$PY" unlink "$d" "$NFILES")"
    rmdir "$d"
done

fi

if [[ $PHASES == *api* ]]; then
echo "== HTTP API (ab, loopback, keep-alive unless said, RS256 token, 6-byte file, ${RUNTIME}s each)"
URL=http://127.0.0.1:$API_PORT
for _ in $(seq 100); do
    python3 -c 'import sys, urllib.request as u; u.urlopen(sys.argv[1], timeout=1)' "$URL/health/live" \
        2>/dev/null && break
    sleep 0.1
done
printf 'hello\n' >"$T/mnt/six"
TOKEN=$("$BIN" token --key "$T/jwt.key" --sub bench --role user --ttl 1h)
AUTH="Authorization: Bearer $TOKEN"
ab_run() { # metric ab-args... : requests per second, p50 and p99 latency
    local metric=$1
    shift
    ab -q -l -t "$RUNTIME" -n 1000000 -e "$T/ab.csv" "$@" >"$T/ab.txt" 2>&1 ||
        { cat "$T/ab.txt" >&2; die "ab failed"; }
    record api "$metric" "$(python3 - "$T/ab.txt" "$T/ab.csv" <<'PYEOF'
import json, re, sys
text = open(sys.argv[1]).read()
pct = dict(l.split(",") for l in open(sys.argv[2]).read().splitlines()[1:])
num = lambda pat: float(re.search(pat, text).group(1)) if re.search(pat, text) else 0.0
print(json.dumps({"value": num(r"Requests per second:\s+([\d.]+)"),
                  "p50_ms": float(pct["50"]), "p99_ms": float(pct["99"]),
                  "complete": int(num(r"Complete requests:\s+(\d+)")),
                  "failed": int(num(r"Failed requests:\s+(\d+)")),
                  "non_2xx": int(num(r"Non-2xx responses:\s+(\d+)"))}))
PYEOF
)"
}
ab_run get_small_ka_c1 -k -c 1 -H "$AUTH" "$URL/api/v1/fs/six"
ab_run get_small_c1 -c 1 -H "$AUTH" "$URL/api/v1/fs/six"
ab_run get_small_ka_c$API_CLIENTS -k -c "$API_CLIENTS" -H "$AUTH" "$URL/api/v1/fs/six"
ab_run info_ka_c$API_CLIENTS -k -c "$API_CLIENTS" -H "$AUTH" "$URL/api/v1/info"
ab_run meta_ka_c$API_CLIENTS -k -c "$API_CLIENTS" -H "$AUTH" "$URL/api/v1/meta/six"
ab_run live_ka_c$API_CLIENTS -k -c "$API_CLIENTS" "$URL/health/live"
TLS_URL=
TLS_CURL=()
if [[ -n $TLS_PID ]]; then
    TLS_URL=https://127.0.0.1:$TLS_PORT
    TLS_CURL=(--cacert "$T/tls.crt")
    for _ in $(seq 100); do
        curl -sf -o /dev/null "${TLS_CURL[@]}" "$TLS_URL/health/live" && break
        sleep 0.1
    done
    printf 'hello\n' >"$T/mnt-tls/six"
    ab_run tls_get_small_ka_c1 -k -c 1 -H "$AUTH" "$TLS_URL/api/v1/fs/six"
    ab_run tls_get_small_ka_c$API_CLIENTS -k -c "$API_CLIENTS" -H "$AUTH" "$TLS_URL/api/v1/fs/six"
fi

# Bulk rows: a BENCH_API_BIG file (1 GiB) downloaded cold and warm, a Range
# of it, and uploaded, each against its reference in the same run: reading
# the raw object file (cold), nginx with sendfile serving the same object
# file (warm, range), cp + fsync into BACKING (upload). curl is the client.
BIG_MIB=$(($(numfmt --from=iec "$API_BIG") >> 20))
echo "== HTTP API bulk (${API_BIG} file, curl, loopback; median of $API_REPS)"
head -c "$((BIG_MIB << 20))" /dev/urandom >"$T/src.dat"
cp "$T/src.dat" "$T/mnt/big.dat"
sync
OBJ=$(find "$T/backing" -type f -size "$((BIG_MIB << 10))k" ! -path "$T/backing/.artfs/*" | head -1)
[[ -n $OBJ ]] && cmp -s "$OBJ" "$T/src.dat" || die "cannot find the object file of big.dat under $T/backing"
TLS_OBJ=
if [[ -n $TLS_URL ]]; then
    cp "$T/src.dat" "$T/mnt-tls/big.dat"
    sync
    TLS_OBJ=$(find "$T/backing-tls" -type f -size "$((BIG_MIB << 10))k" ! -path "$T/backing-tls/.artfs/*" | head -1)
    [[ -n $TLS_OBJ ]] && cmp -s "$TLS_OBJ" "$T/src.dat" || die "cannot find the object file of big.dat under $T/backing-tls"
fi
RANGE_START=$((BIG_MIB << 18))            # a quarter in
RANGE_END=$((RANGE_START + (BIG_MIB << 19) - 1)) # half the file

# nginx: a private config in the temp dir, a private port, the object's
# directory as its root, sendfile on; stopped by the pid it started with.
NGINX_URL=
if command -v nginx >/dev/null; then
    NGINX_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    mkdir -p "$T/nginx"
    # With the HTTPS rows, the same file over TLS (the daemon's
    # certificate), HTTP/1.1 or HTTP/2 as the client asks (ALPN).
    NGINX_TLS=
    if [[ -n $TLS_URL ]]; then
        NGINX_TLS_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        NGINX_TLS="server { listen 127.0.0.1:$NGINX_TLS_PORT ssl http2; ssl_certificate $T/tls.crt; ssl_certificate_key $T/tls.key; root $(dirname "$OBJ"); }"
    fi
    cat >"$T/nginx/nginx.conf" <<NGINXEOF
daemon off;
user root;
worker_processes 2;
pid $T/nginx/nginx.pid;
error_log $T/nginx/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path $T/nginx/body;
    proxy_temp_path $T/nginx/proxy;
    fastcgi_temp_path $T/nginx/fastcgi;
    uwsgi_temp_path $T/nginx/uwsgi;
    scgi_temp_path $T/nginx/scgi;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $(dirname "$OBJ");
    }
    $NGINX_TLS
}
NGINXEOF
    nginx -e "$T/nginx/error.log" -p "$T/nginx" -c "$T/nginx/nginx.conf" &
    NGINX_PID=$!
    NGINX_URL=http://127.0.0.1:$NGINX_PORT/$(basename "$OBJ")
    for _ in $(seq 50); do
        curl -sf -o /dev/null -r 0-0 "$NGINX_URL" && break
        sleep 0.1
    done
else
    echo "# no nginx here (scripts/install-deps.sh installs it): the nginx reference is skipped"
fi

median() { # values... : their median; each run's figure goes to stderr
    python3 -c 'import statistics as s, sys
r = [float(a) for a in sys.argv[1:]]
print("    runs (MiB/s): " + " ".join("%.0f" % x for x in r), file=sys.stderr)
print(s.median(r))' "$@"
}
# MiB/s of one curl transfer: curl-args...; fails unless the status is 2xx.
curl_mibs() {
    local out
    out=$(curl -sS -o /dev/null -w '%{http_code} %{size_download} %{size_upload} %{time_total}' "$@")
    python3 -c 'import sys
code, down, up, t = sys.argv[1:]
assert code.startswith("2"), "HTTP " + code
print(max(int(down), int(up)) / 1048576 / float(t))' $out
}
# MiB/s of a command that moves BIG_MIB (or $2 MiB) bytes: cmd...
timed_mibs() {
    local mib=$1 t0 t1
    shift
    t0=$(date +%s.%N)
    "$@" >/dev/null
    t1=$(date +%s.%N)
    python3 -c 'import sys; print(float(sys.argv[1]) / (float(sys.argv[3]) - float(sys.argv[2])))' "$mib" "$t0" "$t1"
}
bulk() { # metric ours reference-name reference target
    record api_bulk "$1" "$(python3 -c 'import json, sys
m, ours, name, ref, target = sys.argv[1:]
print(json.dumps({"value": float(ours), "reference": name,
                  "reference_mib_s": float(ref) if ref else None, "target": target}))' "$@")"
}
reps() { # cmd... : median MiB/s over API_REPS runs, page cache dropped before each if COLD=1
    local r=()
    for _ in $(seq "$API_REPS"); do
        if [[ ${COLD:-0} == 1 ]]; then drop; else warm "${WARM:-$OBJ}"; fi
        r+=("$("$@")")
    done
    median "${r[@]}"
}
GET=("$URL/api/v1/fs/big.dat" -H "$AUTH")
RANGE_MIB=$(((RANGE_END - RANGE_START + 1) >> 20))

raw_cold=$(COLD=1 reps timed_mibs "$BIG_MIB" cat "$OBJ")
ours_cold=$(COLD=1 reps curl_mibs "${GET[@]}")
bulk download_cold "$ours_cold" "cat of the raw object, cold" "$raw_cold" ">= 0.9"
ours_warm=$(reps curl_mibs "${GET[@]}")
ours_range=$(reps curl_mibs -r "$RANGE_START-$RANGE_END" "${GET[@]}")
if [[ -n $NGINX_PID ]]; then
    nginx_warm=$(reps curl_mibs "$NGINX_URL")
    nginx_range=$(reps curl_mibs -r "$RANGE_START-$RANGE_END" "$NGINX_URL")
    nginx_cold=$(COLD=1 reps curl_mibs "$NGINX_URL")
else
    nginx_warm= nginx_range= nginx_cold=
fi
bulk download_warm "$ours_warm" "nginx sendfile, warm" "$nginx_warm" ">= 0.8"
bulk download_range "$ours_range" "nginx sendfile, same range ($RANGE_MIB MiB), warm" "$nginx_range" ">= 0.8"
bulk nginx_cold "${nginx_cold:-0}" "cat of the raw object, cold" "$raw_cold" "(reference)"
# HTTPS, warm: the daemon over HTTP/1.1 and HTTP/2 against nginx (OpenSSL)
# with the same certificate and protocol; reported, no target (the issue
# asks for what rustls allows; curl decrypts on the same CPUs).
if [[ -n $TLS_URL ]]; then
    TLS_GET=("${TLS_CURL[@]}" "$TLS_URL/api/v1/fs/big.dat" -H "$AUTH")
    tls_h1=$(WARM=$TLS_OBJ reps curl_mibs --http1.1 "${TLS_GET[@]}")
    tls_h2=$(WARM=$TLS_OBJ reps curl_mibs --http2 "${TLS_GET[@]}")
    nginx_tls_h1= nginx_tls_h2=
    if [[ -n $NGINX_PID ]]; then
        NGINX_TLS_URL=https://127.0.0.1:$NGINX_TLS_PORT/$(basename "$OBJ")
        nginx_tls_h1=$(reps curl_mibs --http1.1 "${TLS_CURL[@]}" "$NGINX_TLS_URL")
        nginx_tls_h2=$(reps curl_mibs --http2 "${TLS_CURL[@]}" "$NGINX_TLS_URL")
    fi
    bulk tls_download_h1 "$tls_h1" "nginx, TLS, HTTP/1.1, warm" "$nginx_tls_h1" "(reported)"
    bulk tls_download_h2 "$tls_h2" "nginx, TLS, HTTP/2, warm" "$nginx_tls_h2" "(reported)"
    rm -f "$T/mnt-tls/big.dat"
fi
# nginx is done with: stop it (once sure it is ours).
stop_ours "$NGINX_PID" "nginx.*$T/nginx/nginx.conf" QUIT
NGINX_PID=
rm -f "$T/mnt/big.dat"

# Upload: the source warm in the page cache on both sides; cp then fsync
# (coreutils sync FILE) into BACKING, and a PUT that answers once durable.
raw_up() {
    rm -f "$T/backing/up.raw"
    timed_mibs "$BIG_MIB" sh -c 'cp "$1" "$2" && sync "$2"' - "$T/src.dat" "$T/backing/up.raw"
}
ours_up() {
    # A new file each time, as on the raw side (replacing one would add
    # moving the old version to the trash).
    rm -f "$T/mnt/up.dat"
    sync
    curl_mibs -T "$T/src.dat" -H "$AUTH" "$URL/api/v1/fs/up.dat"
}
r_raw=() r_ours=()
for _ in $(seq "$API_REPS"); do
    drop
    warm "$T/src.dat"
    r_raw+=("$(raw_up)")
    drop
    warm "$T/src.dat"
    r_ours+=("$(ours_up)")
done
bulk upload "$(median "${r_ours[@]}")" "cp + fsync into BACKING" "$(median "${r_raw[@]}")" ">= 0.9"
# HTTPS uploads, HTTP/1.1 and HTTP/2 (the protocol Go and browsers pick
# over TLS), against the same cp + fsync figure.
if [[ -n $TLS_URL ]]; then
    tls_up() { # curl protocol flag
        rm -f "$T/mnt-tls/up.dat"
        sync
        curl_mibs "$1" "${TLS_CURL[@]}" -T "$T/src.dat" -H "$AUTH" "$TLS_URL/api/v1/fs/up.dat"
    }
    for row in h1:--http1.1 h2:--http2; do
        r=()
        for _ in $(seq "$API_REPS"); do
            drop
            warm "$T/src.dat"
            r+=("$(tls_up "${row#*:}")")
        done
        bulk "tls_upload_${row%%:*}" "$(median "${r[@]}")" "cp + fsync into BACKING" "$(median "${r_raw[@]}")" "(reported)"
    done
    rm -f "$T/mnt-tls/up.dat" "$T/mnt-tls/six"
fi
# A far client: the same HTTPS upload through a proxy that delays each way
# (a round trip of twice BENCH_API_RTT_MS). HTTP/2 sends at most its
# flow-control window per round trip, HTTP/1.1 TCP's window.
if [[ -n $TLS_URL && $API_RTT_MS != 0 ]]; then
    PROXY_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    python3 "$ROOT/benches/delay_proxy.py" "$PROXY_PORT" "$TLS_PORT" "$API_RTT_MS" &
    PROXY_PID=$!
    for _ in $(seq 50); do
        curl -sf -o /dev/null "${TLS_CURL[@]}" "https://127.0.0.1:$PROXY_PORT/health/live" && break
        sleep 0.1
    done
    head -c 256M "$T/src.dat" >"$T/src-rtt.dat"
    rtt_up() { # curl protocol flag
        rm -f "$T/mnt-tls/up.dat"
        curl_mibs "$1" "${TLS_CURL[@]}" -T "$T/src-rtt.dat" -H "$AUTH" "https://127.0.0.1:$PROXY_PORT/api/v1/fs/up.dat"
    }
    declare -A rtt=()
    for row in h1:--http1.1 h2:--http2; do
        r=()
        for _ in $(seq "$API_REPS"); do r+=("$(rtt_up "${row#*:}")"); done
        rtt[${row%%:*}]=$(median "${r[@]}")
    done
    bulk rtt_upload_h1 "${rtt[h1]}" "(a ${API_RTT_MS} ms each way proxy, 256 MiB)" "" "(reported)"
    bulk rtt_upload_h2 "${rtt[h2]}" "the same over HTTP/1.1" "${rtt[h1]}" "(reported)"
    stop_ours "$PROXY_PID" delay_proxy.py
    PROXY_PID=
    rm -f "$T/mnt-tls/up.dat" "$T/src-rtt.dat"
fi
rm -f "$T/backing/up.raw" "$T/mnt/up.dat" "$T/src.dat"
echo
python3 - "$RESULTS" "$API_CLIENTS" <<'PYEOF' | tee "$T/api_table.txt"
import json, sys
c = sys.argv[2]
targets = {"get_small_ka_c1": "p50 < 1 ms, p99 < 5 ms",
           "get_small_ka_c" + c: ">= 10000 req/s (at 32 clients)",
           "live_ka_c" + c: "reference: no auth, no store",
           "tls_get_small_ka_c1": "HTTPS (reported)",
           "tls_get_small_ka_c" + c: "HTTPS (reported)"}
rows = [("api row", "req/s", "p50 ms", "p99 ms", "failed", "non-2xx", "target")]
for line in open(sys.argv[1]):
    parts = line.split(None, 3)
    if len(parts) == 4 and parts[0] == "api":
        j = json.loads(parts[3])
        rows.append((parts[1], "%.0f" % j["value"], "%.2f" % j["p50_ms"], "%.2f" % j["p99_ms"],
                     str(j["failed"]), str(j["non_2xx"]), targets.get(parts[1], "")))
def table(rows, left):
    w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        print("| " + " | ".join(x.ljust(w[j]) if j in left else x.rjust(w[j]) for j, x in enumerate(r)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (x + 2) for x in w) + "|")
table(rows, (0, 6))
bulk = [("api bulk row", "MiB/s", "reference", "ref MiB/s", "ratio", "target", "")]
for line in open(sys.argv[1]):
    parts = line.split(None, 3)
    if len(parts) == 4 and parts[0] == "api_bulk":
        j = json.loads(parts[3])
        ref = j["reference_mib_s"]
        ratio = j["value"] / ref if ref else None
        need = j["target"][3:] if j["target"].startswith(">= ") else None
        verdict = "" if ratio is None or need is None else ("ok" if ratio >= float(need) else "MISS")
        bulk.append((parts[1], "%.0f" % j["value"], j["reference"], "%.0f" % ref if ref else "-",
                     "%.2f" % ratio if ratio is not None else "-", j["target"], verdict))
if len(bulk) > 1:
    print()
    table(bulk, (0, 2, 5))
PYEOF
rm -f "$T/mnt/six"
fi

# The million-file run (opt-in: BENCH_PHASES=scale, minutes long). One
# process creates BENCH_SCALE_FILES files of 100 bytes on each side; then
# `ls -l` of one directory and `find` over all of them, warm (just
# written) and cold (page cache, dentries and inodes dropped; the daemon's
# own caches are part of artfs and stay); last, how long the daemon takes
# to exit once `umount` has returned.
if [[ $PHASES == *scale* ]]; then
    SCALE_N=${BENCH_SCALE_FILES:-1000000}
    SCALE_DIRS=${BENCH_SCALE_DIRS:-10}
    echo "== scale: $SCALE_N files of 100 B in $SCALE_DIRS directories, one process"
    secs() { # cmd... : wall seconds of the command, its output discarded
        local t0 t1
        t0=$(date +%s.%N)
        "$@" >/dev/null
        t1=$(date +%s.%N)
        python3 -c 'import sys; print(float(sys.argv[2]) - float(sys.argv[1]))' "$t0" "$t1"
    }
    scale_record() { # side metric value
        echo "$1 scale_$2 $3 {}" >>"$RESULTS"
        printf '  %-6s %-18s %12.3f\n' "$1" "$2" "$3"
    }
    for s in raw artfs; do
        d=${DIRS[$s]}/scale
        mkdir "$d"
        drop
        pid=
        [[ $s == artfs ]] && pid=$PID
        python3 "$PY" scale "$d" "$SCALE_N" "$SCALE_DIRS" $pid | tee "$T/scale-$s.jsonl"
        python3 - "$T/scale-$s.jsonl" "$s" >>"$RESULTS" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
first, last = rows[0], rows[-1]
side = sys.argv[2]
print("%s scale_rate_first %f {}" % (side, first["value"]))
print("%s scale_rate_last %f {}" % (side, last["value"]))
print("%s scale_files %d {}" % (side, last["files"]))
if last.get("rss_mib") is not None:
    print("%s scale_rss_mib %f {}" % (side, last["rss_mib"]))
PYEOF
        sync
        scale_record "$s" ls_l_warm "$(secs ls -l "$d/d00")"
        scale_record "$s" find_warm "$(secs find "$d")"
        drop
        scale_record "$s" ls_l_cold "$(secs ls -l "$d/d00")"
        drop
        scale_record "$s" find_cold "$(secs find "$d")"
    done
    # Unmount to exit: the daemon's pid, started by this script.
    t0=$(date +%s.%N)
    fusermount3 -u "$T/mnt"
    t1=$(date +%s.%N)
    wait "$PID" || true
    t2=$(date +%s.%N)
    PID=
    scale_record artfs umount "$(python3 -c 'import sys; print(float(sys.argv[2]) - float(sys.argv[1]))' "$t0" "$t1")"
    scale_record artfs exit_after_umount "$(python3 -c 'import sys; print(float(sys.argv[2]) - float(sys.argv[1]))' "$t1" "$t2")"
    python3 "$PY" scale-report "$RESULTS" "$SCALE_DIRS" | tee "$T/scale_table.txt"
    # Where the daemon's time per file went, stretch by stretch.
    python3 "$PY" scale-threads "$T/scale-artfs.jsonl" | tee -a "$T/scale_table.txt"
fi

echo
if [[ $PHASES == *io* || $PHASES == *meta* ]]; then
    python3 "$PY" report "$RESULTS" | tee "$T/table.txt"
else
    : >"$T/table.txt"
fi
mkdir -p "$OUT_DIR"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
{
    cat "$RESULTS"
    echo
    cat "$T/table.txt"
    if [[ -f $T/api_table.txt ]]; then echo; cat "$T/api_table.txt"; fi
    if [[ -f $T/scale_table.txt ]]; then echo; cat "$T/scale_table.txt"; fi
} >"$OUT_DIR/workload-$stamp.txt"
echo "results: $OUT_DIR/workload-$stamp.txt"
