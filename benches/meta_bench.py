#!/usr/bin/env python3
"""Metadata workloads and the result table for scripts/bench.sh.

Python 3 standard library only. Subcommands:

  meta_bench.py create  DIR N          create+write 4 KiB+close of N new files
  meta_bench.py stat    DIR N PASSES   os.stat of the N files, PASSES passes
  meta_bench.py readdir DIR N PASSES   os.listdir of DIR (N entries), PASSES passes
  meta_bench.py unlink  DIR N          os.unlink of the N files
  meta_bench.py fio     JSON METRIC    extract a figure from fio --output-format=json
  meta_bench.py report  RESULTS        print the table from a results file

Every workload prints one JSON object: {"value": ops_per_second, ...}.
The files are DIR/f000000 .. DIR/f{N-1:06d}; one process, one thread, the
per-call interpreter overhead (~0.1-0.3 us) is the same on both sides.
"""

import json
import os
import sys
import time

# metric key -> (label, unit, target ratio, bindfs ratio on the reference machine)
METRICS = [
    ("seq_write", "seq write 1 MiB", "MiB/s", 0.9, 0.11),
    ("seq_read", "seq read 1 MiB", "MiB/s", 0.9, 0.82),
    ("rand_read", "rand read 4 KiB", "IOPS", 0.5, 0.03),
    ("rand_write", "rand write 4 KiB", "IOPS", 0.5, 0.17),
    ("create", "create+write 4K+close", "files/s", 0.2, 0.07),
    ("stat", "stat", "ops/s", 0.5, 0.03),
    ("readdir", "readdir", "entries/s", 0.6, 0.54),
    ("unlink", "unlink", "files/s", 0.2, 0.08),
]

PAYLOAD = b"\xa5" * 4096


def names(d, n):
    return [os.path.join(d, "f%06d" % i) for i in range(n)]


def emit(ops, secs, **extra):
    out = {"value": ops / secs if secs > 0 else 0.0, "ops": ops, "secs": round(secs, 4)}
    out.update(extra)
    print(json.dumps(out))


def w_create(d, n):
    paths = names(d, n)
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC
    op, wr, cl = os.open, os.write, os.close
    data = PAYLOAD
    t = time.perf_counter()
    for p in paths:
        fd = op(p, flags, 0o644)
        wr(fd, data)
        cl(fd)
    emit(n, time.perf_counter() - t)


def w_stat(d, n, passes):
    paths = names(d, n)
    st = os.stat
    per = []
    t0 = time.perf_counter()
    for _ in range(passes):
        t = time.perf_counter()
        for p in paths:
            st(p)
        per.append(round(n / (time.perf_counter() - t)))
    emit(n * passes, time.perf_counter() - t0, per_pass_ops_s=per)


def w_readdir(d, n, passes):
    per = []
    t0 = time.perf_counter()
    for _ in range(passes):
        t = time.perf_counter()
        got = len(os.listdir(d))
        per.append(round(got / (time.perf_counter() - t)))
        if got != n:
            sys.exit("readdir: expected %d entries in %s, got %d" % (n, d, got))
    emit(n * passes, time.perf_counter() - t0, per_pass_entries_s=per)


def w_unlink(d, n):
    paths = names(d, n)
    ul = os.unlink
    t = time.perf_counter()
    for p in paths:
        ul(p)
    emit(n, time.perf_counter() - t)


def fio_figure(path, metric):
    with open(path) as f:
        text = f.read()
    # fio may print warnings before the JSON document.
    doc = json.loads(text[text.index("{"):])
    job = doc["jobs"][0]
    if metric in ("seq_write", "seq_read"):
        side = job["write" if metric == "seq_write" else "read"]
        value = side["bw_bytes"] / (1 << 20)
    else:
        side = job["write" if metric == "rand_write" else "read"]
        value = side["iops"]
    print(json.dumps({"value": value, "runtime_ms": side["runtime"],
                      "io_mib": round(side["io_bytes"] / (1 << 20), 1)}))


# The PostgreSQL side against the SQLite one of the same run: metadata rows
# may cost network round trips (>= 0.5 of SQLite); bulk I/O does not touch
# the database (>= 0.9 of raw, as for SQLite).
PG_TARGETS = {"create": 0.5, "stat": 0.5, "readdir": 0.5, "unlink": 0.5}


def fmt(v):
    if v >= 100:
        return "%.0f" % v
    return "%.1f" % v


def print_table(rows):
    """A Markdown table: the first row is the header; the first two
    columns left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        cells = [c.ljust(widths[j]) if j < 2 else c.rjust(widths[j]) for j, c in enumerate(r)]
        print("| " + " | ".join(cells) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def report_cap(res):
    """The mount with a capacity against raw, with the same targets."""
    if not any(side == "cap" for side, _ in res):
        return
    rows = [("metric (--capacity)", "unit", "raw", "cap", "ratio", "target", "")]
    below = 0
    for key, label, unit, target, _ in METRICS:
        raw, cap = res.get(("raw", key)), res.get(("cap", key))
        if raw is None or cap is None:
            continue
        ratio = cap / raw if raw > 0 else 0.0
        ok = ratio >= target
        below += not ok
        rows.append((label, unit, fmt(raw), fmt(cap), "%.2f" % ratio, ">= %.2f" % target,
                     "ok" if ok else "BELOW"))
    print()
    print_table(rows)
    print("\n%d of %d --capacity rows below target" % (below, len(rows) - 1))


def report(path):
    res = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            side, metric, value = line.split()[:3]
            res[(side, metric)] = float(value)
    rows = [("metric", "unit", "raw", "artfs", "ratio", "target", "bindfs", "")]
    below = 0
    for key, label, unit, target, bindfs in METRICS:
        raw, art = res.get(("raw", key)), res.get(("artfs", key))
        if raw is None or art is None:
            rows.append((label, unit, "-", "-", "-", "%.2f" % target, "%.2f" % bindfs, "missing"))
            below += 1
            continue
        ratio = art / raw if raw > 0 else 0.0
        ok = ratio >= target
        below += not ok
        rows.append((label, unit, fmt(raw), fmt(art), "%.2f" % ratio, ">= %.2f" % target,
                     "%.2f" % bindfs, "ok" if ok else "BELOW"))
    print_table(rows)
    print("\n%d of %d rows below target" % (below, len(METRICS)))
    report_cap(res)
    if not any(side == "pg" for side, _ in res):
        return
    rows = [("metric (PostgreSQL)", "unit", "sqlite", "pg", "pg/sqlite", "pg/raw", "target", "")]
    below = 0
    for key, label, unit, target, _ in METRICS:
        raw, art, pg = res.get(("raw", key)), res.get(("artfs", key)), res.get(("pg", key))
        if pg is None or art is None or raw is None:
            continue
        vs_sqlite, vs_raw = pg / art if art > 0 else 0.0, pg / raw if raw > 0 else 0.0
        if key in PG_TARGETS:
            goal, ok = ">= %.2f of sqlite" % PG_TARGETS[key], vs_sqlite >= PG_TARGETS[key]
        else:
            goal, ok = ">= %.2f of raw" % target, vs_raw >= target
        below += not ok
        rows.append((label, unit, fmt(art), fmt(pg), "%.2f" % vs_sqlite, "%.2f" % vs_raw, goal,
                     "ok" if ok else "BELOW"))
    print()
    print_table(rows)
    print("\n%d of %d PostgreSQL rows below target" % (below, len(rows) - 1))


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    cmd, args = argv[1], argv[2:]
    if cmd == "create":
        w_create(args[0], int(args[1]))
    elif cmd == "stat":
        w_stat(args[0], int(args[1]), int(args[2]))
    elif cmd == "readdir":
        w_readdir(args[0], int(args[1]), int(args[2]))
    elif cmd == "unlink":
        w_unlink(args[0], int(args[1]))
    elif cmd == "fio":
        fio_figure(args[0], args[1])
    elif cmd == "report":
        report(args[0])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
