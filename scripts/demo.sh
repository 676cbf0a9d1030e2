#!/usr/bin/env bash
# The kube-lvs demo (README), on the local test bed:
#   1. a real kube-apiserver with etcd, the CRDs and the operator (e2e/tools/with-testbed.sh);
#   2. what a user types and reads: kubectl explain, apply of the examples, kubectl get lvs,
#      and a bad manifest refused with the field named;
#   3. a live LVS-DR cluster in the IPVS kernel under qemu: two directors and two real servers
#      run the node-agent against that API server; the client reaches the real servers through
#      the VIP, a real server fails and leaves rotation, the master stops and the backup takes
#      over, with `kubectl get lvs` shown at every step.
# Everything started is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" != "--inside" ]]; then
    e2e/tools/install-deps.sh
    exec e2e/tools/with-testbed.sh "$0" --inside
fi

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

say kubectl version
kubectl explain virtualservice.spec.healthCheck | sed -n '1,25p'
# Two director nodes, as their kubelets would register them (the test bed runs no kubelet).
for n in director-a director-b; do
    kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Node
metadata: {name: $n, labels: {lvs.kube-lvs.io/director: "true"}}
YAML
done
say kubectl get nodes -L lvs.kube-lvs.io/director
kubectl create namespace lvs-demo >/dev/null
say kubectl apply -n lvs-demo -f examples/
# The operator assigns VRRP router ids and priorities; without agents nothing is master yet.
for vs in $(kubectl get virtualservices -n lvs-demo -o name); do
    kubectl wait --for=jsonpath='{.status.assignment.routerId}' --timeout=60s -n lvs-demo "$vs" >/dev/null
done
say kubectl get lvs -n lvs-demo -o wide

echo
echo "A manifest the API server refuses, with the field named:"
cat >/tmp/kube-lvs-demo-broken.yaml <<'YAML'
apiVersion: lvs.kube-lvs.io/v1alpha1
kind: VirtualService
metadata: {name: broken, namespace: default}
spec:
  vip: 192.0.2.300
  port: 80
  realServerSelector: {}
  healthCheck: {type: HTTP, interval: 1s, timeout: 2s, http: {path: health}}
YAML
say kubectl apply -f /tmp/kube-lvs-demo-broken.yaml || true
rm -f /tmp/kube-lvs-demo-broken.yaml

# The live cluster below uses the same VIP:port as examples/dr-web.yaml; the operator would
# (rightly) give it a Conflict condition while the example holds the listener.
kubectl delete -n lvs-demo -f examples/ --wait=true >/dev/null
kubectl delete node director-a director-b >/dev/null

echo
echo "A live LVS-DR cluster in the IPVS kernel (qemu): agents on two directors and two real servers."
e2e/tools/vm-suite.sh vm_agent -- --nocapture
