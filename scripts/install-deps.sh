#!/usr/bin/env bash
# Install what a fresh Debian 12 machine lacks to build and test artfs.
# Idempotent: installs only what is missing. Needs root.
set -euo pipefail

# postgresql-15: the tests start throwaway servers of their own from its
# binaries (tests/common/pg.rs), as its `postgres` user when run as root;
# a cluster the package may start itself is not used. nginx and curl: the
# static-server reference and the client of scripts/bench.sh's api bulk
# rows (the bench starts its own nginx on a private port and config). gcc
# and make build the bundled C of SQLite and jemalloc.
pkgs=(gcc make fuse3 fio attr acl libacl1-dev redis-server sqlite3 openssl rsync apache2-utils curl nginx postgresql-15)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Python tools from PyPI: httpx plays the original Ingester's async
# uploader (tests/ingester_httpx.rs); moto_server is the S3 protocol server
# the content-store tests use.
py_missing=()
python3 -c 'import httpx' 2>/dev/null || py_missing+=(httpx)
command -v moto_server >/dev/null 2>&1 || py_missing+=('moto[server]')
if ((${#py_missing[@]})); then
    echo "installing from PyPI: ${py_missing[*]}"
    python3 -m pip install -q "${py_missing[@]}" 2>/dev/null ||
        python3 -m pip install -q --break-system-packages "${py_missing[@]}"
fi

# The POSIX conformance suite (Rust port of pjdfstest) from crates.io.
if ! command -v pjdfstest >/dev/null 2>&1; then
    cargo install pjdfstest --locked --version 0.2.2
fi

# pjdfstest switches to these users and groups.
getent group nobody >/dev/null || groupadd nobody
getent group tests >/dev/null || groupadd tests
id tests >/dev/null 2>&1 || useradd -M -g tests -s /usr/sbin/nologin tests
