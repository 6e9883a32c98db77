#!/usr/bin/env bash
# Build a Debian package of artfs with dpkg-deb (present on every Debian
# and Ubuntu; no cargo-deb needed):
#
#   scripts/build-deb.sh                 # release build, .deb in target/debian/
#   scripts/build-deb.sh --binary PATH   # package an artfs already built
#   scripts/build-deb.sh --out DIR       # write the .deb to DIR
#   scripts/build-deb.sh --compression none|gzip|xz   # default xz
#
# The package holds:
#   /usr/bin/artfs                         the daemon and every command
#   /usr/sbin/mount.artfs -> ../bin/artfs  for `mount -t artfs` (and
#                                          `-t fuse.artfs` finds /usr/bin/artfs)
#   /usr/lib/systemd/system/artfs@.service the unit (systemd/)
#   /usr/share/man/man1/artfs*.1.gz        generated from the CLI definition
#   shell completions for bash, zsh and fish (generated likewise)
#   /usr/share/doc/artfs/                  README, docs, the example config
#   /etc/artfs/                            empty: one NAME.toml per store
# Man pages and completions come from the binary being packaged, so they
# cannot drift from it. tests/packaging.rs builds one and checks it.
set -euo pipefail
cd "$(dirname "$0")/.."

binary=""
out="target/debian"
compression="xz"
while [ $# -gt 0 ]; do
    case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --compression) compression="$2"; shift 2 ;;
    -h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-deb.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

for tool in dpkg-deb dpkg gzip; do
    command -v "$tool" >/dev/null || { echo "build-deb.sh: $tool is missing" >&2; exit 1; }
done

if [ -z "$binary" ]; then
    cargo build --release --locked
    binary="target/release/artfs"
fi
[ -x "$binary" ] || { echo "build-deb.sh: $binary is not an executable" >&2; exit 1; }

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
arch=$(dpkg --print-architecture)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
chmod 755 "$stage"

install -D -m 755 "$binary" "$stage/usr/bin/artfs"
install -d "$stage/usr/sbin"
ln -s ../bin/artfs "$stage/usr/sbin/mount.artfs"
install -D -m 644 systemd/artfs@.service "$stage/usr/lib/systemd/system/artfs@.service"
install -d -m 755 "$stage/etc/artfs"

"$stage/usr/bin/artfs" man --dir "$stage/usr/share/man/man1" >/dev/null
gzip -9n "$stage"/usr/share/man/man1/*.1
"$stage/usr/bin/artfs" completions bash | install -D -m 644 /dev/stdin \
    "$stage/usr/share/bash-completion/completions/artfs"
"$stage/usr/bin/artfs" completions zsh | install -D -m 644 /dev/stdin \
    "$stage/usr/share/zsh/vendor-completions/_artfs"
"$stage/usr/bin/artfs" completions fish | install -D -m 644 /dev/stdin \
    "$stage/usr/share/fish/vendor_completions.d/artfs.fish"

doc="$stage/usr/share/doc/artfs"
install -D -m 644 README.md "$doc/README.md"
for f in docs/*.md; do install -D -m 644 "$f" "$doc/$(basename "$f")"; done
install -D -m 644 docs/artfs.example.toml "$doc/examples/artfs.example.toml"
cat >"$doc/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: artfs
License: MIT or Apache-2.0
Comment: artfs and the crates it links (see Cargo.lock) are under
 MIT and/or Apache-2.0 licences; the vendored fuser is MIT.
EOF

size=$(du -sk "$stage" | cut -f1)
install -d "$stage/DEBIAN"
cat >"$stage/DEBIAN/control" <<EOF
Package: artfs
Version: $version
Architecture: $arch
Maintainer: artfs engineers <artfs@localhost>
Installed-Size: $size
Depends: fuse3, libc6 (>= 2.34)
Recommends: ca-certificates
Suggests: postgresql-client, redis-server
Section: admin
Priority: optional
Description: crash-safe POSIX archive filesystem (FUSE) with SQL metadata
 artfs serves a store of files through a FUSE mount and an authenticated
 HTTP door: content as objects in a directory or an S3 bucket, namespace
 and metadata in SQLite or PostgreSQL, every change through a write-ahead
 intent log. Per-file archive metadata shows as extended attributes.
EOF
# The unit is enabled per store by the administrator (artfs@NAME); only
# tell systemd a new unit file is there.
cat >"$stage/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
fi
EOF
chmod 755 "$stage/DEBIAN/postinst"

mkdir -p "$out"
deb="$out/artfs_${version}_${arch}.deb"
dpkg-deb --root-owner-group "-Z$compression" --build "$stage" "$deb" >/dev/null
echo "$deb"
