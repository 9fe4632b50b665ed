#!/bin/sh
# Fetch, verify and install the network boot loaders listed in ./manifest.
#
#   bootloaders/install.sh [--only PACKAGE]... DEST
#
# DEST is the TFTP root (the daemon's lib/tftpboot, /var/lib/confluent/tftpboot in the system
# layout). Packages come from the machine's Debian archive through `apt-get download` (which
# checks the archive signatures); each .deb must then match the SHA-256 pinned in the manifest,
# and so must each file taken from it. Downloads are cached in $BOOTLOADER_CACHE
# (default /var/cache/confluent/bootloaders). Used by the appliance build and by the tests.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
manifest="$here/manifest"
cache=${BOOTLOADER_CACHE:-/var/cache/confluent/bootloaders}
only=""
while [ $# -gt 1 ]; do
    case "$1" in
        --only) only="$only $2"; shift 2 ;;
        *) echo "usage: $0 [--only PACKAGE]... DEST" >&2; exit 2 ;;
    esac
done
[ $# -eq 1 ] || { echo "usage: $0 [--only PACKAGE]... DEST" >&2; exit 2; }
dest=$1

wanted() {
    [ -z "$only" ] && return 0
    for package in $only; do [ "$package" = "$1" ] && return 0; done
    return 1
}

sha() { sha256sum "$1" | cut -d' ' -f1; }

mkdir -p "$cache" "$dest"
# Concurrent runs (parallel tests) share the cache and apt's lists: one at a time.
exec 9>"$cache/.lock"
flock 9
# apt_for PACKAGE[:ARCH]: apt-get with a private package index for a foreign architecture, so
# the machine's own dpkg architectures and lists are left alone.
apt_for() {
    case "$1" in
        *:*)
            arch=${1#*:}
            state="$cache/apt-$arch"
            mkdir -p "$state/lists/partial" "$state/cache/archives/partial"
            chmod -R 0777 "$state"
            echo "-o APT::Architecture=$arch -o APT::Architectures::=$arch -o Dir::State::Lists=$state/lists -o Dir::Cache=$state/cache -o Dir::State::status=/dev/null"
            ;;
        *) echo "" ;;
    esac
}
# fetch PACKAGE[:ARCH] VERSION SHA256: leave the verified .deb in $cache and print its path.
fetch() {
    deb="$cache/$1_$3.deb"
    if [ -f "$deb" ] && [ "$(sha "$deb")" = "$3" ]; then
        echo "$deb"; return 0
    fi
    options=$(apt_for "$1")
    name=${1%%:*}
    work=$(mktemp -d "$cache/download.XXXXXX")
    chmod 0777 "$work"
    # shellcheck disable=SC2086
    if ! (cd "$work" && apt-get $options download -q "$name=$2" >/dev/null 2>&1); then
        # shellcheck disable=SC2086
        apt-get $options update -q >/dev/null 2>&1 || true
        # shellcheck disable=SC2086
        if ! (cd "$work" && apt-get $options download -q "$name=$2" >&2); then
            rm -rf "$work"
            echo "install.sh: cannot download $1 $2 from the configured archive;" \
                 "update bootloaders/manifest to a version the archive has" >&2
            return 1
        fi
    fi
    got=$(ls "$work"/*.deb)
    actual=$(sha "$got")
    if [ "$actual" != "$3" ]; then
        rm -rf "$work"
        echo "install.sh: $1 $2: .deb SHA-256 is $actual, manifest says $3; refusing it" >&2
        return 1
    fi
    mv "$got" "$deb"
    rm -rf "$work"
    echo "$deb"
}

extracted=$(mktemp -d)
trap 'rm -rf "$extracted"' EXIT
installed=0
grep -v '^[[:space:]]*#' "$manifest" | grep -v '^[[:space:]]*$' |
while read -r package version debsha member target filesha; do
    wanted "$package" || continue
    deb=$(fetch "$package" "$version" "$debsha")
    if [ ! -d "$extracted/$package" ]; then
        mkdir -p "$extracted/$package"
        dpkg-deb -x "$deb" "$extracted/$package"
    fi
    source="$extracted/$package/$member"
    # Some members are symlinks inside the package (ipxe.efi -> /boot/ipxe.efi): the manifest
    # names the real file.
    if [ ! -f "$source" ] || [ -L "$source" ]; then
        echo "install.sh: $package $version has no regular file $member" >&2
        exit 1
    fi
    actual=$(sha "$source")
    if [ "$actual" != "$filesha" ]; then
        echo "install.sh: $package: $member has SHA-256 $actual, manifest says $filesha" >&2
        exit 1
    fi
    mkdir -p "$dest/$(dirname "$target")"
    install -m 0644 "$source" "$dest/$target.new"
    mv "$dest/$target.new" "$dest/$target"
    echo "installed $target ($package $version)"
done
