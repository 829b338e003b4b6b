#!/bin/sh
# The container image pypicached:VERSION, from the signed apt repository `make apt-repo` builds,
# on Debian 13 trixie, without a registry (there is no FROM):
#
#     deploy/image/build.sh VERSION BASE REPO
#
# BASE is a debootstrapped trixie rootfs (`make deb-test-trixie` keeps one in
# .deb-test/trixie-root); it is only read: the image's rootfs is a copy of it. In the copy
# every package that is not Priority: required is purged (what debootstrap's minbase leaves
# out), with the system users and groups they left owning nothing; pypicached then brings only
# what it depends on (no recommends). The pypicached user gets the
# fixed uid/gid PYPICACHED_UID (999) before the package is installed (its postinst keeps an
# existing user). The package comes from REPO as a `file:` source trusted through its own key
# (Signed-By); apt checks the signature. Then apt's lists and caches, the documentation (but
# the copyright files), the translations, logs and the repository go, and buildah commits the
# rootfs as one layer with the image's config (user, entry point, port, volume, labels,
# healthcheck). Docker format, since the OCI image format has no HEALTHCHECK.
#
# Run as root. IMAGE names the image (default pypicached:VERSION), IMAGE_SOURCE the source
# label, IMAGE_WORK the scratch directory (default .deb-test/image).
set -eu

version=${1:?usage: deploy/image/build.sh VERSION BASE REPO}
base=$(realpath "${2:?usage: deploy/image/build.sh VERSION BASE REPO}")
repo=$(realpath "${3:?usage: deploy/image/build.sh VERSION BASE REPO}")
image=${IMAGE:-pypicached:$version}
uid=${PYPICACHED_UID:-999}
here=$(realpath "$(dirname "$0")")
work=$(realpath -m "${IMAGE_WORK:-.deb-test/image}")
root=$work/root
cache=$(realpath -m "$base.apt-cache")  # the packages deb-test-trixie downloaded, and ours for it
inside_repo=/var/tmp/pypicached-apt
keyring=/etc/apt/keyrings/pypicached.gpg
sources=/etc/apt/sources.list.d/pypicached.sources
started=$(date +%s)
container=

in_root() { chroot "$root" env DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 "$@"; }

unmount() {
    for mount in "$root/var/cache/apt/archives" "$root/proc"; do
        if mountpoint -q "$mount"; then umount "$mount" || umount --lazy "$mount"; fi
    done
}

cleanup() {
    status=$?
    unmount
    [ -z "$container" ] || buildah rm "$container" >/dev/null 2>&1 || true
    [ -n "${IMAGE_KEEP:-}" ] || rm -rf --one-file-system "$work"
    exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ -d "$base" ] || { echo "deploy/image/build.sh: no rootfs at $base" >&2; exit 2; }
unmount  # left by a run that was killed
rm -rf --one-file-system "$work"
mkdir -p "$work" "$cache/partial"
cp -a --one-file-system "$base" "$root"
mount -t proc proc "$root/proc"
mount --bind "$cache" "$root/var/cache/apt/archives"
in_root chown _apt:root /var/cache/apt/archives/partial
cp /etc/resolv.conf "$root/etc/resolv.conf"
install -m 0644 "$here/dpkg-nodoc" "$root/etc/dpkg/dpkg.cfg.d/pypicached-image-nodoc"

# minbase: what debootstrap's default variant added beyond Priority: required (and the
# libraries those need) goes. Autoremove keeps protected packages (init, e2fsprogs) and what
# is only recommended: so those by name, and no recommends kept.
# shellcheck disable=SC2016
in_root sh -c 'dpkg-query -W -f "\${Package} \${Priority}\n" | awk "\$2 != \"required\" { print \$1 }" | xargs -r apt-mark auto' >/dev/null
# shellcheck disable=SC2016
protected=$(in_root dpkg-query -W -f '${Package} ${Priority} ${Protected}\n' | awk '$2 != "required" && $3 == "yes" { print $1 }')
{
    # shellcheck disable=SC2086
    [ -z "$protected" ] || in_root dpkg --purge --force-remove-protected $protected
    in_root apt-get -q -y -o APT::AutoRemove::RecommendsImportant=false -o APT::AutoRemove::SuggestsImportant=false \
        autoremove --purge
} > "$work/purge.log" 2>&1 || { cat "$work/purge.log" >&2; exit 1; }
find "$root/run" -mindepth 1 -maxdepth 1 ! -name lock -exec rm -rf {} +  # systemd's leftovers
# and the system users and groups those packages made, where nothing is theirs any more
for id in $(awk -F: '$3 > 100 && $3 < 1000 { print $3 }' "$root/etc/passwd"); do
    [ -n "$(find "$root" -xdev -uid "$id" -print -quit)" ] || in_root userdel "$(in_root getent passwd "$id" | cut -d: -f1)"
done
for id in $(awk -F: '$3 > 100 && $3 < 1000 { print $3 }' "$root/etc/group"); do
    if [ -z "$(find "$root" -xdev -gid "$id" -print -quit)" ] && ! awk -F: -v id="$id" '$4 == id { f = 1 } END { exit !f }' "$root/etc/passwd"; then
        in_root groupdel "$(in_root getent group "$id" | cut -d: -f1)"
    fi
done

# the user, with a fixed uid and gid, before the package would make one with a dynamic uid
if in_root getent passwd "$uid" >/dev/null || in_root getent group "$uid" >/dev/null; then
    echo "deploy/image/build.sh: uid or gid $uid is taken in the base" >&2
    exit 2
fi
in_root groupadd --system --gid "$uid" pypicached
in_root useradd --system --uid "$uid" --gid pypicached --home-dir /var/cache/pypicached --no-create-home \
    --shell /usr/sbin/nologin --comment "pypicached caching proxy" pypicached

# the signed repository as a file: source, trusted through its own key only
cp -a "$repo" "$root$inside_repo"
install -D -m 0644 "$repo/pypicached-archive-keyring.gpg" "$root$keyring"
cat > "$root$sources" <<EOF
Types: deb
URIs: file:$inside_repo
Suites: stable
Components: main
Signed-By: $keyring
EOF
in_root apt-get -q update > "$work/update.log" 2>&1 || { cat "$work/update.log" >&2; exit 1; }
if grep -E "^(W|E):" "$work/update.log" | grep -F "$inside_repo" >&2; then
    echo "deploy/image/build.sh: apt does not trust the repository" >&2
    exit 1
fi
in_root apt-get -q -y --no-install-recommends install pypicached
in_root apt-cache policy pypicached | grep -F "file:$inside_repo stable/main" >/dev/null
# shellcheck disable=SC2016
in_root sh -c 'dpkg-query -W -f "\${Package} \${Priority}\n" | awk "\$2 != \"required\" && \$1 != \"pypicached\" { print \$1 }" | xargs -r apt-mark auto' >/dev/null
in_root apt-get -q -y -o APT::AutoRemove::RecommendsImportant=false -o APT::AutoRemove::SuggestsImportant=false \
    autoremove --purge
in_root dpkg-query --show --showformat '${Version}\n' pypicached | grep -Fx "$version" >/dev/null || {
    echo "deploy/image/build.sh: the repository does not hold pypicached $version" >&2
    exit 1
}
[ "$(in_root stat -c %u:%g /var/cache/pypicached)" = "$uid:$uid" ]

# the image's own config (port 3141, the cache in the volume) and healthcheck
install -m 0644 "$here/pypicached.toml" "$root/etc/pypicached/pypicached.toml"
install -m 0755 "$here/healthcheck" "$root/usr/local/bin/pypicached-healthcheck"

# what a running container never needs
unmount
rm -rf "$root$inside_repo" "$root$sources" "$root$keyring"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
rm -rf "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old "$root"/var/cache/ldconfig/aux-cache
find "$root/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/lintian/*
find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
find "$root/var/log" -type f -delete
rm -rf "$root"/tmp/* "$root"/var/tmp/* "$root"/root/.cache
: > "$root/etc/resolv.conf"  # the runtime provides its own
: > "$root/etc/machine-id"

export BUILDAH_FORMAT=docker  # for HEALTHCHECK
container=$(buildah from --quiet scratch)
mount=$(buildah mount "$container")
cp -a "$root/." "$mount/"
buildah umount "$container" >/dev/null
buildah config \
    --user "$uid:$uid" \
    --workingdir /var/cache/pypicached \
    --entrypoint '["/usr/bin/twistd3", "--nodaemon", "--pidfile=", "--logger=pypicached.ops.journal.observer", "pypicached", "--config", "/etc/pypicached/pypicached.toml"]' \
    --cmd '[]' \
    --port 3141/tcp \
    --volume /var/cache/pypicached \
    --stop-signal SIGTERM \
    --env LANG=C.UTF-8 \
    --healthcheck 'CMD /usr/local/bin/pypicached-healthcheck' \
    --healthcheck-interval 30s --healthcheck-timeout 10s --healthcheck-start-period 10s --healthcheck-retries 3 \
    --label "org.opencontainers.image.title=pypicached" \
    --label "org.opencontainers.image.description=caching proxy for a Python package index" \
    --label "org.opencontainers.image.version=$version" \
    --label "org.opencontainers.image.licenses=MIT" \
    --label "org.opencontainers.image.source=${IMAGE_SOURCE:-https://pypicached.invalid/}" \
    --label "org.opencontainers.image.revision=${IMAGE_REVISION:-unknown}" \
    --label "org.opencontainers.image.base.name=debian:trixie (debootstrap --variant=minbase)" \
    --label "io.pypicached.uid=$uid" \
    "$container"
buildah commit --quiet --format docker --rm "$container" "$image" >/dev/null
container=
echo "image $image: $(podman image inspect --format '{{.Size}}' "$image" | awk '{ printf "%.1f MB", $1 / 1e6 }')," \
    "built in $(( $(date +%s) - started ))s"
