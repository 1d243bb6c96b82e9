#!/usr/bin/env bash
# `make bench` section: where merge_upsert, the protection trigger and the
# idempotency calls spend what the statements they replace do not, in
# instructions counted by callgrind (valgrind), which the machine's load does
# not change. A server of its own runs under callgrind; pgbench sends each
# pair of scripts of the other sections with the same random keys on both
# sides: the two upserts (benches/upsert_concat.sql,
# benches/upsert_merge_upsert.sql, prepared protocol) to a table of 100,000
# documents of workload (b)'s shape; the ORM's UPDATE
# (benches/upsert_update.sql, prepared) to two fresh copies of it, one
# protected; the idempotency scripts (benches/idem_hand_written.sql,
# benches/idem_syncguard.sql, simple protocol). Each runs PROFILE_CALLS
# transactions, then twice as many, one backend each. The difference between
# the two is the cost of PROFILE_CALLS calls in a warm backend: connecting,
# the first planning and every other one-time cost are in both and drop out.
# Needs valgrind (`apt-get install valgrind`); says it was skipped without.
set -euo pipefail
cd "$(dirname "$0")/../.."
source benches/lib.sh
CALLS=${PROFILE_CALLS:-$(bench_pick 1000 300)}
started=$SECONDS

echo "## Where the time goes (callgrind)"
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
       -c "CREATE TABLE profiles_seed AS SELECT * FROM profiles" \
       -c "ALTER TABLE profiles_seed ADD PRIMARY KEY (user_id)" \
       -c "CREATE TABLE profiles_plain (LIKE profiles INCLUDING ALL)" \
       -c "CREATE TABLE profiles_protected (LIKE profiles INCLUDING ALL)" \
       -c "INSERT INTO profiles_plain SELECT * FROM profiles_seed" \
       -c "INSERT INTO profiles_protected SELECT * FROM profiles_seed" \
       -c "SELECT syncguard.protect('profiles_protected')" \
       -c "SET client_min_messages = warning" -f benches/idem_setup.sql \
       -c "VACUUM ANALYZE" -c "CHECKPOINT" >/dev/null
# The ORM's UPDATE, on each copy.
update_on() {
    local f="$PGCLUSTER_DIR/update_$1.sql"
    sed "s/^UPDATE profiles\$/UPDATE profiles_$1/" benches/upsert_update.sql | as_postgres tee "$f" >/dev/null
    grep -q "^UPDATE profiles_$1\$" "$f" || { echo "profile: no UPDATE in benches/upsert_update.sql" >&2; exit 1; }
    echo "$f"
}
update_plain=$(update_on plain)
update_protected=$(update_on protected)
as_server "$PG_BINDIR/pg_ctl" -D "$PGCLUSTER_DIR/data" -m fast -w stop >/dev/null
cg="$PGCLUSTER_DIR/callgrind"
as_postgres mkdir "$cg"
# Every process of the server writes its own file when it exits (%p: its pid).
# shellcheck disable=SC2046  # the options are words
as_server valgrind --tool=callgrind --trace-children=yes --callgrind-out-file="$cg/%p" \
    "$PG_BINDIR/postgres" -D "$PGCLUSTER_DIR/data" $(pgcluster_opts "$PGPORT" "$PGCLUSTER_DIR") \
    >"$PGCLUSTER_DIR/valgrind.log" 2>&1 &
for _ in $(seq 120); do pg_isready -q && break; sleep 1; done

# Runs pgbench for $2 transactions of script $1, random seed $3, protocol $4
# (prepared unless given), after the SQL $5 (if given), and prints the callgrind file
# of its client's backend: the biggest one written meanwhile (a backend
# writes its file when it exits, a moment after its client disconnects;
# pgbench's first connection, which only looks around, writes a small one).
profile_run() {
    local before new seen="" stable=0 f
    [ -z "${5:-}" ] || psql_q -c "$5" >/dev/null
    before=$(as_postgres ls "$cg")
    pgbench -n -M "${4:-prepared}" -c 1 -t "$2" --random-seed="$3" -f "$1" >/dev/null
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
profile_side() {  # side script [protocol [sql before each run]]
    # Other keys in the longer run: rows the first one wrote would be
    # written again with the same values.
    run[$1.1]=$(profile_run "$2" "$CALLS" 7 "${3:-}" "${4:-}")
    run[$1.2]=$(profile_run "$2" $((2 * CALLS)) 8 "${3:-}" "${4:-}")
}
profile_side concat benches/upsert_concat.sql
profile_side merge benches/upsert_merge_upsert.sql
profile_side plain "$update_plain"
profile_side protected "$update_protected"
# Empty key tables before every run, as the idempotency section has them: a
# table growing through a run changes its plans on the way.
empty="TRUNCATE effects, hand_keys, syncguard.idempotency_keys"
profile_side hand benches/idem_hand_written.sql simple "$empty"
profile_side idem benches/idem_syncguard.sql simple "$empty"
per_call() { awk -v a="$1" -v b="$2" -v n="$CALLS" 'BEGIN { printf "%.1f", (a - b) / n / 1000 }'; }
# Per call of side $1: everything, or the functions matching $2.
side() {
    if [ -z "${2:-}" ]; then per_call "$(total "${run[$1.2]}")" "$(total "${run[$1.1]}")"
    else per_call "$(incl "${run[$1.2]}" "$2")" "$(incl "${run[$1.1]}" "$2")"; fi
}
# Per call of sides $1 and $2, as side does.
pair() { echo "$(side "$1" "${3:-}") $(side "$2" "${3:-}")"; }
read -r c_all m_all <<< "$(pair concat merge)"
read -r c_args m_args <<< "$(pair concat merge ':jsonb_build_object$')"
read -r c_merge m_merge <<< "$(pair concat merge ':jsonb_concat$|:jsonb_deep_merge_wrapper$')"
read -r c_start m_start <<< "$(pair concat merge ':standard_ExecutorStart$')"
read -r c_plan m_plan <<< "$(pair concat merge ':GetCachedPlan$')"
read -r c_cat m_cat <<< "$(pair concat merge ':SearchCatCache1$')"
read -r _ m_wrapper <<< "$(pair concat merge ':merge_upsert_wrapper$')"
read -r _ m_spi <<< "$(pair concat merge ':SPI_execute_plan$')"
m_own=$(awk -v a="$m_wrapper" -v b="$m_spi" 'BEGIN { printf "%.1f", a - b }')
delta() { awk -v a="$2" -v b="$1" 'BEGIN { printf "%+.1f", a - b }'; }
row() { printf '| %s | %s | %s | %s |\n' "$1" "$2" "$3" "$(delta "$2" "$3")"; }

echo "\`benches/sections/profile.sh\`: a server under callgrind; pgbench sends each statement of the"
echo "upsert section (\`-M prepared\`, one client, the same random keys on both sides) $CALLS and"
echo "$((2 * CALLS)) times (other keys in the second run), each run one backend: the difference, per"
echo "call, in thousands of instructions, is the cost of a call in a warm backend. A function's figure"
echo "is inclusive (with what it calls), so rows overlap. The same for the UPDATE of the protection"
echo "section and for the idempotency scripts (their tables emptied before every run), below."
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

read -r u_all p_all <<< "$(pair plain protected)"
read -r _ p_trigger <<< "$(pair plain protected ':protect_trigger_wrapper$')"
read -r _ p_merge <<< "$(pair plain protected ':deep_merge$')"
read -r u_lock p_lock <<< "$(pair plain protected ':heap_lock_tuple$')"
read -r u_heap p_heap <<< "$(pair plain protected ':heap_update$')"
echo ""
echo "The ORM's UPDATE (\`benches/upsert_update.sql\`, one leaf changed in the whole document), on a"
echo "table unprotected and on one protected:"
echo ""
echo "| per call (thousands of instructions) | unprotected | protected | difference |"
echo "|---|---|---|---|"
row "the whole statement" "$u_all" "$p_all"
row "the protection trigger (\`protect_trigger_wrapper\`)" "0" "$p_trigger"
row "of which the deep merge (\`deep_merge\`)" "0" "$p_merge"
row "the row lock PostgreSQL takes before a BEFORE UPDATE trigger runs (\`heap_lock_tuple\`)" "$u_lock" "$p_lock"
row "the update of the row (\`heap_update\`)" "$u_heap" "$p_heap"

read -r h_all i_all <<< "$(pair hand idem)"
read -r h_parse i_parse <<< "$(pair hand idem ':pg_parse_query$|:parse_analyze_fixedparams$')"
read -r h_plan i_plan <<< "$(pair hand idem ':pg_plan_queries$')"
read -r _ i_claim <<< "$(pair hand idem ':idem_claim_wrapper$')"
read -r _ i_complete <<< "$(pair hand idem ':idem_complete_wrapper$')"
echo ""
echo "Idempotency keys, two round trips (\`benches/idem_hand_written.sql\` against"
echo "\`benches/idem_syncguard.sql\`, simple protocol), per transaction:"
echo ""
echo "| per transaction (thousands of instructions) | hand-written key table | syncguard | difference |"
echo "|---|---|---|---|"
row "the whole transaction" "$h_all" "$i_all"
row "parsing and analyzing the statements the client sends" "$h_parse" "$i_parse"
row "planning them" "$h_plan" "$i_plan"
row "\`idem_claim\` (its statement included)" "0" "$i_claim"
row "\`idem_complete\` (its statement included)" "0" "$i_complete"
echo ""
awk -v u="$u_all" -v p="$p_all" -v t="$p_trigger" -v m="$p_merge" -v l="$p_lock" -v ul="$u_lock" \
    -v uh="$u_heap" -v ph="$p_heap" \
    -v h="$h_all" -v i="$i_all" -v hp="$h_plan" -v ip="$i_plan" \
    -v r_upd="$(ratio "$u_all" "$p_all")" -v r_idem="$(ratio "$h_all" "$i_all")" 'BEGIN {
    printf "- In instructions, the protected UPDATE runs at %s× the unprotected one: the trigger costs %.1f k a call (%.1f k of it the merge, which finds the written document is the result and writes none), and PostgreSQL locks the row before a BEFORE trigger runs: %+.1f k for the lock and the update together (the first change of a page after a checkpoint logs the whole page, in the lock when there is one); the rest is the trigger call itself.\n", r_upd, t, m, (l + ph) - (ul + uh)
    printf "- In instructions, syncguard%ss claim and completion run at %s× the hand-written key table (hand-written / syncguard): the client%ss statements are shorter to parse and plan (%+.1f k of planning), and the calls run statements planned once per backend.\n", "\047", r_idem, "\047", ip - hp
}'
echo ""
echo "The section took $((SECONDS - started)) s."
