#!/usr/bin/env bash
# Builds the upstream kube-apiserver from the k8s.io/kubernetes Go module at a pinned release and
# caches it outside the repository, keyed by version. k8s.io/kubernetes requires its staging
# modules at v0.0.0, so a throwaway wrapper module replaces each with its published v0.Y.Z.
# KUBE_CMD selects another command of the same module (e.g. kubectl). Prints the binary's path;
# concurrent callers serialise on a lock and the second one finds the finished binary.
set -euo pipefail
version="${KUBE_VERSION:-v1.33.13}"
cmd="${KUBE_CMD:-kube-apiserver}"
# HOME may be unset in CI-like environments; fall back to the account database.
home="${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}"
cache="${KUBE_LVS_CACHE:-$home/.cache/kube-lvs}"
out="$cache/bin/$cmd-$version"
if [ -x "$out" ]; then echo "$out"; exit 0; fi
mkdir -p "$cache/bin"
exec 9>"$cache/bin/.$cmd-$version.lock"
flock 9
if [ -x "$out" ]; then echo "$out"; exit 0; fi
minor="v0.${version#v1.}"
minor_only="$(echo "$version" | cut -d. -f2)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
gomod="$(go mod download -json "k8s.io/kubernetes@$version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
{
  echo "module kubelvs.invalid/apiserver-build"
  echo
  echo "go 1.24"
  echo
  echo "require k8s.io/kubernetes $version"
  echo
  # every staging module pinned at v0.0.0 upstream is replaced by its published release
  grep -E '^\s*k8s\.io/[a-z0-9-]+ v0\.0\.0\s*$' "$gomod" | awk '{print $1}' | sort -u |
    while read -r m; do echo "replace $m => $m $minor"; done
} > go.mod
cat > tools.go <<'GO'
//go:build tools

package tools

import _ "k8s.io/kubernetes/cmd/CMD"
GO
sed -i "s|CMD|$cmd|" tools.go
GOFLAGS=-mod=mod go mod tidy -e >/dev/null 2>&1 || true
GOFLAGS=-mod=mod go get "k8s.io/kubernetes/cmd/$cmd@$version" >&2
CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor_only" -o "$out.tmp" "k8s.io/kubernetes/cmd/$cmd" >&2
mv "$out.tmp" "$out"
echo "$out"
