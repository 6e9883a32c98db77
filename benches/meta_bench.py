#!/usr/bin/env python3
"""Metadata workloads and the result table for scripts/bench.sh.

Python 3 standard library only. Subcommands:

  meta_bench.py create  DIR N          create+write 4 KiB+close of N new files
  meta_bench.py stat    DIR N PASSES   os.stat of the N files, PASSES passes
  meta_bench.py readdir DIR N PASSES   os.listdir of DIR (N entries), PASSES passes
  meta_bench.py open_read DIR N PASSES open+read 4 KiB+close of the N files,
                                       PASSES passes (and the rate of all but
                                       the first, warm_files_s)
  meta_bench.py unlink  DIR N          os.unlink of the N files
  meta_bench.py scale   DIR N DIRS [PID]  create+write 100 B+close of N files
                                       spread over DIRS directories, one
                                       JSON line per checkpoint (the rate of
                                       the first 10 000 files, then of the
                                       last 50 000; PID's RSS, and the CPU
                                       each of PID's threads and this
                                       process spent per file)
  meta_bench.py scale-threads JSONL    that CPU per file as a table
  meta_bench.py scale-report RESULTS DIRS  the scale run's table
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
    # Reading many small files whole (an archive's typical read): an OPEN
    # and a RELEASE round trip per file; the bytes by passthrough.
    ("open_read", "open+read 4K+close", "files/s", 0.1, None),
    ("open_read_warm", "open+read 4K+close, warm", "files/s", 0.1, None),
    ("unlink", "unlink", "files/s", 0.2, 0.08),
    # The same files just written, every cache warm (as `rm -rf` right
    # after an import): raw ext4 at its fastest. No bindfs figure.
    ("stat_warm", "stat, just written", "ops/s", 0.5, None),
    ("unlink_warm", "unlink, just written", "files/s", 0.2, None),
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


def w_open_read(d, n, passes):
    paths = names(d, n)
    flags = os.O_RDONLY | os.O_CLOEXEC
    op, rd, cl = os.open, os.read, os.close
    per, secs = [], []
    t0 = time.perf_counter()
    for _ in range(passes):
        t = time.perf_counter()
        for p in paths:
            fd = op(p, flags)
            got = len(rd(fd, 4096))
            cl(fd)
            if got != 4096:
                sys.exit("open_read: %s gave %d bytes, not 4096" % (p, got))
        secs.append(time.perf_counter() - t)
        per.append(round(n / secs[-1]))
    # The passes after the first, every cache warm: the round trips alone.
    warm = n * (passes - 1) / sum(secs[1:]) if passes > 1 else 0.0
    emit(n * passes, time.perf_counter() - t0, per_pass_files_s=per, warm_files_s=round(warm))


def w_unlink(d, n):
    paths = names(d, n)
    ul = os.unlink
    t = time.perf_counter()
    for p in paths:
        ul(p)
    emit(n, time.perf_counter() - t)


SCALE_STRETCH = 10000
SCALE_LATE = 50000


def rss_mib(pid):
    if not pid:
        return None
    with open("/proc/%s/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return None


def thread_cpu(pid):
    """CPU seconds per thread group of process `pid` (threads named alike,
    such as tokio's or SQLite's workers, summed), plus this process's own
    as "client"."""
    tick = os.sysconf("SC_CLK_TCK")
    cpu = {}
    if pid:
        for t in os.listdir("/proc/%s/task" % pid):
            try:
                with open("/proc/%s/task/%s/stat" % (pid, t)) as f:
                    st = f.read()
            except OSError:
                continue  # the thread ended meanwhile
            name = st[st.index("(") + 1:st.rindex(")")].rstrip("0123456789-")
            fields = st[st.rindex(")") + 2:].split()
            cpu[name] = cpu.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    t = os.times()
    cpu["client"] = t.user + t.system
    return cpu


def w_scale(d, n, ndirs, pid=None):
    """The million-file run (issue 19): files d/dNN/fNNNNNNN, filled one
    directory after the other, so each directory ends with n/ndirs
    entries. At the first checkpoint, the rate of the first SCALE_STRETCH
    files; at each later one, the rate over the last SCALE_LATE files
    (a longer stretch: background work, such as the sidecars, comes in
    waves of about a second). A fall from the first checkpoint to the
    last is what grows with the store (tables, indexes, caches), not
    the directory's size alone. Each checkpoint also gives the CPU
    microseconds per file that this process and each of `pid`'s threads
    spent over the stretch (where a fall comes from)."""
    per_dir = n // ndirs
    # Stretches must not overlap: each mark a whole stretch after the one
    # before; the last mark is n.
    marks = [SCALE_STRETCH]
    for m in (100000, 250000, 500000, 750000, n):
        if m - marks[-1] >= SCALE_LATE and (m == n or n - m >= SCALE_LATE):
            marks.append(m)
    starts = {m - (SCALE_STRETCH if i == 0 else SCALE_LATE): m for i, m in enumerate(marks)}
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC
    op, wr, cl = os.open, os.write, os.close
    data = b"\x5a" * 100
    done = 0
    t_stretch = time.perf_counter()
    cpu_stretch = thread_cpu(pid)
    t0 = t_stretch
    for k in range(ndirs):
        sub = os.path.join(d, "d%02d" % k)
        os.mkdir(sub)
        for i in range(per_dir):
            if done in starts:
                t_stretch = time.perf_counter()
                cpu_stretch = thread_cpu(pid)
            fd = op(os.path.join(sub, "f%07d" % i), flags, 0o644)
            wr(fd, data)
            cl(fd)
            done += 1
            if done in marks:
                now = time.perf_counter()
                cpu = thread_cpu(pid)
                stretch = SCALE_STRETCH if done == marks[0] else SCALE_LATE
                us = {k: round((v - cpu_stretch.get(k, 0.0)) * 1e6 / stretch, 1)
                      for k, v in sorted(cpu.items())}
                print(json.dumps({"files": done, "stretch": stretch,
                                  "value": stretch / (now - t_stretch),
                                  "elapsed_s": round(now - t0, 1), "rss_mib": rss_mib(pid),
                                  "cpu_us_per_file": {k: v for k, v in us.items() if v > 0}}),
                      flush=True)


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


def bfmt(v):
    return "-" if v is None else "%.2f" % v


def print_table(rows):
    """A Markdown table: the first row is the header; the first two
    columns left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        cells = [c.ljust(widths[j]) if j < 2 else c.rjust(widths[j]) for j, c in enumerate(r)]
        print("| " + " | ".join(cells) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def report_cap(res, side="cap", title="--capacity"):
    """A mount with a capacity against raw, with the same targets."""
    if not any(s == side for s, _ in res):
        return
    rows = [("metric (%s)" % title, "unit", "raw", side, "ratio", "target", "")]
    below = 0
    for key, label, unit, target, _ in METRICS:
        raw, cap = res.get(("raw", key)), res.get((side, key))
        if raw is None or cap is None:
            continue
        ratio = cap / raw if raw > 0 else 0.0
        ok = ratio >= target
        below += not ok
        rows.append((label, unit, fmt(raw), fmt(cap), "%.2f" % ratio, ">= %.2f" % target,
                     "ok" if ok else "BELOW"))
    print()
    print_table(rows)
    print("\n%d of %d %s rows below target" % (below, len(rows) - 1, title))


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
            rows.append((label, unit, "-", "-", "-", "%.2f" % target, bfmt(bindfs), "missing"))
            below += 1
            continue
        ratio = art / raw if raw > 0 else 0.0
        ok = ratio >= target
        below += not ok
        rows.append((label, unit, fmt(raw), fmt(art), "%.2f" % ratio, ">= %.2f" % target,
                     bfmt(bindfs), "ok" if ok else "BELOW"))
    print_table(rows)
    print("\n%d of %d rows below target" % (below, len(METRICS)))
    report_cap(res)
    report_cap(res, "cappt", "--capacity --capacity-passthrough")
    report_cap(res, "ro", "ro mode, with the capacity")
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


def scale_report(path, ndirs):
    """The scale run's table: each side's own fall in create rate, the
    daemon's memory and exit, and ls -l / find against raw."""
    res = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[1].startswith("scale_"):
                res[(parts[0], parts[1][6:])] = float(parts[2])
    if not res:
        return
    g = lambda side, k: res.get((side, k))
    secs = lambda v: "%.3f" % v
    n = int(g("artfs", "files") or g("raw", "files") or 0)
    rows = [("scale row", "raw", "artfs", "ratio", "target", "")]

    def row(label, raw, art, ratio, target, ok, f=fmt):
        rows.append((label, "-" if raw is None else f(raw), "-" if art is None else f(art),
                     "-" if ratio is None else "%.2f" % ratio, target,
                     "" if ok is None else ("ok" if ok else "MISS")))

    for side in ("raw", "artfs"):
        first, last = g(side, "rate_first"), g(side, "rate_last")
        if first and last:
            row("%s: files/s, last 50k of %d / first 10k" % (side, n),
                first if side == "raw" else None, None if side == "raw" else first,
                last / first, ">= 0.80" if side == "artfs" else "",
                last / first >= 0.8 if side == "artfs" else None)
    raw_last, art_last = g("raw", "rate_last"), g("artfs", "rate_last")
    if raw_last and art_last:
        row("create files/s at %d" % n, raw_last, art_last, art_last / raw_last, "", None)
    rss = g("artfs", "rss_mib")
    if rss is not None:
        row("daemon RSS MiB at %d files" % n, None, rss, None, "<= 200", rss <= 200)
    for k, label in (("ls_l_warm", "ls -l of %d entries, warm, s" % (n // ndirs)),
                     ("ls_l_cold", "ls -l of %d entries, cold, s" % (n // ndirs)),
                     ("find_warm", "find over %d files, warm, s" % n),
                     ("find_cold", "find over %d files, cold, s" % n)):
        raw, art = g("raw", k), g("artfs", k)
        if raw is not None and art is not None:
            # A ratio of speeds (raw time / artfs time), as every other row.
            row(label, raw, art, raw / art if art > 0 else None, "measured", None, secs)
    ex = g("artfs", "exit_after_umount")
    if ex is not None:
        row("daemon exit after umount returned, s", None, ex, None, "< 2", ex < 2, secs)
    print()
    print_table(rows)


def scale_threads(path):
    """CPU microseconds per file, per thread group (rows) and checkpoint
    (columns), from the scale run's JSON lines."""
    rows = [json.loads(line) for line in open(path)]
    rows = [r for r in rows if r.get("cpu_us_per_file")]
    if not rows:
        return
    last = rows[-1]["cpu_us_per_file"]
    names = sorted({k for r in rows for k in r["cpu_us_per_file"]},
                   key=lambda k: (k == "client", -last.get(k, 0)))
    table = [["CPU us per file", "thread"] + ["at %dk" % (r["files"] // 1000) for r in rows]]
    for k in names:
        table.append([k, "client" if k == "client" else "daemon"]
                     + ["%.1f" % r["cpu_us_per_file"].get(k, 0) for r in rows])
    table.append(["files/s", ""] + ["%.0f" % r["value"] for r in rows])
    print()
    print_table([tuple(r) for r in table])


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
    elif cmd == "open_read":
        w_open_read(args[0], int(args[1]), int(args[2]))
    elif cmd == "unlink":
        w_unlink(args[0], int(args[1]))
    elif cmd == "scale":
        w_scale(args[0], int(args[1]), int(args[2]), args[3] if len(args) > 3 else None)
    elif cmd == "scale-threads":
        scale_threads(args[0])
    elif cmd == "scale-report":
        scale_report(args[0], int(args[1]))
    elif cmd == "fio":
        fio_figure(args[0], args[1])
    elif cmd == "report":
        report(args[0])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
