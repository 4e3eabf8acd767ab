#!/usr/bin/env bash
# Builds the raftkv Docker image without pulling anything: `FROM scratch`
# plus the raftkv binary (and, if the binary is dynamically linked, the
# exact shared libraries and loader `ldd` lists). The machine this project
# runs on has a Docker engine but no image registry, so no base image can be
# pulled; a binary that brings its own libc needs none.
#
#   scripts/docker-image.sh                      # static release build, tag raftkv:local
#   scripts/docker-image.sh --binary target/debug/raftkv --tag raftkv:test
#
# Without --binary it builds a statically linked release binary
# (`-C target-feature=+crt-static` on the host's glibc target, in its own
# target directory, target/<triple>/release, so the usual build cache is
# untouched). glibc >= 2.34 has its `files` and `dns` name services inside
# libc itself, so a static binary still resolves compose service names
# (Docker's /etc/hosts and its DNS server at 127.0.0.11): the compose test
# (crates/raftkv/tests/docker_compose.rs) checks that the nodes find each
# other by name.
#
# Debug information is stripped from the copy that goes into the image
# (when objcopy is there): a debug binary is ten times larger than the
# code in it, and every byte is sent to the engine on each build.
set -euo pipefail

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    echo "options: --binary PATH  --tag NAME[:TAG]  --no-strip  --help"
}

root="$(cd "$(dirname "$0")/.." && pwd)"
binary=""
tag="raftkv:local"
strip=1
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) binary="${2:?--binary needs a path}"; shift 2 ;;
        --tag) tag="${2:?--tag needs a name}"; shift 2 ;;
        --no-strip) strip=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "error: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
done

command -v docker >/dev/null || { echo "error: docker is not installed" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "error: no Docker engine answers (is the daemon running?)" >&2; exit 1; }

if [ -z "$binary" ]; then
    triple="$(rustc -vV | sed -n 's/^host: //p')"
    case "$triple" in
        *-linux-gnu) ;;
        *) echo "error: static builds are set up for *-linux-gnu hosts, not $triple; pass --binary" >&2; exit 1 ;;
    esac
    echo "building a static raftkv for $triple (release)..." >&2
    # --target makes RUSTFLAGS apply to the binary only, not to build
    # scripts and proc macros (which must stay dynamic to be loaded).
    (cd "$root" && RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
        cargo build --release -p raftkv --target "$triple" >&2)
    binary="$root/target/$triple/release/raftkv"
fi
[ -x "$binary" ] || { echo "error: $binary is not an executable" >&2; exit 1; }

ctx="$(mktemp -d "${TMPDIR:-/tmp}/raftkv-image.XXXXXX")"
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/etc" "$ctx/data"
cp "$root/docker/Dockerfile" "$ctx/Dockerfile"
# Host names: /etc/hosts first (Docker writes the container's own name
# there), then DNS (Docker's embedded server knows the compose services).
printf 'hosts: files dns\n' > "$ctx/rootfs/etc/nsswitch.conf"

if [ "$strip" = 1 ] && command -v objcopy >/dev/null; then
    objcopy --strip-debug "$binary" "$ctx/rootfs/raftkv"
else
    cp "$binary" "$ctx/rootfs/raftkv"
fi
chmod 0755 "$ctx/rootfs/raftkv"

# A dynamic binary needs its loader and libraries at the paths it was
# linked against. `ldd` lines are `name => /path (addr)` or, for the
# loader, `/path (addr)`; a static binary has none.
libs="$(ldd "$binary" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' || true)"
for lib in $libs; do
    mkdir -p "$ctx/rootfs$(dirname "$lib")"
    cp -L "$lib" "$ctx/rootfs$lib"
done
if [ -n "$libs" ]; then
    echo "dynamic binary: copied $(echo "$libs" | wc -w) libraries: $(echo $libs)" >&2
else
    echo "static binary: no libraries needed" >&2
fi

# The legacy builder prints a deprecation notice on every build: keep the
# output for when the build fails.
if ! out="$(docker build --quiet --tag "$tag" "$ctx" 2>&1)"; then
    echo "error: docker build failed:" >&2
    echo "$out" >&2
    exit 1
fi
# Prove the image runs (a missing library shows here, not in the cluster).
if ! out="$(docker run --rm --network none "$tag" version 2>&1)"; then
    echo "error: the image $tag does not run: $out" >&2
    exit 1
fi
echo "built $tag: $out" >&2
echo "$tag"
