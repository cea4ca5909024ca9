#!/usr/bin/env bash
# Make the Debian base image the Dockerfiles start FROM, when no registry can serve it.
#
#   docker/base-image.sh [IMAGE]        IMAGE defaults to debian:bookworm-slim
#
# A site with a registry just pulls the image and never needs this. Here no image can be
# pulled, so this builds an equivalent with debootstrap (minbase: what the -slim images hold)
# and tags it under the same name, so the Dockerfiles' FROM line stays what a site would use.
# The root file system is cached as a tarball under var/docker/ (git-ignored): after a
# `docker system prune` the image comes back from it in seconds, without a download.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${1:-debian:bookworm-slim}
DOCKER=${DOCKER:-docker}
CACHE=${DOCKER_CACHE_DIR:-var/docker}

suite_of() {
  # debian:bookworm-slim -> bookworm; only Debian suites debootstrap knows are accepted.
  local tag=${1#*:}
  tag=${tag%-slim}
  case "$tag" in
    bookworm|trixie|sid|forky) echo "$tag" ;;
    *) echo "base-image.sh: cannot build '$1' locally: expected debian:<suite>[-slim] with suite" \
            "bookworm, trixie, forky or sid" >&2; exit 2 ;;
  esac
}

mirror() {
  # The Debian mirror the host's apt already uses (the only registry reachable here).
  python3 -c 'import sys; sys.path.insert(0, "cluster"); import roots; print(roots.host_mirror())'
}

if "$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "base-image: $IMAGE is present"
  exit 0
fi
if timeout 60 "$DOCKER" pull -q "$IMAGE" >/dev/null 2>&1; then
  echo "base-image: pulled $IMAGE"
  exit 0
fi

suite=$(suite_of "$IMAGE")
tarball="$CACHE/base-$suite.tar"
mkdir -p "$CACHE"
if [ ! -s "$tarball" ]; then
  command -v debootstrap >/dev/null || apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
  started=$SECONDS
  root=$(mktemp -d "$CACHE/rootfs-$suite.XXXXXX")
  trap 'rm -rf "$root"' EXIT
  echo "base-image: no registry serves $IMAGE; debootstrap --variant=minbase $suite"
  debootstrap --variant=minbase "$suite" "$root" "$(mirror)" >/dev/null
  # As the -slim images: no package lists, caches or docs in the layer.
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/usr/share/doc/* \
         "$root"/usr/share/man/* "$root"/usr/share/locale/*
  tar --numeric-owner -C "$root" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  echo "base-image: root file system built in $((SECONDS - started)) s ($(du -h "$tarball" | cut -f1))"
fi
"$DOCKER" import --change 'CMD ["bash"]' --change 'ENV LANG=C.UTF-8' "$tarball" "$IMAGE" >/dev/null
echo "base-image: imported $IMAGE from $tarball"
