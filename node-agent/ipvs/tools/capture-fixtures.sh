#!/usr/bin/env bash
# Captures raw IPVS netlink replies from the real kernel (in the test VM) into
# node-agent/ipvs/tests/fixtures/*.bin. Run from the workspace root.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
bin=$(cargo test -p kube-lvs-ipvs --test vm_ipvs --no-run --message-format=json 2>/dev/null |
    python3 -c 'import sys, json
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "vm_ipvs" and m.get("executable"):
        print(m["executable"])')
out=$(mktemp)
trap 'rm -f "$out"' EXIT
RUST_BACKTRACE=0 e2e/tools/vm-run.sh "$bin" --exact capture_fixtures --nocapture >"$out"
dir=node-agent/ipvs/tests/fixtures
mkdir -p "$dir"
n=0
while read -r tag name hex; do
    [[ "$tag" == IPVS-FIXTURE ]] || continue
    printf '%s' "$hex" | xxd -r -p >"$dir/$name.bin"
    n=$((n + 1))
done <"$out"
if [[ $n -eq 0 ]]; then
    cat "$out" >&2
    echo "capture-fixtures: no fixtures captured" >&2
    exit 1
fi
echo "captured $n fixtures into $dir"
