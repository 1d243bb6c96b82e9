#!/usr/bin/env bash
# `make bench`: time jsonb merge contestants on the reference workloads of
# benches/workloads.sql (a copy of the shared reference workloads), run the
# sections benches/sections/*.sh and write benches/RESULTS.md, comparing the
# merge core's ratios with those of the RESULTS.md it replaces.
#
#   benches/run.sh                 the default mode (`make bench`)
#   BENCH_FULL=1 benches/run.sh    the full mode: longer runs, more rounds
#   BENCH_SECONDS=1 BENCH_ROUNDS=1 RUNS=1 benches/run.sh
#                                  a smoke run of the scripts (its figures mean nothing)
#
# (the extension must be installed: `make bench` does it). benches/lib.sh has
# the modes' settings and the helpers of the sections.
#
# A throwaway server of its own, every contestant in the same session, each
# timed RUNS times after a warm-up, median kept, reported in µs per merge and
# as a ratio to the first contestant (`a || b`).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
overrides=$(env | grep -E '^(RUNS|BENCH_SECONDS|BENCH_ROUNDS|[A-Z]+_(SECONDS|ROUNDS|RUNS))=' | sort | tr '\n' ' ' | sed 's/ $//' || true)
source scripts/pgcluster.sh
source benches/lib.sh

RUNS=${RUNS:-$(bench_pick 5 3)}
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

# The merge core's ratios of the run this one replaces (its "Targets" table):
# "a 0.30×" a line, and its date and commit.
previous="" previous_run=""
if [ -f "$OUT" ]; then
    previous=$(awk '/^## Targets/ { t = 1; next } /^## / { t = 0 }
                    t && /^\| \([a-d]\)/ { split($0, f, "|"); l = substr(f[2], 3, 1); gsub(/ /, "", f[3]); print l, f[3] }' "$OUT")
    previous_run=$(sed -nE 's/^- date: (.*)$/\1/p' "$OUT" | head -n 1)
fi

echo "Generating the workloads ($WORKLOADS; a minute or two)..."
psql_q -c "CREATE EXTENSION syncguard" -f benches/plpgsql_deep_merge.sql >/dev/null
# The generator's tables are built two at a time, one session per CPU: its
# functions first, then the statements after its "-- (a)" … "-- (d)" markers
# ((c) and (d) hold most of the work), then the rest. A file without the
# markers is run as it is.
block() { awk -v m="-- ($1)" 'index($0, m) == 1 { p = 1 } p && /^$/ { exit } p' "$WORKLOADS"; }
if [ -n "$(block a)" ] && [ -n "$(block b)" ] && [ -n "$(block c)" ] && [ -n "$(block d)" ]; then
    awk 'index($0, "-- (a)") == 1 { exit } { print }' "$WORKLOADS" | psql_q >/dev/null
    { block c; block a; } | psql_q >/dev/null & first=$!
    { block d; block b; } | psql_q >/dev/null & second=$!
    wait "$first"
    wait "$second"
    awk 'index($0, "-- (d)") == 1 { d = 1 } d && /^$/ { p = 1 } p' "$WORKLOADS" | psql_q >/dev/null
else
    psql_q -f "$WORKLOADS" >/dev/null
fi
# The harness registers the pairs_* tables there are now.
psql_q -f benches/harness.sql >/dev/null

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
    if [ "$BENCH_MODE" = full ]; then
        echo "- mode: full (\`BENCH_FULL=1 make bench\`)${overrides:+; overridden: $overrides}"
    else
        echo "- mode: default (\`make bench\`; \`BENCH_FULL=1 make bench\` runs longer runs and more rounds)${overrides:+; overridden: $overrides}"
    fi
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
    echo "from the table above. Targets: at most 0.5× the time of \`||\` on every workload, and no slower than"
    echo "the previous run (*previous*: the ratio of the RESULTS.md this run replaced${previous_run:+, $previous_run});"
    echo "at least 20× faster than plpgsql on (b)–(d)."
    echo ""
    echo "| workload | deep merge / \`\|\|\` | previous | target ≤ 0.5× | plpgsql / deep merge | target ≥ 20× |"
    echo "|---|---|---|---|---|---|"
    psql -X -At -F '|' -c "
        SELECT substr(w.label, 2, 1), w.label,
               -- Rounded away from the target, so that a figure never reads as met when it is not.
               round(ceil((d.median_ms / c.median_ms)::numeric * 100) / 100, 2),
               CASE WHEN d.median_ms <= 0.5 * c.median_ms THEN 'met' ELSE '**not met**' END,
               trunc((p.median_ms / d.median_ms)::numeric, 1),
               CASE WHEN w.tbl = 'pairs_a' THEN '(not a target)'
                    WHEN p.median_ms >= 20 * d.median_ms THEN 'met' ELSE '**not met**' END
          FROM bench_workloads w
          JOIN bench_results c ON c.tbl = w.tbl AND c.ord = 1
          JOIN bench_results p ON p.tbl = w.tbl AND p.ord = 2
          JOIN bench_results d ON d.tbl = w.tbl AND d.ord = 3
         ORDER BY w.tbl" |
    while IFS='|' read -r letter label today met plpgsql met20; do
        before=$(awk -v l="$letter" '$1 == l { print $2 }' <<< "$previous")
        echo "| $label | ${today}× | ${before:-(none)} | $met | ${plpgsql}× | $met20 |"
    done
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
    core_seconds=$((SECONDS - started))
    durations=()
    for section in benches/sections/*.sh; do
        [ -e "$section" ] || continue
        section_started=$SECONDS
        bash "$section"
        echo ""
        durations+=("| \`$section\` | $((SECONDS - section_started)) s |")
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
    echo ""
    echo "## Durations"
    echo ""
    echo "This run, in the $BENCH_MODE mode${overrides:+ (overridden: $overrides)}, from the start of benches/run.sh (\`make install\` not counted):"
    echo ""
    echo "| part | duration |"
    echo "|---|---|"
    echo "| server, workloads, merge core timing (median of $RUNS) and memory | $core_seconds s |"
    printf '%s\n' "${durations[@]}"
    total=$((SECONDS - started))
    echo "| **total** | **$total s ($((total / 60)) min $((total % 60)) s)** |"
} > "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
cat "$OUT"
total=$((SECONDS - started))
echo ""
echo "make bench: $BENCH_MODE mode, $total s ($((total / 60)) min $((total % 60)) s) in all; results in $OUT"
