#!/usr/bin/env bash
# `make bench` section: where merge_upsert, the protection trigger and the
# idempotency calls spend what the statements they replace do not, in
# instructions counted by callgrind (valgrind), which the machine's load does
# not change. A server of its own runs under callgrind; pgbench sends the
# scripts of the other sections with the same random keys on every side:
# the three upserts (benches/upsert_concat.sql, benches/upsert_merge_upsert.sql,
# benches/upsert_deep_merge_set.sql, prepared protocol) and the ORM's UPDATE
# (benches/upsert_update.sql, prepared, unprotected, with a built-in trigger
# that changes nothing, and protected), each side to a fresh copy of its own
# of a table of 100,000 documents of workload (b)'s shape; the idempotency
# scripts (benches/idem_hand_written.sql, benches/idem_syncguard.sql, simple
# protocol). Each runs PROFILE_CALLS
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
       -c "DO \$\$ DECLARE t text; BEGIN
             FOREACH t IN ARRAY '{concat,merge,deep,plain,trigger,protected}'::text[] LOOP
               EXECUTE format('CREATE TABLE %I (LIKE profiles INCLUDING ALL)', 'profiles_' || t);
               EXECUTE format('INSERT INTO %I SELECT * FROM profiles_seed', 'profiles_' || t);
             END LOOP; END \$\$" \
       -c "SELECT syncguard.protect('profiles_protected')" \
       -c "CREATE TRIGGER any_trigger BEFORE UPDATE ON profiles_trigger
           FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger()" \
       -c "SET client_min_messages = warning" -f benches/idem_setup.sql \
       -c "VACUUM ANALYZE" -c "CHECKPOINT" >/dev/null
# Each side writes a copy of its own, so that every side's runs start from
# the same table: script $2 with its table profiles renamed profiles_$1.
on_copy() {
    local f="$PGCLUSTER_DIR/$1.sql"
    sed -E "s/\<profiles\>/profiles_$1/g" "$2" | as_postgres tee "$f" >/dev/null
    grep -q "profiles_$1" "$f" || { echo "profile: no table profiles in $2" >&2; exit 1; }
    echo "$f"
}
upsert_concat=$(on_copy concat benches/upsert_concat.sql)
upsert_merge=$(on_copy merge benches/upsert_merge_upsert.sql)
upsert_deep=$(on_copy deep benches/upsert_deep_merge_set.sql)
update_plain=$(on_copy plain benches/upsert_update.sql)
update_trigger=$(on_copy trigger benches/upsert_update.sql)
update_protected=$(on_copy protected benches/upsert_update.sql)
as_server "$PG_BINDIR/pg_ctl" -D "$PGCLUSTER_DIR/data" -m fast -w stop >/dev/null
cg="$PGCLUSTER_DIR/callgrind"
as_postgres mkdir "$cg"
# Every process of the server writes its own file when it exits (%p: its pid).
# shellcheck disable=SC2046  # the options are words
as_server valgrind --tool=callgrind --trace-children=yes --callgrind-out-file="$cg/%p" \
    "$PG_BINDIR/postgres" -D "$PGCLUSTER_DIR/data" $(pgcluster_opts "$PGPORT" "$PGCLUSTER_DIR") \
    >"$PGCLUSTER_DIR/valgrind.log" 2>&1 &
server=$!
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
profile_side concat "$upsert_concat"
profile_side merge "$upsert_merge"
profile_side deep "$upsert_deep"
profile_side plain "$update_plain"
profile_side trigger "$update_trigger"
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
# Per call of sides concat, deep and merge, as side does.
three() { echo "$(side concat "${1:-}") $(side deep "${1:-}") $(side merge "${1:-}")"; }
read -r c_all d_all m_all <<< "$(three)"
read -r c_args d_args m_args <<< "$(three ':jsonb_build_object$')"
read -r c_merge d_merge m_merge <<< "$(three ':jsonb_concat$|:jsonb_deep_merge_wrapper$')"
read -r c_start d_start m_start <<< "$(three ':standard_ExecutorStart$')"
read -r c_plan d_plan m_plan <<< "$(three ':GetCachedPlan$')"
read -r c_cat d_cat m_cat <<< "$(three ':SearchCatCache1$')"
m_wrapper=$(side merge ':merge_upsert_(fields_)?wrapper$')
m_spi=$(side merge ':SPI_execute_plan$')
m_own=$(awk -v a="$m_wrapper" -v b="$m_spi" 'BEGIN { printf "%.1f", a - b }')
delta() { awk -v a="$2" -v b="$1" 'BEGIN { printf "%+.1f", a - b }'; }
row() { printf '| %s | %s | %s | %s |\n' "$1" "$2" "$3" "$(delta "$2" "$3")"; }
row3() { printf '| %s | %s | %s | %s | %s | %s |\n' "$1" "$2" "$3" "$4" "$(delta "$2" "$4")" "$(delta "$3" "$4")"; }

echo "\`benches/sections/profile.sh\`: a server under callgrind; pgbench sends each statement of the"
echo "upsert section (\`-M prepared\`, one client, the same random keys on every side, each side on a"
echo "fresh copy of the table of its own) $CALLS and"
echo "$((2 * CALLS)) times (other keys in the second run), each run one backend: the difference, per"
echo "call, in thousands of instructions, is the cost of a call in a warm backend. A function's figure"
echo "is inclusive (with what it calls), so rows overlap. The same for the UPDATE of the protection"
echo "section and for the idempotency scripts (their tables emptied before every run), below."
echo ""
echo "| per call (thousands of instructions) | \`\\|\\|\` upsert | deep-merge upsert | merge_upsert | merge_upsert − \`\\|\\|\` | merge_upsert − deep-merge |"
echo "|---|---|---|---|---|---|"
row3 "the whole call, as the backend sees it" "$c_all" "$d_all" "$m_all"
row3 "building jsonb values (\`jsonb_build_object\`): the patch" "$c_args" "$d_args" "$m_args"
row3 "the merge (\`jsonb_concat\`; \`jsonb_deep_merge\`)" "$c_merge" "$d_merge" "$m_merge"
row3 "starting executors (\`standard_ExecutorStart\`): for merge_upsert its call's, then its statement's" "$c_start" "$d_start" "$m_start"
row3 "finding and revalidating cached plans (\`GetCachedPlan\`)" "$c_plan" "$d_plan" "$m_plan"
row3 "catalog cache lookups (\`SearchCatCache1\`)" "$c_cat" "$d_cat" "$m_cat"
row3 "merge_upsert's own work around its statement (\`merge_upsert_fields_wrapper\` less \`SPI_execute_plan\`)" "0" "0" "$m_own"
echo ""
echo "Findings, from the table:"
echo ""
awk -v c="$c_all" -v d="$d_all" -v m="$m_all" -v ca="$c_args" -v ma="$m_args" -v cm="$c_merge" -v dm="$d_merge" \
    -v ds="$d_start" -v ms="$m_start" -v dc="$d_cat" -v mc="$m_cat" -v own="$m_own" \
    -v ratio="$(ratio "$c_all" "$m_all")" -v dratio="$(ratio "$d_all" "$m_all")" 'BEGIN {
    printf "- In instructions, merge_upsert runs at %s× the `||` upsert and at %s× the deep-merge upsert (their instructions / merge_upsert%ss, per call).\n", ratio, dratio, "\047"
    printf "- The planner hands merge_upsert the values of its key and data as they are (its support function rewrites the call into `_merge_upsert_fields`): building jsonb costs %.1f k a call against %.1f k for `||`, the patch alone on both sides.\n", ma, ca
    printf "- The deep merge costs %.1f k a call against %.1f k for `||`, which sorts the keys of the merged object.\n", dm, cm
    printf "- merge_upsert%ss own work around its statement (reading the names, finding its plan, building the returned row) is %.1f k a call; running its statement from a function costs %+.1f k of executor start and %+.1f k of catalog-cache lookups over the deep-merge upsert.\n", "\047", own, ms - ds, mc - dc
}'

read -r u_all p_all <<< "$(pair plain protected)"
read -r _ n_all <<< "$(pair plain trigger)"
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
row "the whole statement, with a built-in BEFORE UPDATE trigger that changes nothing instead (\`suppress_redundant_updates_trigger\`)" "$u_all" "$n_all"
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
    -v uh="$u_heap" -v ph="$p_heap" -v r_trg="$(ratio "$u_all" "$n_all")" \
    -v h="$h_all" -v i="$i_all" -v hp="$h_plan" -v ip="$i_plan" \
    -v r_upd="$(ratio "$u_all" "$p_all")" -v r_idem="$(ratio "$h_all" "$i_all")" 'BEGIN {
    printf "- In instructions, the protected UPDATE runs at %s× the unprotected one: the trigger costs %.1f k a call (%.1f k of it the merge, which finds the written document is the result and writes none), and PostgreSQL locks the row before a BEFORE trigger runs: %+.1f k for the lock and the update together (the first change of a page after a checkpoint logs the whole page, in the lock when there is one); the rest is the trigger call itself.\n", r_upd, t, m, (l + ph) - (ul + uh)
    printf "- Any BEFORE UPDATE row trigger pays the row lock and the call: with PostgreSQL%ss own trigger that changes nothing, the UPDATE runs at %s× in instructions.\n", "\047", r_trg
    printf "- In instructions, syncguard%ss claim and completion run at %s× the hand-written key table (hand-written / syncguard): the client%ss statements are shorter to parse and plan (%+.1f k of planning), and the calls run statements planned once per backend.\n", "\047", r_idem, "\047", ip - hp
}'
# The server stopped here, and waited for: every process under callgrind
# writes its file as it exits, after pg_ctl has seen the server gone, and
# the cluster's directory is removed only after the last one.
as_server "$PG_BINDIR/pg_ctl" -D "$PGCLUSTER_DIR/data" -m fast -w stop >/dev/null
wait "$server" || true
echo ""
echo "The section took $((SECONDS - started)) s."
