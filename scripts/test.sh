#!/usr/bin/env bash
# The kube-lvs test command (README): installs what the tests need on a fresh machine, then runs
#   1. formatting and clippy checks,
#   2. every host test (unit tests, network-namespace tests, the real kube-apiserver tests),
#   3. the VM suite: every `vm_*` test target inside one boot of the Debian kernel with IPVS.
# Each stage prints its runner's summary lines; the script fails if any stage fails.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
stage() { printf '\n==> %s (%ss)\n' "$*" "$(( $(date +%s) - start ))"; }

stage "installing dependencies"
e2e/tools/install-deps.sh

stage "cargo fmt --check"
cargo fmt --all -- --check

stage "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

stage "host tests"
# Tests that start API servers or namespaces are heavy; two threads keep a 2-core machine responsive.
cargo test --workspace --locked -- --test-threads=2 2>&1 | tee /tmp/kube-lvs-host-tests.log
status=${PIPESTATUS[0]}
grep -E '^test result:' /tmp/kube-lvs-host-tests.log | awk '{p+=$4; f+=$6} END {printf "host tests: %d passed, %d failed\n", p, f}'
[ "$status" -eq 0 ] || { echo "host tests failed"; exit "$status"; }

stage "VM suite (IPVS kernel under qemu)"
# The full suite starts the API server and operator itself (with-testbed.sh) for vm_agent.
e2e/tools/vm-suite.sh

stage "done"
