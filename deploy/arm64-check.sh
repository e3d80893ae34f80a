#!/usr/bin/env bash
# arm64, really run: build fastraft's Cython extension in a Debian 12 arm64 userland under QEMU
# user emulation, run the core and storage tests there and a 3-member walkthrough (`fastraft
# demo`: writes, the leader killed, quorum lost and regained, the data read back).
#
#   sudo deploy/arm64-check.sh            # on demand; about an hour on 2 cores (deploy/README.md)
#
# Needs root, Debian's qemu-user-static, binfmt-support and debootstrap. The userland is kept in
# $ARM64_ROOT (default /var/tmp/fastraft-arm64) and reused by the next run; the source is copied
# in fresh each time. Python packages come from PyPI (rocksdict, uvloop, msgpack ship aarch64
# wheels); the Debian mirror is the host's own (from its apt sources) unless $MIRROR is set.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$(pwd)
ROOT=${ARM64_ROOT:-/var/tmp/fastraft-arm64}
SUITE=${SUITE:-bookworm}
# The random-fault simulations sweep 120 and 50 seeds natively (minutes on 2 shared cores);
# under emulation each seed costs 10-20x, so fewer by default (>= 10 keeps the sweep's own
# checks that crashes, snapshots, transfers and membership changes did happen).
SIM_SEEDS=${SIM_SEEDS:-20}
start=$(date +%s)
say() { echo "[arm64-check $(( $(date +%s) - start ))s] $*"; }

[ "$(id -u)" -eq 0 ] || { echo "arm64-check: needs root (debootstrap, chroot)" >&2; exit 2; }
for tool in qemu-aarch64-static debootstrap update-binfmts; do
    command -v "$tool" >/dev/null || {
        echo "arm64-check: $tool missing: apt-get install qemu-user-static binfmt-support debootstrap" >&2
        exit 2; }
done
# The kernel runs aarch64 binaries through QEMU once binfmt_misc knows the interpreter.
if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || {
    echo "arm64-check: binfmt_misc has no qemu-aarch64 entry" >&2; exit 2; }

if [ -z "${MIRROR:-}" ]; then
    MIRROR=$(grep -h -m1 '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | head -1 || true)
    [ -n "$MIRROR" ] || MIRROR=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
fi

if [ ! -x "$ROOT/usr/bin/python3" ]; then
    say "debootstrap --arch arm64 $SUITE into $ROOT"
    rm -rf "$ROOT"
    debootstrap --arch arm64 --variant=minbase \
        --include=python3,python3-venv,python3-dev,gcc,libc6-dev,ca-certificates,procps \
        "$SUITE" "$ROOT" ${MIRROR:+"$MIRROR"} > /var/tmp/fastraft-arm64-debootstrap.log 2>&1 || {
        tail -20 /var/tmp/fastraft-arm64-debootstrap.log >&2; exit 1; }
fi

mounted=()
cleanup() {
    for ((i=${#mounted[@]}-1; i>=0; i--)); do umount -l "${mounted[$i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
for m in proc sys dev; do
    mkdir -p "$ROOT/$m"
    if [ "$m" = proc ]; then mount -t proc proc "$ROOT/proc"; else mount --rbind "/$m" "$ROOT/$m"; fi
    mounted+=("$ROOT/$m")
done
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
# The host's trust store: where TLS to the package index passes a proxy with its own CA, the
# host trusts it and a fresh userland does not.
cp -L /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
# A clean environment in the chroot: none of the host's PIP_* or paths leak in.
in_chroot() {
    chroot "$ROOT" /usr/bin/env -i HOME=/root LANG=C.UTF-8 \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        /bin/bash -euo pipefail -c "$1"
}

say "copying the source tree"
rm -rf "$ROOT/src/fastraft"
mkdir -p "$ROOT/src/fastraft"
# Tracked files and new ones, not build products or virtualenvs.
git ls-files -co --exclude-standard -z | tar -C "$SRC" --null -T - -cf - | tar -C "$ROOT/src/fastraft" -xf -

say "uname -m in the chroot: $(chroot "$ROOT" uname -m)"
in_chroot '
    cd /src/fastraft
    [ -x /opt/venv/bin/python ] || python3 -m venv /opt/venv
    . /opt/venv/bin/activate
    export PIP_DISABLE_PIP_VERSION_CHECK=1
    # Only binary wheels for the dependencies (a source build of rocksdict under emulation
    # would take hours): if an aarch64 wheel were missing, this fails here and says which.
    pip install -q --only-binary=:all: "Cython>=3.0" "setuptools>=68" wheel uvloop rocksdict \
        msgpack click pytest pytest-benchmark hypothesis
    python -c "import platform, sys; print(\"python\", sys.version.split()[0], platform.machine())"
    t0=$(date +%s)
    pip install -q --no-build-isolation --no-deps .
    echo "extension built and installed in $(( $(date +%s) - t0 ))s:" \
        "$(python -c "import fastraft._core as c; print(c.__file__)")"
'
say "core and storage tests (simulation sweeps: $SIM_SEEDS seeds each)"
in_chroot "
    export FASTRAFT_SIM_SEEDS=$SIM_SEEDS
"'
    cd /src/fastraft && . /opt/venv/bin/activate
    python -m pytest -q -p no:cacheprovider \
        tests/core tests/storage
'
say "3-member walkthrough (fastraft demo)"
in_chroot '
    cd / && . /opt/venv/bin/activate
    fastraft demo
'
say "PASSED on $(date -u +%Y-%m-%d) in $(( $(date +%s) - start ))s"
