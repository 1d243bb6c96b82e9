#!/usr/bin/env bash
# `make soak`: the merge core's fuzz properties (core/src/fuzz.rs) with a
# large case count, too long for `make test`. Records the run in
# benches/soak.md, which `make bench` copies into benches/RESULTS.md.
#
#   SOAK_CASES   cases per property (default 120000: about ten minutes on 2 CPUs)
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cases=${SOAK_CASES:-120000}
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# The commit the run tests: the source as it is when the build starts.
commit=$(git rev-parse --short HEAD)
git diff --quiet HEAD -- core/src || commit="$commit + uncommitted changes in core/src/"
# Build first, so that the recorded duration is the run's alone.
cargo test -p syncguard-core --lib --no-run >/dev/null 2>&1 || { echo "build failed" >&2; cargo test -p syncguard-core --lib --no-run; exit 1; }
start=$(date +%s)
SYNCGUARD_FUZZ_CASES=$cases cargo test -p syncguard-core --lib fuzz:: 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
seconds=$(( $(date +%s) - start ))

properties=$(sed -nE 's/^test result: .* ([0-9]+) passed; ([0-9]+) failed.*/\1 passed, \2 failed/p' "$log" | tail -n 1)
if [ "$status" -eq 0 ]; then outcome="passed ($properties)"; else outcome="FAILED ($properties)"; fi

{
    echo "## Merge core soak (\`make soak\`)"
    echo ""
    echo "The fuzz properties of \`core/src/fuzz.rs\` (the engine against a reference implementation:"
    echo "random documents, valid and invalid policies, RFC 7396 patch and diff, depths up to 4,000"
    echo "levels, long arrays, corrupted binary input) with \`SYNCGUARD_FUZZ_CASES=$cases\`; the unit"
    echo "tier runs the same properties with 200 cases. Debug build, as the unit tier."
    echo ""
    echo "| cases per property | duration | date | commit | outcome |"
    echo "|---|---|---|---|---|"
    echo "| $cases | $((seconds / 60)) min $((seconds % 60)) s | $(date -u +%Y-%m-%dT%H:%MZ) | $commit | $outcome |"
    if [ "$status" -ne 0 ]; then
        echo ""
        echo '```'
        grep -E "minimal failing input|panicked at|^    merge::" "$log" | head -n 20
        echo '```'
    fi
} > benches/soak.md
cat benches/soak.md
exit "$status"
