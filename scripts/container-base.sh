#!/usr/bin/env bash
# Build the Python base image of the job containers without any container registry:
# debootstrap a minimal Debian bookworm (Python 3.11 + venv), import it into Podman.
# Cached: does nothing when the image exists; the root filesystem tarball is kept under
# ${LOCARIA_CACHE:-~/.cache/locaria-batch} so a wiped Podman store re-imports in seconds.
set -euo pipefail

IMAGE="${LOCARIA_BASE_IMAGE:-localhost/locaria-python-base:bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CACHE="${LOCARIA_CACHE:-$HOME/.cache/locaria-batch}"
TARBALL="$CACHE/python-base-bookworm.tar"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$(cd "$(dirname "$0")" && pwd)/containers.conf}"

if podman image exists "$IMAGE"; then
    echo "base image $IMAGE already present"
    exit 0
fi

if [ ! -s "$TARBALL" ]; then
    command -v debootstrap >/dev/null || { echo "debootstrap is not installed: apt-get install debootstrap" >&2; exit 1; }
    mkdir -p "$CACHE"
    ROOTFS="$(mktemp -d "$CACHE/rootfs.XXXXXX")"
    trap 'rm -rf "$ROOTFS"' EXIT
    echo "debootstrapping Debian bookworm into $ROOTFS (a few minutes, once per machine)"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$ROOTFS" "$MIRROR"
    # keep the image small: package lists and caches are not needed at run time
    rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/usr/share/doc/* \
           "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/locale/*
    tar --numeric-owner -C "$ROOTFS" -cf "$TARBALL.part" .
    mv "$TARBALL.part" "$TARBALL"
fi

podman import --change 'CMD ["/usr/bin/python3"]' --change 'ENV LANG=C.UTF-8' "$TARBALL" "$IMAGE"
echo "base image $IMAGE imported"
