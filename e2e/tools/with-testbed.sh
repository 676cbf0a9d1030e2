#!/usr/bin/env bash
# with-testbed.sh <command> [args...]
#
# Runs a command with the control plane up: a real kube-apiserver + etcd (the `testbed` binary),
# the kube-lvs CRDs installed and the operator running on the host. The command sees
#   KUBECONFIG                  admin kubeconfig for the host
#   KUBE_LVS_VM_APISERVER_PORT  so vm-run.sh forwards https://198.51.100.2:6443 into the VM
#   KUBE_LVS_TEST_KUBECONFIG    kubeconfig that reaches the API server from inside the VM
# Everything started here is stopped when the command ends, whatever its outcome.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"

cargo build --locked -q -p kube-lvs-e2e --bin testbed -p kube-lvs-operator
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')

work=$(mktemp -d /tmp/kube-lvs-testbed.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

"$target/debug/testbed" up --dir "$work/cp" --env-file "$work/env" >"$work/testbed.log" 2>&1 &
pids+=("$!")
for _ in $(seq 1 240); do
    [[ -s "$work/env" ]] && break
    kill -0 "${pids[0]}" 2>/dev/null || { cat "$work/testbed.log" >&2; exit 1; }
    sleep 0.5
done
[[ -s "$work/env" ]] || { echo "with-testbed: the API server did not become ready" >&2; cat "$work/testbed.log" >&2; exit 1; }
set -a
# shellcheck disable=SC1091
. "$work/env"
set +a
export KUBE_LVS_VM_APISERVER_PORT="$APISERVER_PORT"
export KUBE_LVS_TEST_KUBECONFIG="$KUBECONFIG_VM"

kubectl apply -f charts/kube-lvs/crds/ >/dev/null
kubectl wait --for=condition=Established --timeout=60s \
    crd/virtualservices.lvs.kube-lvs.io crd/realservers.lvs.kube-lvs.io >/dev/null
kubectl create namespace kube-lvs-system >/dev/null
RUST_LOG=info "$target/debug/kube-lvs-operator" --lease-namespace kube-lvs-system >"$work/operator.log" 2>&1 &
pids+=("$!")
echo "with-testbed: API server on port $APISERVER_PORT, operator pid ${pids[1]}" >&2

status=0
"$@" || status=$?
if [[ $status -ne 0 ]]; then
    echo "----- operator log (last 40 lines) -----" >&2
    tail -n 40 "$work/operator.log" >&2 || true
fi
exit "$status"
