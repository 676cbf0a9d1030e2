#!/usr/bin/env bash
# Installs everything the kube-lvs test bed needs on a fresh Debian 12 machine (run as root; only the
# package registries need to be reachable). Idempotent: each step checks first and skips work that is
# already done, so a second run takes a few seconds.
#
# Single list of Debian packages used by the suites; add to it rather than installing elsewhere.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

APT_PACKAGES=(
  # IPVS kernel under qemu (virtme-ng boots the distro kernel over the host's filesystem)
  qemu-system-x86
  linux-image-amd64
  # the classic LVS stack we interoperate with and compare against
  ipvsadm
  keepalived
  # control plane
  etcd-server
  openssl
  # networking tools used by topologies and scenarios
  iproute2
  nftables
  tcpdump
  socat
  curl
  arping
  busybox-static
  python3
  python3-pip
  # build helpers
  util-linux
  ca-certificates
)

log() { printf '[install-deps] %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps.sh must run as root" >&2
  exit 1
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  # dpkg-query prints "install ok installed" only for a fully installed package
  if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" != "install ok installed" ]; then
    missing+=("$p")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "apt-get update"
  apt-get update -q
  log "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  log "apt packages: all ${#APT_PACKAGES[@]} present"
fi

# The distro etcd service is not wanted: tests start their own etcd on free ports.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
  log "stopping and disabling the distro etcd service"
  systemctl disable --now etcd || true
fi

if command -v vng >/dev/null 2>&1; then
  log "virtme-ng: $(command -v vng) present"
else
  log "pip install virtme-ng"
  # Debian's system python refuses pip installs without this flag; a pyenv python ignores it.
  python3 -m pip install --quiet virtme-ng 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages virtme-ng
fi

if ! command -v go >/dev/null 2>&1; then
  # Debian 12's golang-go is too old for Kubernetes 1.33; the machine image ships a newer Go.
  echo "a Go toolchain >= 1.24 is required to build kube-apiserver/helm (not found on PATH)" >&2
  exit 1
fi
log "go: $(go version)"

if ! command -v kubectl >/dev/null 2>&1; then
  log "kubectl missing: building it from k8s.io/kubernetes"
  ln -sf "$(KUBE_CMD=kubectl "$here/build-kube-apiserver.sh")" /usr/local/bin/kubectl
fi
log "kubectl: $(command -v kubectl)"

start=$(date +%s)
log "kube-apiserver: $("$here/build-kube-apiserver.sh")"
log "helm: $("$here/build-helm.sh")"
# Debian's etcd 3.4 serves kube-apiserver 1.33 correctly (the API server falls back from
# watch-progress features that need a newer etcd), so no etcd build is needed.
log "etcd: $(command -v etcd) ($(etcd --version | head -1))"
log "binaries ready after $(( $(date +%s) - start ))s"
log "done"
