#!/usr/bin/env bash
# `make bench` section: where a merge_upsert spends what the `||` upsert it
# replaces does not, in instructions counted by callgrind (valgrind), which
# the machine's load does not change. A server of its own runs under
# callgrind; pgbench sends the two statements of the upsert section
# (benches/upsert_concat.sql, benches/upsert_merge_upsert.sql) with the
# prepared protocol and the same random keys on both sides, to a table of
# 100,000 documents of workload (b)'s shape: PROFILE_CALLS transactions, then
# twice as many, one backend each. The difference between the two is the
# cost of PROFILE_CALLS calls in a warm backend: connecting, the first
# planning and every other one-time cost are in both and drop out.
# Needs valgrind (`apt-get install valgrind`); says it was skipped without.
set -euo pipefail
cd "$(dirname "$0")/../.."
source benches/lib.sh
CALLS=${PROFILE_CALLS:-$(bench_pick 1000 300)}
started=$SECONDS

echo "## Where merge_upsert's time goes (callgrind)"
echo ""
if ! command -v valgrind >/dev/null || ! command -v callgrind_annotate >/dev/null; then
    echo "Skipped: valgrind is not installed (\`apt-get install valgrind\`)."
    exit 0
fi
# A cluster of its own (pgcluster.sh's EXIT trap removes it); stopped after
# the setup and started again under callgrind.
source scripts/pgcluster.sh
PGCLUSTER_OPTS="-c jit=off -c autovacuum=off"
pgcluster_start
psql_q -c "CREATE EXTENSION syncguard" \
       -c "CREATE TABLE profiles (user_id int PRIMARY KEY, data jsonb NOT NULL)" \
       -c "INSERT INTO profiles
           SELECT i, jsonb_build_object('id', i, 'name', 'user_' || i, 'version', 1,
                      's1', s, 's2', s, 's3', s, 's4', s)
             FROM generate_series(1, 100000) AS i,
                  LATERAL (SELECT jsonb_object_agg('g' || g, jsonb_build_object(
                               'f1', i * g, 'f2', 'u' || i || '/' || g, 'f3', (i + g) % 2 = 0,
                               'f4', i * 0.25::float8))
                             FROM generate_series(1, 3) AS g) AS x(s)" \
       -c "VACUUM ANALYZE profiles" -c "CHECKPOINT" >/dev/null
as_server "$PG_BINDIR/pg_ctl" -D "$PGCLUSTER_DIR/data" -m fast -w stop >/dev/null
cg="$PGCLUSTER_DIR/callgrind"
as_postgres mkdir "$cg"
# Every process of the server writes its own file when it exits (%p: its pid).
# shellcheck disable=SC2046  # the options are words
as_server valgrind --tool=callgrind --trace-children=yes --callgrind-out-file="$cg/%p" \
    "$PG_BINDIR/postgres" -D "$PGCLUSTER_DIR/data" $(pgcluster_opts "$PGPORT" "$PGCLUSTER_DIR") \
    >"$PGCLUSTER_DIR/valgrind.log" 2>&1 &
for _ in $(seq 120); do pg_isready -q && break; sleep 1; done

# Runs pgbench for $2 transactions of script $1 and prints the callgrind file
# of its client's backend: the biggest one written meanwhile (a backend
# writes its file when it exits, a moment after its client disconnects;
# pgbench's first connection, which only looks around, writes a small one).
profile_run() {
    local before new seen="" stable=0 f
    before=$(as_postgres ls "$cg")
    pgbench -n -M prepared -c 1 -t "$2" --random-seed=7 -f "$1" >/dev/null
    for _ in $(seq 120); do
        new=$(as_postgres ls "$cg" | grep -vxF -f <(printf '%s\n' "$before") || true)
        if [ -n "$new" ] && [ "$new" = "$seen" ]; then
            stable=$((stable + 1))
            [ "$stable" -lt 3 ] || break
        else
            stable=0 seen=$new
        fi
        sleep 1
    done
    for f in $new; do echo "$(total "$cg/$f") $cg/$f"; done | sort -n | tail -n 1 | cut -d' ' -f2
}
total() { as_postgres sed -n 's/^\(summary\|totals\): *\([0-9]*\).*/\2/p' "$1" | head -n 1; }
# Inclusive instructions of the functions whose name matches $2 (an extended
# regex over callgrind_annotate's "file:function" column), summed.
incl() {
    as_postgres callgrind_annotate --inclusive=yes --threshold=100 "$1" 2>/dev/null |
        awk -v re="$2" '$1 ~ /^[0-9,]+$/ { n = $1; gsub(",", "", n)
                                            for (i = 2; i <= NF; i++) if ($i ~ /:/) { f = $i; break }
                                            if (f ~ re) s += n }
                          END { printf "%d", s }'
}
declare -A run
for side in concat merge; do
    if [ $side = concat ]; then script=benches/upsert_concat.sql; else script=benches/upsert_merge_upsert.sql; fi
    run[$side.1]=$(profile_run "$script" "$CALLS")
    run[$side.2]=$(profile_run "$script" $((2 * CALLS)))
done
per_call() { awk -v a="$1" -v b="$2" -v n="$CALLS" 'BEGIN { printf "%.1f", (a - b) / n / 1000 }'; }
# Per call of side $1: everything, or the functions matching $2.
side() {
    if [ -z "${2:-}" ]; then per_call "$(total "${run[$1.2]}")" "$(total "${run[$1.1]}")"
    else per_call "$(incl "${run[$1.2]}" "$2")" "$(incl "${run[$1.1]}" "$2")"; fi
}
both() { echo "$(side concat "${1:-}") $(side merge "${1:-}")"; }
read -r c_all m_all <<< "$(both)"
read -r c_args m_args <<< "$(both ':jsonb_build_object$')"
read -r c_merge m_merge <<< "$(both ':jsonb_concat$|:jsonb_deep_merge_wrapper$')"
read -r c_start m_start <<< "$(both ':standard_ExecutorStart$')"
read -r c_plan m_plan <<< "$(both ':GetCachedPlan$')"
read -r c_cat m_cat <<< "$(both ':SearchCatCache1$')"
read -r _ m_wrapper <<< "$(both ':merge_upsert_wrapper$')"
read -r _ m_spi <<< "$(both ':SPI_execute_plan$')"
m_own=$(awk -v a="$m_wrapper" -v b="$m_spi" 'BEGIN { printf "%.1f", a - b }')
delta() { awk -v a="$2" -v b="$1" 'BEGIN { printf "%+.1f", a - b }'; }
row() { printf '| %s | %s | %s | %s |\n' "$1" "$2" "$3" "$(delta "$2" "$3")"; }

echo "\`benches/sections/profile.sh\`: a server under callgrind; pgbench sends each statement of the"
echo "upsert section (\`-M prepared\`, one client, the same random keys on both sides) $CALLS and"
echo "$((2 * CALLS)) times, each run one backend: the difference, per call, in thousands of"
echo "instructions, is the cost of a call in a warm backend. A function's figure is inclusive (with"
echo "what it calls), so rows overlap."
echo ""
echo "| per call (thousands of instructions) | \`||\` upsert | merge_upsert | difference |"
echo "|---|---|---|---|"
row "the whole call, as the backend sees it" "$c_all" "$m_all"
row "building jsonb values (\`jsonb_build_object\`): the patch; for merge_upsert also its key and data objects" "$c_args" "$m_args"
row "the merge (\`jsonb_concat\`; \`jsonb_deep_merge\`)" "$c_merge" "$m_merge"
row "starting executors (\`standard_ExecutorStart\`): merge_upsert's call, then its statement" "$c_start" "$m_start"
row "finding and revalidating cached plans (\`GetCachedPlan\`)" "$c_plan" "$m_plan"
row "catalog cache lookups (\`SearchCatCache1\`)" "$c_cat" "$m_cat"
row "merge_upsert's own work around its statement (\`merge_upsert_wrapper\` less \`SPI_execute_plan\`)" "0" "$m_own"
echo ""
echo "Findings, from the table:"
echo ""
awk -v c="$c_all" -v m="$m_all" -v ca="$c_args" -v ma="$m_args" -v cm="$c_merge" -v mm="$m_merge" \
    -v cp="$c_plan" -v mp="$m_plan" -v cc="$c_cat" -v mc="$m_cat" -v own="$m_own" -v q="'" \
    -v ratio="$(ratio "$c_all" "$m_all")" 'BEGIN {
    gap = m - c; args = ma - ca
    share = gap <= 0 ? "and merge_upsert is not slower" : \
            (args >= gap ? sprintf("more than all of the %.1f k difference", gap) \
                         : sprintf("%d%% of the %.1f k difference", args / gap * 100, gap))
    printf "- In instructions, merge_upsert runs at %s× the `||` upsert (`||` / merge_upsert per call).\n", ratio
    printf "- The key and data objects the caller builds for merge_upsert (`jsonb_build_object(%suser_id%s, …)`, and `jsonb_build_object(%sdata%s, <patch>)`, which copies the patch into a new object) cost %.1f k a call: %s.\n", q, q, q, q, args, share
    printf "- The deep merge costs %.1f k a call against %.1f k for `||`, which sorts the keys of the merged object.\n", mm, cm
    printf "- merge_upsert%ss own work around its statement (splitting the arguments, converting the values, finding its plan, building the returned row) is %.1f k a call.\n", q, own
    printf "- Its nested statement adds %+.1f k of plan-cache lookups and revalidation and %+.1f k of catalog-cache lookups.\n", mp - cp, mc - cc
}'
echo ""
echo "The section took $((SECONDS - started)) s."
