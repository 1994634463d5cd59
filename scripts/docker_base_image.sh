#!/usr/bin/env bash
# Build a local Python 3.11 base image from Debian's own packages, for machines that cannot pull from Docker Hub.
#
#   scripts/docker_base_image.sh [TAG]        # default tag: local/python:3.11-bookworm
#
# The images' default base, python:3.11-slim-bookworm, comes from Docker Hub. Where Docker Hub is out of reach
# (the CI machines), debootstrap installs Debian bookworm's python3 (3.11) + pip + venv from the Debian mirror apt
# already uses, and `docker import` turns that tree into an image; build the project's images with
#   --build-arg PYTHON_IMAGE=local/python:3.11-bookworm
# This machine's CA bundle (pip's `cert` setting) replaces Debian's, so HTTPS to the package index works inside
# the containers the same way it does here. Skips the work when the tag exists already (cached between CI runs).
# Needs root (debootstrap), debootstrap and a running Docker daemon.
set -euo pipefail

tag="${1:-local/python:3.11-bookworm}"
# A cached image counts only when an unprivileged user can run python in it (images made by an earlier version
# of this script lacked PATH, or had a root folder of mode 0700).
if docker image inspect "$tag" >/dev/null 2>&1 \
   && docker run --rm --user 65534:65534 "$tag" python3 -c 'import pip' >/dev/null 2>&1; then
  echo "base image $tag exists (cached)"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "error: debootstrap not found (apt-get install -y debootstrap)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "error: debootstrap needs root" >&2; exit 1; }

# The mirror apt uses (deb822 .sources or a classic sources.list line), so no other host is contacted.
mirror="$(grep -hoE '^URIs: *\S+' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -n1 || true)"
[ -n "$mirror" ] || mirror="$(grep -hoE '^deb +\S+' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | head -n1 || true)"
[ -n "$mirror" ] || { echo "error: no Debian mirror found in /etc/apt/sources.list{,.d}" >&2; exit 1; }

# pip's CA bundle on this machine (`pip config list`: cert); the system bundle when pip names none.
cert="$(python3 -m pip config list 2>/dev/null | sed -n "s/^global\.cert='\(.*\)'$/\1/p" | head -n1)"
cert="${cert:-/etc/ssl/certs/ca-certificates.crt}"
[ -r "$cert" ] || { echo "error: CA bundle $cert not readable" >&2; exit 1; }

rootfs="$(mktemp -d /tmp/mtm-rootfs.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT
echo "debootstrap bookworm from $mirror (a few minutes)"
debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates \
  bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || { tail -n 30 "$rootfs.log" >&2; rm -f "$rootfs.log"; exit 1; }
rm -f "$rootfs.log"
chmod 0755 "$rootfs"   # mktemp made it 0700: it becomes the image's /, which every user must traverse
ln -sf python3 "$rootfs/usr/bin/python"
cp "$cert" "$rootfs/etc/ssl/certs/ca-certificates.crt"
rm -rf "$rootfs/var/cache/apt/archives/"*.deb "$rootfs/var/lib/apt/lists/"*
# Debian marks its Python "externally managed"; inside an image pip may install system-wide.
# PIP_CERT: pip would otherwise use its own certifi bundle, which lacks this machine's CA.
# PATH: `docker import` sets none; `docker build` supplies a default to RUN steps, but `docker run` does not,
# so without it a container cannot even find `sh` (the official python image sets the same PATH).
tar -C "$rootfs" -c . | docker import \
  -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  -c 'ENV PIP_BREAK_SYSTEM_PACKAGES=1 PIP_CERT=/etc/ssl/certs/ca-certificates.crt LANG=C.UTF-8' \
  -c 'CMD ["python3"]' - "$tag" >/dev/null
echo "base image $tag built"
