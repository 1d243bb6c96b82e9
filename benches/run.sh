#!/usr/bin/env bash
# `make bench`: time jsonb merge contestants on the reference workloads of
# benches/workloads.sql (a copy of the shared reference workloads) and write
# benches/RESULTS.md.
#
#   RUNS=5 benches/run.sh        (the extension must be installed: `make bench` does it)
#
# A throwaway server of its own, every contestant in the same session, each
# timed RUNS times after a warm-up, median kept, reported in µs per merge and
# as a ratio to the first contestant (`a || b`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/pgcluster.sh

RUNS=${RUNS:-5}
WORKLOADS=${WORKLOADS:-benches/workloads.sql}
OUT=benches/RESULTS.md

# The contestants: "label => SQL expression over a (stored document) and b
# (patch)". The first one is the reference for the ratios. Add a line to add a
# contestant; one that cannot run (its function does not exist) is reported
# as skipped, with the error, instead of failing the run.
CONTESTANTS=(
    "a || b (shallow merge, reference) => a || b"
    "plpgsql deep merge (benches/plpgsql_deep_merge.sql) => plpgsql_deep_merge(a, b)"
    "syncguard.jsonb_deep_merge => syncguard.jsonb_deep_merge(a, b)"
    "syncguard.jsonb_deep_merge with a path policy => syncguard.jsonb_deep_merge(a, b, '{\"arrays\": \"union\", \"paths\": {\"s1.*\": \"max\", \"k03\": \"keep\"}}')"
    "syncguard.jsonb_merge_patch (RFC 7396) => syncguard.jsonb_merge_patch(a, b)"
)

[ -f "$WORKLOADS" ] || { echo "missing $WORKLOADS (the reference bench workloads)" >&2; exit 1; }

# Timing settings: no parallel workers and no JIT, so the numbers are the
# per-row cost of one backend; shared_buffers big enough to hold the tables.
export PGCLUSTER_OPTS="-c shared_buffers=1GB -c max_parallel_workers_per_gather=0 -c jit=off"
pgcluster_start
psql_q() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }

echo "Generating the workloads ($WORKLOADS; a minute or two)..."
psql_q -c "CREATE EXTENSION syncguard" -f "$WORKLOADS" -f benches/plpgsql_deep_merge.sql \
       -f benches/harness.sql >/dev/null

ord=0
for c in "${CONTESTANTS[@]}"; do
    ord=$((ord + 1))
    # psql quotes the values (:'var'), so expressions need no escaping here.
    # psql interpolates :'var' only in input it reads, not in -c commands.
    psql_q -v ord="$ord" -v label="${c%% => *}" -v expr="${c#* => }" \
        <<< "INSERT INTO bench_contestants VALUES (:ord, :'label', :'expr')"
done

echo "Timing ${#CONTESTANTS[@]} contestants, median of $RUNS runs each..."
psql_q -c "SELECT bench_run($RUNS)" >/dev/null

echo "Memory: 1,000,000 calls of each merge function in one backend..."
memory=$(psql_q -At -F ' | ' -f benches/memory.sql -c "SELECT * FROM bench_memory(10)")

{
    echo "# Merge benchmark results"
    echo ""
    echo "Written by \`make bench\` (benches/run.sh); do not edit by hand."
    echo ""
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "- $(psql -X -At -c 'SELECT version()')"
    echo "- syncguard $(psql -X -At -c 'SELECT syncguard.version()') (release build)"
    echo "- machine: $(nproc) CPUs, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1)"
    echo "- per contestant and workload: \`SELECT count(*) FROM pairs_x WHERE (<expr>) IS NOT NULL\`,"
    echo "  median of $RUNS runs in one session after a warm-up; no parallel workers, no JIT."
    echo "- cells: µs per merge (median time / rows), and the ratio to \`a || b\` in the same run."
    echo ""
    psql -X -At -c "SELECT line FROM bench_report"
    echo ""
    echo "## Targets"
    echo ""
    echo "\`syncguard.jsonb_deep_merge(a, b)\` (contestant 3) against \`a || b\` (1) and the plpgsql deep merge (2),"
    echo "from the table above. Targets: at most 1.3× the time of \`||\` on every workload; at least 20× faster"
    echo "than plpgsql on (b)–(d)."
    echo ""
    echo "| workload | deep merge / \`\|\|\` | target ≤ 1.3× | plpgsql / deep merge | target ≥ 20× |"
    echo "|---|---|---|---|---|"
    psql -X -At -F '|' -c "
        SELECT format('| %s | %s× | %s | %s× | %s |', w.label,
                      -- Rounded away from the target, so that a figure never reads as met when it is not.
                      round(ceil((d.median_ms / c.median_ms)::numeric * 100) / 100, 2),
                      CASE WHEN d.median_ms <= 1.3 * c.median_ms THEN 'met' ELSE '**not met**' END,
                      trunc((p.median_ms / d.median_ms)::numeric, 1),
                      CASE WHEN w.tbl = 'pairs_a' THEN '(not a target)'
                           WHEN p.median_ms >= 20 * d.median_ms THEN 'met' ELSE '**not met**' END)
          FROM bench_workloads w
          JOIN bench_results c ON c.tbl = w.tbl AND c.ord = 1
          JOIN bench_results p ON p.tbl = w.tbl AND p.ord = 2
          JOIN bench_results d ON d.tbl = w.tbl AND d.ord = 3
         ORDER BY w.tbl"
    echo ""
    echo "## Memory per call"
    echo ""
    echo "\`benches/memory.sql\`: one backend runs \`jsonb_deep_merge(a, b)\`, \`jsonb_deep_merge(a, b, policy)\`"
    echo "and \`jsonb_merge_patch(a, b)\` over the 100,000 rows of workload (b), ten times (1,000,000 calls"
    echo "of each); the backend's private resident memory (RssAnon: not counting shared buffers) is read after every batch. RSS that stays flat"
    echo "after the first batch means no memory is kept per call."
    echo ""
    echo "| batch | calls so far (three functions) | backend RssAnon (kB) |"
    echo "|---|---|---|"
    echo "$memory" | awk -F ' [|] ' '{ total += $2; printf "| %s | %d | %s |\n", $1, total, $3 }'
    echo ""
    echo "$memory" | awk -F ' [|] ' 'NR == 1 { first = $3 } { last = $3 } END { printf "RSS growth from batch 1 to batch %d: %d kB.\n", NR, last - first }'
    echo ""
    # Further sections (pgbench workloads of the other capabilities): each
    # benches/sections/*.sh prints markdown, using this run's server.
    for section in benches/sections/*.sh; do
        [ -e "$section" ] || continue
        bash "$section"
        echo ""
    done
    echo "## Contestants"
    echo ""
    echo ""
    psql -X -At -c "SELECT format('%s. %s: \`%s\`', ord, label, expr) FROM bench_contestants ORDER BY ord"
    skipped=$(psql -X -At -c "SELECT DISTINCT format('- %s: %s', c.label, r.skipped)
                                FROM bench_results r JOIN bench_contestants c USING (ord)
                               WHERE r.skipped IS NOT NULL")
    if [ -n "$skipped" ]; then
        echo ""
        echo "Skipped (could not run):"
        echo ""
        echo "$skipped"
    fi
} > "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
cat "$OUT"
