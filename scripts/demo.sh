#!/usr/bin/env bash
# The kube-lvs demo (README): brings up the local test bed (a real kube-apiserver with etcd),
# installs the CRDs, applies the example VirtualServices and RealServers, and shows what
# `kubectl get lvs` and `kubectl explain` tell a user. Tears everything down when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

e2e/tools/install-deps.sh
cargo build --locked -q -p kube-lvs-e2e --bin testbed -p kube-lvs-operator

work=$(mktemp -d /tmp/kube-lvs-demo.XXXXXX)
target/debug/testbed up --dir "$work/cp" --env-file "$work/env" >"$work/testbed.log" 2>&1 &
testbed=$!
pids=("$testbed")
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

for _ in $(seq 1 120); do
  [ -s "$work/env" ] && break
  kill -0 "$testbed" 2>/dev/null || { cat "$work/testbed.log"; exit 1; }
  sleep 0.5
done
[ -s "$work/env" ] || { echo "the API server did not become ready"; cat "$work/testbed.log"; exit 1; }
set -a; . "$work/env"; set +a
say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

say kubectl version
say kubectl apply -f charts/kube-lvs/crds/
kubectl wait --for=condition=Established --timeout=60s crd/virtualservices.lvs.kube-lvs.io crd/realservers.lvs.kube-lvs.io >/dev/null
say kubectl explain virtualservice.spec.healthCheck
say kubectl apply -f examples/
if [ -x target/debug/kube-lvs-operator ] && target/debug/kube-lvs-operator --help >/dev/null 2>&1; then
  target/debug/kube-lvs-operator >"$work/operator.log" 2>&1 &
  pids+=("$!")
  sleep 3
fi
say kubectl get lvs -A -o wide
echo
echo "A manifest the API server refuses, with the field named:"
say kubectl apply -f - <<'YAML' || true
apiVersion: lvs.kube-lvs.io/v1alpha1
kind: VirtualService
metadata: {name: broken, namespace: default}
spec:
  vip: 192.0.2.300
  port: 80
  healthCheck: {type: HTTP, interval: 1s, timeout: 2s, http: {path: health}}
YAML
