#!/usr/bin/env bash
# Build the flashduty-sidecar image with Debian's buildah, from Debian's packages and PyPI only.
#
#   deploy/image/build.sh [--tag NAME:TAG] [--browser chromium-headless-shell|chromium] [--base IMAGE]
#
# The base (unless --base names one, e.g. debian:bookworm-slim): Debian bookworm made by
# `mmdebstrap --variant=minbase` (what debian:bookworm-slim is made of), cached as a tarball under
# ${XDG_CACHE_HOME:-~/.cache}/flashduty-sidecar/ (rebuilt when older than BASE_MAX_AGE_DAYS, 7)
# and imported into buildah's storage as localhost/flashduty-sidecar-base:bookworm.
# The machine's CA bundle and pip config, where present, reach pip as build secrets only.
# Prints the image name on stdout as its last line.
set -euo pipefail
cd "$(dirname "$0")/../.."

TAG="flashduty-sidecar:$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)"
BROWSER=chromium-headless-shell
BASE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) TAG="$2"; shift 2 ;;
    --browser) BROWSER="$2"; shift 2 ;;
    --base) BASE="$2"; shift 2 ;;
    *) echo "build.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
BASE_IMAGE=localhost/flashduty-sidecar-base:bookworm
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/flashduty-sidecar"

for tool in buildah; do
  command -v "$tool" >/dev/null 2>&1 || { echo "build.sh: $tool is not installed (apt-get install buildah)" >&2; exit 3; }
done

if [ -z "$BASE" ]; then
  BASE="$BASE_IMAGE"
  tarball="$CACHE/bookworm-minbase.tar"
  if [ ! -s "$tarball" ] || [ -n "$(find "$tarball" -mtime +"${BASE_MAX_AGE_DAYS:-7}" 2>/dev/null)" ]; then
    command -v mmdebstrap >/dev/null 2>&1 || { echo "build.sh: mmdebstrap is not installed (apt-get install mmdebstrap)" >&2; exit 3; }
    say "mmdebstrap: Debian bookworm (minbase) -> $tarball"
    mkdir -p "$CACHE"
    # as debian:bookworm-slim: no man pages, no docs but the copyright files, no locales
    mmdebstrap --variant=minbase --format=tar --quiet \
      --dpkgopt='path-exclude=/usr/share/man/*' \
      --dpkgopt='path-exclude=/usr/share/doc/*' \
      --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      --dpkgopt='path-exclude=/usr/share/info/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' \
      --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/var/log/*' \
      bookworm "$tarball.part" \
      "deb $MIRROR bookworm main" \
      "deb $MIRROR bookworm-updates main" \
      "deb $SECURITY bookworm-security main"
    mv "$tarball.part" "$tarball"
    fresh=1
  fi
  # a new tarball replaces the base under the same name (the old one stays while images use it)
  if [ -n "${fresh:-}" ] || ! buildah inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
    say "buildah import $tarball as $BASE_IMAGE"
    # buildah has no `import`: a container from scratch with the tarball as its root, committed
    ctr="$(buildah from scratch)"
    trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
    mnt="$(buildah mount "$ctr")"
    tar -x -C "$mnt" -f "$tarball"
    buildah umount "$ctr" >/dev/null
    buildah config --cmd /bin/bash --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
    buildah commit --quiet --rm "$ctr" "$BASE_IMAGE" >/dev/null
    trap - EXIT
  fi
fi

secrets=()
ca="${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}"
[ -s "$ca" ] && secrets+=(--secret "id=ca-bundle,src=$ca")
pipconf="${PIP_CONFIG_FILE:-/etc/pip.conf}"
[ -s "$pipconf" ] && secrets+=(--secret "id=pip-conf,src=$pipconf")

say "buildah bud $TAG (browser $BROWSER, base $BASE)"
buildah bud --isolation=chroot --format docker --layers \
  -f deploy/Dockerfile --build-arg "BASE=$BASE" --build-arg "BROWSER=$BROWSER" \
  "${secrets[@]}" -t "$TAG" . >&2
echo "localhost/$TAG"
