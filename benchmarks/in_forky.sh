#!/bin/sh
# The CPythons the host lacks (3.14, 3.15) for the benchmarks' children, from
# the Debian forky root CI builds, beside the host's interpreters in one run.
#
#   benchmarks/in_forky.sh run COMMAND [ARG...]
#       Runs COMMAND here, on the host, in a mount namespace of its own in
#       which the root is usable: /proc and /dev mounted in it, this checkout
#       bound at its own path.  The mounts end with COMMAND; the host's mount
#       table never has them, so nobody else's mounts in the root are touched.
#       (The checkout's mount point, an empty directory, stays in the root.)
#   benchmarks/in_forky.sh PYTHON [ARG...]
#       Runs the root's /usr/bin/PYTHON (python3.14, python3.15) with ARGs, in
#       the current directory: an interpreter for a benchmark's --python.
#       Needs the mounts, as "run" makes them.
#
# From the repository root, 3.14 beside 3.11 (see benchmarks/README.md):
#
#   benchmarks/in_forky.sh run .venv/bin/python -m benchmarks.overshoot \
#       --python python3.11 --python 'benchmarks/in_forky.sh python3.14'
#
# The interpreter takes this script's process over (exec, through chroot and
# sh): the pid the benchmark started, and watches through a pidfd, is the
# interpreter's.  CLOCK_MONOTONIC is the host's in the root too, so a child's
# timestamps and the parent's compare.  Needs root (unshare, mount, chroot).
# The root is $HARDEXIT_CI_ROOT, default /var/cache/hardexit-ci/forky.
set -eu

root=${HARDEXIT_CI_ROOT:-/var/cache/hardexit-ci/forky}
checkout=$(cd "$(dirname "$0")/.." && pwd -P)

die() {
    echo "in_forky.sh: $*" >&2
    exit 2
}

[ $# -gt 0 ] || die "usage: $0 run COMMAND [ARG...] | $0 PYTHON [ARG...]"
[ "$(id -u)" -eq 0 ] || die "needs root (unshare, mount, chroot)"

if [ "$1" = run ]; then
    shift
    [ $# -gt 0 ] || die "usage: $0 run COMMAND [ARG...]"
    [ -x "$root/bin/sh" ] || die "no root at $root (CI builds it)"
    mkdir -p "$root$checkout"
    exec unshare --mount --propagation private /bin/sh -c '
        mount -t proc proc "$0/proc" && mount --rbind /dev "$0/dev" \
            && mount --bind "$1" "$0$1" || exit 2
        shift
        exec "$@"' "$root" "$checkout" "$@"
fi

python=$1
shift
here=$(pwd -P)
[ -x "$root/usr/bin/$python" ] || die "no /usr/bin/$python in $root"
if [ ! -e "$root/proc/self" ] || [ ! "$root$here" -ef "$here" ]; then
    die "$root lacks /proc or $here: run the benchmark under '$0 run'"
fi
exec chroot "$root" /bin/sh -c 'cd "$0" && exec "$@"' "$here" "/usr/bin/$python" "$@"
