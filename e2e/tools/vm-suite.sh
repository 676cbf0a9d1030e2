#!/usr/bin/env bash
# vm-suite.sh [target...] [-- libtest-args...]
#
# Builds every `vm_*` integration-test target of the workspace (they are `test = false`, so a
# plain `cargo test` skips them), boots ONE VM through vm-run.sh and runs each test binary in
# it with --test-threads=1 and its crate directory as the working directory. Prints every
# binary's output, then `vm suite: N passed, M failed` (tests, summed over the libtest
# summaries). Exits non-zero if anything failed, a binary crashed, or no test ran.
#
# target: only run the targets with these names (shell globs allowed, e.g. 'vm_ipvs*').
# The full suite (no target given) runs under with-testbed.sh (API server + operator on the
# host, reachable from the VM); KUBE_LVS_VM_SUITE_TESTBED=1 forces that for filtered runs, =0
# disables it.
# Environment: KUBE_LVS_VM_TIMEOUT (whole VM, default 1800 s), KUBE_LVS_VM_TEST_TIMEOUT
# (one binary, default 600 s), CARGO (default cargo), and everything vm-run.sh forwards.
set -euo pipefail

# The whole body is one brace group, so bash parses it completely before running: editing this
# file while a caller waits for the VM lock cannot corrupt that caller.
{

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

orig_args=("$@")
filters=()
test_args=()
while [[ $# -gt 0 ]]; do
    if [[ "$1" == "--" ]]; then
        shift
        test_args=("$@")
        break
    fi
    filters+=("$1")
    shift
done

# Some VM tests (vm_agent) need the API server and the operator on the host. with-testbed.sh
# starts both and exports KUBE_LVS_TEST_KUBECONFIG + KUBE_LVS_VM_APISERVER_PORT, which vm-run.sh
# forwards. Done for the full suite, or always/never with KUBE_LVS_VM_SUITE_TESTBED=1/0.
want_testbed=${KUBE_LVS_VM_SUITE_TESTBED:-auto}
if [[ -z "${KUBE_LVS_TEST_KUBECONFIG:-}" && -x "$here/with-testbed.sh" ]]; then
    if [[ "$want_testbed" == 1 || ("$want_testbed" == auto && ${#filters[@]} -eq 0) ]]; then
        echo "vm-suite: starting the control plane (with-testbed.sh)" >&2
        exec "$here/with-testbed.sh" "$here/vm-suite.sh" "${orig_args[@]}"
    fi
fi

work=$(mktemp -d /tmp/kube-lvs-vm-suite.XXXXXX)
trap 'rm -rf "$work"' EXIT

cd "$root"
# With filters only the named targets are built, so one crate's broken work in progress does
# not block another crate's VM tests.
select=(--test 'vm_*')
if [[ ${#filters[@]} -gt 0 ]]; then
    select=()
    for f in "${filters[@]}"; do select+=(--test "$f"); done
fi
echo "vm-suite: building test targets: ${select[*]}" >&2
if ! "${CARGO:-cargo}" test --workspace --no-run --message-format=json "${select[@]}" \
    >"$work/build.json" 2>"$work/build.err"; then
    cat "$work/build.err" >&2
    echo "vm suite: build failed" >&2
    exit 1
fi

# One "name<TAB>crate-dir<TAB>executable" line per test binary.
python3 - "$work/build.json" "${filters[@]}" >"$work/targets.tsv" <<'PY'
import fnmatch, json, os, sys
path, filters = sys.argv[1], sys.argv[2:]
seen = set()
with open(path) as f:
    for line in f:
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("reason") != "compiler-artifact" or not msg.get("executable"):
            continue
        target = msg.get("target", {})
        name = target.get("name", "")
        if "test" not in target.get("kind", []) or not name.startswith("vm_"):
            continue
        if filters and not any(fnmatch.fnmatch(name, p) for p in filters):
            continue
        if msg["executable"] in seen:
            continue
        seen.add(msg["executable"])
        crate_dir = os.path.dirname(msg["manifest_path"])
        print(f"{name}\t{crate_dir}\t{msg['executable']}")
PY

count=$(wc -l <"$work/targets.tsv")
if [[ "$count" -eq 0 ]]; then
    echo "vm suite: 0 passed, 0 failed (no vm_* target matched)"
    exit 1
fi
echo "vm-suite: running $count test binaries in one VM" >&2

# The runner executes inside the VM; /tmp is shared with the host (as an overlay).
{
    echo 'set -u'
    printf 'test_timeout=%q\n' "${KUBE_LVS_VM_TEST_TIMEOUT:-600}"
    printf 'targets=%q\n' "$work/targets.tsv"
    printf 'extra=('; printf ' %q' "${test_args[@]}"; printf ' )\n'
    cat <<'RUNNER'
export RUST_BACKTRACE=${RUST_BACKTRACE:-1}
passed=0; failed=0; bad_bins=0; ran=0
while IFS=$'\t' read -r name dir exe; do
    echo "=== vm-suite: $name ($exe)"
    start=$(date +%s.%N)
    out=$(cd "$dir" && timeout -k 5 "$test_timeout" "$exe" --test-threads=1 "${extra[@]}" 2>&1)
    rc=$?
    printf '%s\n' "$out"
    end=$(date +%s.%N)
    summary=$(printf '%s\n' "$out" | grep -E '^test result: ' | tail -n 1)
    p=$(sed -nE 's/.* ([0-9]+) passed.*/\1/p' <<<"$summary")
    f=$(sed -nE 's/.* ([0-9]+) failed.*/\1/p' <<<"$summary")
    passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0}))
    ran=$((ran + ${p:-0} + ${f:-0}))
    if [[ $rc -ne 0 ]]; then
        bad_bins=$((bad_bins + 1))
        # A crash or timeout without a libtest summary still counts as a failure.
        if [[ -z "$summary" || ${f:-0} -eq 0 ]]; then failed=$((failed + 1)); fi
        echo "=== vm-suite: $name FAILED (exit $rc)"
    fi
    printf '=== vm-suite: %s took %.1fs\n' "$name" "$(echo "$end - $start" | bc 2>/dev/null || echo 0)"
done <"$targets"
echo "vm suite: $passed passed, $failed failed"
if [[ $failed -ne 0 || $bad_bins -ne 0 || $ran -eq 0 ]]; then exit 1; fi
exit 0
RUNNER
} >"$work/runner.sh"

export KUBE_LVS_VM_TIMEOUT=${KUBE_LVS_VM_TIMEOUT:-1800}
status=0
"$here/vm-run.sh" bash "$work/runner.sh" || status=$?
if [[ $status -ne 0 && $status -ne 1 ]]; then
    echo "vm suite: VM run failed with status $status" >&2
fi
exit "$status"
}
