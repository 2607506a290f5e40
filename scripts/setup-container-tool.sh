#!/usr/bin/env bash
# Container engine for image builds, shared by `make test`, `make local-run` and `make bench`.
#
# - A working Docker engine (`docker info` succeeds) is used as is: prints "docker" and exits.
# - Otherwise rootful podman (Debian packages) is installed and configured:
#   runc (crun fails on hybrid cgroups), cgroupfs, file event logger, explicit ulimits, overlay storage.
# - The registry is usually unreachable here, so the Dockerfile's base image
#   (public.ecr.aws/docker/library/python:3.11-slim) is stood in for by a local image built with
#   debootstrap (Debian bookworm + python3.11 venv at /usr/local, like the official image's layout),
#   with the host's extra CA certificates so pip works behind an intercepting proxy.
#   Set CONTAINER_TOOL_PULL=1 to try a real `podman pull` first.
#
# Idempotent: a second run only checks a few things and takes well under 2 s.
set -euo pipefail

BASE_IMAGE="${BASE_IMAGE:-public.ecr.aws/docker/library/python:3.11-slim}"
STAMP_DIR=/var/lib/ml-pipeline-container-tool
STAMP="$STAMP_DIR/podman-configured-v1"
PACKAGES=(podman runc netavark aardvark-dns iptables catatonit debootstrap)

log() { printf '[container-tool] %s\n' "$*" >&2; }
die() {
  printf '[container-tool] ERROR: %s\n' "$*" >&2
  exit 1
}

# Root is needed for packages, /etc/containers and rootful podman.
if [[ $EUID -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    exec sudo -n --preserve-env=BASE_IMAGE,CONTAINER_TOOL_PULL bash "$0" "$@"
  fi
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    echo docker
    exit 0
  fi
  die "no running Docker engine and not root: run this script as root (or with passwordless sudo) so it can install and configure rootful podman."
fi

if command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1; then
  log "a Docker engine is running: using docker"
  echo docker
  exit 0
fi

# Fast path: configured before and the base image is there.
if [[ -f $STAMP ]] && command -v podman >/dev/null 2>&1 && podman image exists "$BASE_IMAGE" 2>/dev/null; then
  log "podman ready (base image $BASE_IMAGE present)"
  echo podman
  exit 0
fi

# 1. Packages, only those missing.
missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install ${missing[*]} yourself (Debian/Ubuntu packages)."
  log "installing ${missing[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
fi

# 2. Configuration, written before podman's first real use. Ours is marked so we never clobber a user's.
MARK="# written by scripts/setup-container-tool.sh"
mkdir -p /etc/containers
nofile=$(ulimit -Hn)
[[ $nofile == unlimited ]] && nofile=1048576
if ! grep -qF "$MARK" /etc/containers/containers.conf 2>/dev/null; then
  if [[ -s /etc/containers/containers.conf ]]; then
    cp /etc/containers/containers.conf "/etc/containers/containers.conf.bak.$(date +%s)"
    log "kept a backup of the existing containers.conf"
  fi
  log "writing /etc/containers/containers.conf (runc, cgroupfs, file events, nofile=$nofile)"
  cat >/etc/containers/containers.conf <<EOF
$MARK
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=32768:32768"]

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
EOF
fi
if ! grep -qF "$MARK" /etc/containers/storage.conf 2>/dev/null; then
  if [[ -s /etc/containers/storage.conf ]]; then
    cp /etc/containers/storage.conf "/etc/containers/storage.conf.bak.$(date +%s)"
  fi
  log "writing /etc/containers/storage.conf (overlay driver)"
  cat >/etc/containers/storage.conf <<EOF
$MARK
[storage]
driver = "overlay"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"
EOF
fi

if ! podman info >/dev/null 2>&1; then
  # overlay cannot sit on some filesystems (e.g. an overlay root inside another container): fall back to vfs,
  # about 10x slower to build but working. Only safe before any image exists, which is the case here.
  images_json=/var/lib/containers/storage/overlay-images/images.json
  if grep -qF "$MARK" /etc/containers/storage.conf && grep -q '^driver = "overlay"' /etc/containers/storage.conf &&
    { [[ ! -s $images_json ]] || [[ $(tr -d '[:space:]' <"$images_json") == "[]" ]]; }; then
    log "overlay storage does not work here: falling back to vfs ($(podman info 2>&1 | tail -1))"
    sed -i 's/^driver = "overlay"/driver = "vfs"/' /etc/containers/storage.conf
    rm -rf /var/lib/containers/storage /run/containers/storage
  fi
  podman info >/dev/null 2>&1 || die "podman is installed but 'podman info' fails: $(podman info 2>&1 | tail -3)"
fi

# 3. The base image: pull only when asked, else build the stand-in.
if ! podman image exists "$BASE_IMAGE"; then
  if [[ ${CONTAINER_TOOL_PULL:-0} == 1 ]] && timeout 60 podman pull -q "$BASE_IMAGE" >/dev/null 2>&1; then
    log "pulled $BASE_IMAGE"
  else
    log "building a local stand-in for $BASE_IMAGE (debootstrap bookworm + python3.11); about a minute"
    started=$(date +%s)
    work=$(mktemp -d /var/tmp/base-image.XXXXXX)
    trap 'rm -rf "$work"' EXIT
    # The host's own Debian mirror (deb822 "URIs:" or one-line "deb" entries; comments ignored).
    mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
      sed -nE 's/^[[:space:]]*(URIs:|deb)[[:space:]]+(\[[^]]*\][[:space:]]+)?(https?:[^[:space:]]+).*/\3/p' |
      grep -v security | head -1 || true)
    mirror=${mirror:-http://deb.debian.org/debian}
    debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 ||
      die "debootstrap from $mirror failed: $(tail -5 "$work/debootstrap.log")"
    # Slim like the official image: no docs, man pages, locales or apt caches.
    (cd "$work/rootfs" && rm -rf var/cache/apt/archives/*.deb var/cache/apt/*.bin var/lib/apt/lists/* \
      usr/share/doc/* usr/share/man/* usr/share/info/* usr/share/locale/* var/log/*)
    tag_raw="localhost/bookworm-minbase:stand-in"
    tar -C "$work/rootfs" -c . | podman import -q - "$tag_raw" >/dev/null || die "podman import failed"
    mkdir -p "$work/ctx/certs"
    cp /usr/local/share/ca-certificates/*.crt "$work/ctx/certs/" 2>/dev/null || true
    cat >"$work/ctx/Containerfile" <<EOF
FROM $tag_raw
ENV LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
COPY certs/ /usr/local/share/ca-certificates/
RUN apt-get update -qq \\
 && apt-get install -y -qq --no-install-recommends python3 python3-venv ca-certificates >/dev/null \\
 && update-ca-certificates >/dev/null \\
 && python3 -m venv /usr/local \\
 && ln -sf /usr/local/bin/python3 /usr/local/bin/python \\
 && apt-get clean \\
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/debconf/*-old /var/log/* \\
      /usr/share/doc/* /usr/share/man/* /usr/share/info/* /usr/share/locale/*
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
CMD ["python3"]
EOF
    podman build -q --pull=never -t "$BASE_IMAGE" "$work/ctx" >"$work/build.log" 2>&1 ||
      die "building the base image stand-in failed: $(tail -15 "$work/build.log")"
    podman rmi -f "$tag_raw" >/dev/null 2>&1 || true
    podman run --rm --network none "$BASE_IMAGE" python -c 'import sys, ssl, venv; assert sys.version_info[:2] == (3, 11), sys.version' ||
      die "the stand-in base image's python is not 3.11"
    log "stand-in $BASE_IMAGE built in $(($(date +%s) - started)) s"
  fi
fi

mkdir -p "$STAMP_DIR"
touch "$STAMP"
log "podman ready"
echo podman
