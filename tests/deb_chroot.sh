#!/bin/sh
# Run a command against a throwaway Debian chroot of SUITE:
#
#     tests/deb_chroot.sh SUITE BASE COMMAND...
#
# BASE (say .deb-test/trixie-root) is `debootstrap SUITE` from DEBIAN_MIRROR, made once and
# reused: each run gets a writable overlay on it (BASE's sibling BASE.run/root), so
# what one run installs never reaches the next. The run also gets /proc, and the
# packages apt downloads are kept in BASE.apt-cache for the next run. COMMAND runs on
# this machine with CHROOT set to the overlay's path; when it ends, however it ends,
# anything still running in the chroot is stopped and everything is unmounted.
set -eu

suite=${1:?usage: tests/deb_chroot.sh SUITE BASE COMMAND...}
base=${2:?usage: tests/deb_chroot.sh SUITE BASE COMMAND...}
shift 2
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

if [ ! -d "$base" ]; then
    started=$(date +%s)
    rm -rf --one-file-system "$base.tmp"
    # man-db as on an installed system, for `man pypicached-admin`
    debootstrap --include=man-db "$suite" "$base.tmp" "$mirror"
    # the sources a Debian installer writes: the release, its updates and security
    rm -f "$base.tmp/etc/apt/sources.list"
    cat > "$base.tmp/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    chroot "$base.tmp" apt-get clean
    mv "$base.tmp" "$base"
    echo "debootstrap $suite: $(( $(date +%s) - started ))s" >&2
fi

run="$base.run"
root=$(realpath -m "$run/root")
cache=$(realpath -m "$base.apt-cache")

cleanup() {
    status=$?
    # what the command left running in the chroot, and nothing else
    for proc in /proc/[0-9]*; do
        if [ "$(readlink "$proc/root" 2>/dev/null)" = "$root" ]; then
            kill -9 "${proc#/proc/}" 2>/dev/null || true
        fi
    done
    if mountpoint -q "$root"; then
        umount --recursive "$root" || umount --recursive --lazy "$root"
    fi
    rm -rf --one-file-system "$run"
    exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if mountpoint -q "$root"; then  # left by a run that was killed
    umount --recursive "$root"
fi
rm -rf --one-file-system "$run"
mkdir -p "$run/upper" "$run/work" "$root" "$cache/partial"
mount -t overlay overlay -o "lowerdir=$(realpath "$base"),upperdir=$run/upper,workdir=$run/work" "$root"
mount -t proc proc "$root/proc"
mount --bind "$cache" "$root/var/cache/apt/archives"
chroot "$root" chown _apt:root /var/cache/apt/archives/partial  # apt downloads as its own user
cp /etc/resolv.conf "$root/etc/resolv.conf"

CHROOT=$root "$@"
