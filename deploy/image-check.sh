#!/usr/bin/env bash
# Three members from the built image, where containers cannot run (this sandbox: crun refuses
# setrlimit and hybrid cgroups, deploy/README.md): the image's root filesystem (`podman image
# mount`) is entered with chroot as the image's user 10001, each member with its own data volume
# bind-mounted at /var/lib/fastraft in a mount namespace of its own, the image's command
# (`fastraft statefulset run`) and FASTRAFT_HOSTS mapping fastraft-0..2 to 127.77.0.10-12.
#
#   sudo deploy/image-check.sh [IMAGE]      # default localhost/fastraft:0.1.0, built beforehand:
#   podman build --isolation chroot -f deploy/Dockerfile -t localhost/fastraft:0.1.0 .
set -euo pipefail
IMAGE=${1:-localhost/fastraft:0.1.0}
NET=${NET:-127.77.0.}
[ "$(id -u)" -eq 0 ] || { echo "image-check: needs root" >&2; exit 2; }
work=$(mktemp -d /var/tmp/fastraft-image-check.XXXXXX)
root=$(podman image mount "$IMAGE")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    podman image unmount "$IMAGE" >/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
hosts="fastraft-0=${NET}10,fastraft-1=${NET}11,fastraft-2=${NET}12"
in_image() {  # (in_image ORDINAL CMD...): pod ORDINAL's command replaces the calling subshell
    local i=$1; shift
    exec unshare -m /bin/sh -c 'mount --bind "$1" "$2/var/lib/fastraft" && shift 2 && exec "$@"' _ \
        "$work/fastraft-$i" "$root" \
        chroot --userspec=10001:10001 "$root" /usr/bin/env -i HOME=/var/lib/fastraft \
        PATH=/usr/local/bin:/usr/bin:/bin HOSTNAME="fastraft-$i" FASTRAFT_HOSTS="$hosts" \
        FASTRAFT_DATA_DIR=/var/lib/fastraft/data PYTHONDONTWRITEBYTECODE=1 "$@"
}
for i in 0 1 2; do
    mkdir -p "$work/fastraft-$i" && chown 10001:10001 "$work/fastraft-$i"
    # exec all the way down: the PID kept is the member's, and SIGTERM reaches it
    (cd / && in_image "$i" fastraft statefulset run > "$work/fastraft-$i.log" 2>&1) &
    pids+=($!)
done
eps="${NET}10:2379,${NET}11:2379,${NET}12:2379"
ctl() { (in_image 0 fastractl --endpoints="$eps" "$@"); }
for _ in $(seq 1 100); do
    if ctl endpoint health >/dev/null 2>&1; then break; fi
    sleep 0.2
done
ctl endpoint status -w table
ctl put aaa bbb
ctl get aaa
echo "HEALTHCHECK (fastraft statefulset probe /health) in fastraft-0:"
(in_image 0 fastraft statefulset probe /health) || echo "  -> exit $?"
echo "image-check: 3 members from $IMAGE served a put and a read"
