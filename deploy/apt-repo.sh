#!/bin/sh
# A signed apt repository of the given .deb files, built with Debian's own tools
# (apt-ftparchive and gpg), ready for any static web server:
#
#     deploy/apt-repo.sh OUT_DIR PACKAGE.deb...
#
#   OUT_DIR/pypicached-archive-keyring.gpg    the public key, for signed-by= on the VMs
#   OUT_DIR/dists/stable/InRelease            the index, signed (plus Release and Release.gpg)
#   OUT_DIR/dists/stable/main/binary-ARCH/    Packages, Packages.gz, Packages.xz
#   OUT_DIR/pool/main/p/pypicached/*.deb      the packages
#
# APT_SIGNING_KEY names the secret key to sign with (a fingerprint or user ID in
# GNUPGHOME). Without it the repository is signed with a key made for the test,
# created on first use in GNUPGHOME, which must then be given. A secret key never
# goes into OUT_DIR.
#
# The packages are Architecture: all, so one suite serves Debian 12 and 13 alike;
# its index lists them for each architecture in APT_ARCHITECTURES.
set -eu

out=${1:?usage: deploy/apt-repo.sh OUT_DIR PACKAGE.deb...}
shift
[ $# -gt 0 ] || { echo "deploy/apt-repo.sh: no .deb given" >&2; exit 2; }
suite=${APT_SUITE:-stable}
architectures=${APT_ARCHITECTURES:-amd64 arm64 armel armhf i386 ppc64el riscv64 s390x}
test_uid="pypicached test repository <apt-test@pypicached.invalid>"

key=${APT_SIGNING_KEY:-}
if [ -z "$key" ]; then
    : "${GNUPGHOME:?set GNUPGHOME (where the test key lives) or APT_SIGNING_KEY}"
    mkdir -p "$GNUPGHOME"
    chmod 700 "$GNUPGHOME"
    if ! gpg --batch --quiet --no-auto-check-trustdb --list-secret-keys "$test_uid" >/dev/null 2>&1; then
        gpg --batch --quiet --passphrase '' --quick-generate-key "$test_uid" ed25519 sign 2y
    fi
    key=$test_uid
fi
fingerprint=$(gpg --batch --quiet --no-auto-check-trustdb --with-colons --list-secret-keys "$key" | awk -F: '$1 == "fpr" { print $10; exit }')
[ -n "$fingerprint" ] || { echo "deploy/apt-repo.sh: no secret key '$key' in ${GNUPGHOME:-~/.gnupg}" >&2; exit 2; }

new="$out.new"
rm -rf "$new"
for deb in "$@"; do
    package=$(dpkg-deb --field "$deb" Package)
    source=$(dpkg-deb --field "$deb" Source | cut -d' ' -f1)
    source=${source:-$package}
    pool="$new/pool/main/$(printf %.1s "$source")/$source"
    mkdir -p "$pool"
    cp "$deb" "$pool/"
done

dist="$new/dists/$suite"
for arch in $architectures; do
    mkdir -p "$dist/main/binary-$arch"
    # paths in Packages are relative to the repository's root, so run from there
    (cd "$new" && apt-ftparchive --arch "$arch" packages pool/main) > "$dist/main/binary-$arch/Packages"
    gzip -9n --keep "$dist/main/binary-$arch/Packages"
    xz --keep "$dist/main/binary-$arch/Packages"
done
apt-ftparchive \
    -o APT::FTPArchive::Release::Origin=pypicached \
    -o APT::FTPArchive::Release::Label=pypicached \
    -o APT::FTPArchive::Release::Suite="$suite" \
    -o APT::FTPArchive::Release::Codename="$suite" \
    -o APT::FTPArchive::Release::Architectures="$architectures" \
    -o APT::FTPArchive::Release::Components=main \
    -o APT::FTPArchive::Release::Description="pypicached for Debian 12 and 13" \
    release "$dist" > "$new/Release"
mv "$new/Release" "$dist/Release"
gpg --batch --yes --local-user "$fingerprint" --clearsign --output "$dist/InRelease" "$dist/Release"
gpg --batch --yes --local-user "$fingerprint" --armor --detach-sign --output "$dist/Release.gpg" "$dist/Release"
gpg --batch --export "$fingerprint" > "$new/pypicached-archive-keyring.gpg"

rm -rf "$out"
mv "$new" "$out"
if [ -z "${APT_SIGNING_KEY:-}" ]; then
    gpgconf --kill gpg-agent  # the one gpg started for the test key
fi
echo "apt repository in $out, suite $suite, signed by $fingerprint"
