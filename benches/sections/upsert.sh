#!/usr/bin/env bash
# `make bench` section: merge upserts and protected tables with pgbench, on the
# server benches/run.sh started (PGHOST/PGPORT/PGUSER exported, extension
# created). Two comparisons, 1 and 2 clients each:
#   (1) syncguard.merge_upsert against a plain
#       INSERT … ON CONFLICT DO UPDATE SET data = t.data || excluded.data,
#       the same patch on the same table, both sides sending back the same:
#       nothing but a status (benches/upsert_plain.sql against
#       benches/upsert_merge_discard.sql), and the stored row
#       (benches/upsert_plain_returning.sql against benches/upsert_merge.sql);
#   (2) a plain UPDATE of the whole document (benches/upsert_update.sql) on
#       the table protected with syncguard.protect, and unprotected.
# Every run starts from the same freshly loaded table (100,000 rows of about
# 1 KB, generated once by benches/upsert_setup.sql); the two sides of a
# comparison alternate, UPSERT_ROUNDS times each (default 5), and the median
# TPS of each side is kept.
# Prints a markdown section; UPSERT_SECONDS sets the duration of each run.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECONDS_EACH=${UPSERT_SECONDS:-10}
ROUNDS=${UPSERT_ROUNDS:-5}
ROWS=100000    # as in benches/upsert_setup.sql and the pgbench scripts
started=$SECONDS

source benches/sections/lib.sh
psql_q() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }

psql_q -c "SET client_min_messages = warning" -f benches/upsert_setup.sql >/dev/null

# Load the table afresh: the same rows, vacuumed, checkpointed (so that no run
# pays for a checkpoint another run did not) and read into shared buffers.
# $1: protect or plain.
load() {
    local protection="SELECT syncguard.unprotect('upsert_bench')"
    [ "$1" != protect ] || protection="SELECT syncguard.protect('upsert_bench')"
    psql_q >/dev/null <<SQL
TRUNCATE upsert_bench;
INSERT INTO upsert_bench (id, data) SELECT id, data FROM upsert_bench_seed;
VACUUM ANALYZE upsert_bench;
$protection;
CHECKPOINT;
SELECT count(*) FROM upsert_bench WHERE data IS NOT NULL;
SQL
}

# TPS of one pgbench run on a fresh table (-n: no vacuum of pgbench's own
# tables). $1: script, $2: clients, $3: protect or plain.
tps() {
    load "$3"
    pgbench -n -c "$2" -j "$2" -T "$SECONDS_EACH" -f "$1" 2>&1 |
        sed -nE 's/^tps = ([0-9.]+).*/\1/p' | head -n 1
}

# What the table holds after a run of comparison (1): rows updated (version > 0)
# and inserted (new keys), and how many updated rows equal their loaded
# document deep-merged with their last patch, or `||` it.
check_upsert() {
    psql -X -At -F ' | ' -c "
        SELECT count(*) FILTER (WHERE id <= $ROWS),
               count(*) FILTER (WHERE id > $ROWS),
               count(*) FILTER (WHERE id <= $ROWS AND data = syncguard.jsonb_deep_merge(upsert_bench_doc(id, 0), p)),
               count(*) FILTER (WHERE id <= $ROWS AND data = upsert_bench_doc(id, 0) || p),
               count(*) FILTER (WHERE id > $ROWS AND data = p)
          FROM upsert_bench, upsert_bench_patch(id, (data->>'version')::int) p
         WHERE (data->>'version')::int > 0"
}
# The same after a run of comparison (2): updated rows equal to their loaded
# document deep-merged with the last record written, or to that record.
check_update() {
    psql -X -At -F ' | ' -c "
        SELECT count(*),
               count(*) FILTER (WHERE data = syncguard.jsonb_deep_merge(upsert_bench_doc(id, 0), r)),
               count(*) FILTER (WHERE data = r)
          FROM upsert_bench, upsert_bench_doc(id, (data->>'version')::int, true) r
         WHERE (data->>'version')::int > 0"
}

# One comparison at one client count: baseline and contestant alternate,
# B C in odd rounds and C B in even ones, so that a drift of the machine's
# speed during the section weighs on both sides alike; the median TPS of each
# side is kept. Sets med_b, med_c, runs_b, runs_c and, after the last round,
# check_b and check_c. $1 baseline script, $2 its protection, $3 contestant
# script, $4 its protection, $5 clients, $6 the check function.
compare() {
    local r side order t all_b=() all_c=()
    runs_b="" runs_c="" check_b="" check_c=""
    for r in $(seq 1 "$ROUNDS"); do
        if [ $((r % 2)) = 1 ]; then order="b c"; else order="c b"; fi
        for side in $order; do
            if [ "$side" = b ]; then
                t=$(tps "$1" "$5" "$2")
                [ -n "$t" ] || { echo "pgbench failed ($1, clients=$5)" >&2; exit 1; }
                all_b+=("$t")
                runs_b+="${runs_b:+, }$(printf '%.0f' "$t")"
                [ "$r" != "$ROUNDS" ] || check_b=$($6)
            else
                t=$(tps "$3" "$5" "$4")
                [ -n "$t" ] || { echo "pgbench failed ($3, clients=$5)" >&2; exit 1; }
                all_c+=("$t")
                runs_c+="${runs_c:+, }$(printf '%.0f' "$t")"
                [ "$r" != "$ROUNDS" ] || check_c=$($6)
            fi
        done
    done
    med_b=$(median "${all_b[@]}")
    med_c=$(median "${all_c[@]}")
}

# A table row: clients, baseline, contestant, ratio, target met or not.
# $1 clients, $2 target ratio.
row() {
    awk -v c="$1" -v b="$med_b" -v k="$med_c" -v rb="$runs_b" -v rk="$runs_c" -v goal="$2" \
        -v r="$(ratio "$med_c" "$med_b")" \
        'BEGIN { printf "| %d | %.0f (%s) | %.0f (%s) | **%s×** | %s |\n", c, b, rb, k, rk, r,
                        (k >= goal * b ? "met" : "**not met**") }'
}

upsert_rows=() returning_rows=() mixed=() update_rows=()
for clients in 1 2; do
    compare benches/upsert_plain.sql plain benches/upsert_merge_discard.sql plain "$clients" check_upsert
    upsert_rows+=("$(row "$clients" 0.9)")
    upsert_check_b=$check_b upsert_check_c=$check_c plain_tps=$med_b
    compare benches/upsert_plain_returning.sql plain benches/upsert_merge.sql plain "$clients" true
    returning_rows+=("$(row "$clients" 0.9)")
    mixed+=("$(ratio "$med_c" "$plain_tps")×")
    compare benches/upsert_update.sql plain benches/upsert_update.sql protect "$clients" check_update
    update_rows+=("$(row "$clients" 0.8)")
    update_check_b=$check_b update_check_c=$check_c
done
psql_q -c "DROP TABLE upsert_bench, upsert_bench_seed" \
       -c "DROP FUNCTION upsert_bench_patch, upsert_bench_doc,
                         upsert_bench_section, upsert_bench_group"
elapsed=$((SECONDS - started))

echo "## Merge upserts and protected tables (pgbench)"
echo ""
echo "\`benches/sections/upsert.sh\`: pgbench, ${SECONDS_EACH} s per run, simple protocol, each client on its"
echo "own connection, on a table \`upsert_bench (id bigint PRIMARY KEY, data jsonb)\` of $ROWS rows whose"
echo "documents have the shape of workload (b), about 1 KB: \`{id, name, version, s1..s4: {g1..g3:"
echo "{f1..f4}}}\`, 48 leaves (\`benches/upsert_setup.sql\`). Every run starts from the same freshly"
echo "loaded, vacuumed and checkpointed table. The two sides of a comparison alternate, baseline first in"
echo "odd rounds and contestant first in even ones (B C C B …), runs per side: $ROUNDS; a cell is the median TPS"
echo "of a side, its runs in parentheses in the order they ran. Documents and patches are built in the"
echo "statement from the key and a random number (plpgsql functions), the same on both sides. The section"
echo "took ${elapsed} s."
echo ""
echo "**(1) Merge upsert.** A random key, nine in ten existing and one in ten new (a sync job meets new"
echo "records too, and both sides then take their insert path), gets a patch of about"
echo "half the document: a new \`version\` and whole sections \`s1\` and \`s3\`, each without its leaf"
echo "\`g3.f4\`. *baseline*: \`INSERT … ON CONFLICT (id) DO UPDATE SET data = t.data || excluded.data\`"
echo "(\`benches/upsert_plain.sql\`). *merge_upsert*: \`SELECT syncguard.merge_upsert('upsert_bench',"
echo "jsonb_build_object('id', :id), jsonb_build_object('data', <patch>)) IS NOT NULL\`"
echo "(\`benches/upsert_merge_discard.sql\`): the baseline sends back only its status, so this caller"
echo "asks only whether a row is stored, and one boolean is sent back instead of the stored row."
echo "The deep merge keeps the stored \`s1.g3.f4\` and \`s3.g3.f4\`, \`||\` drops them; otherwise both"
echo "store the same documents. Target: merge_upsert at least 0.9× the baseline."
echo ""
echo "| clients | baseline \`\|\|\` upsert (TPS) | merge_upsert (TPS) | merge_upsert / baseline | target ≥ 0.9× |"
echo "|---|---|---|---|---|"
printf '%s\n' "${upsert_rows[@]}"
echo ""
echo "The same when both sides send back the stored row: the baseline with \`… RETURNING t.id, t.data\`"
echo "(\`benches/upsert_plain_returning.sql\`), merge_upsert as \`SELECT syncguard.merge_upsert(…)\`"
echo "(\`benches/upsert_merge.sql\`), which returns it as one jsonb object, in their own runs:"
echo ""
echo "| clients | baseline \`\|\|\` upsert returning the row (TPS) | merge_upsert returning the row (TPS) | merge_upsert / baseline | ≥ 0.9× |"
echo "|---|---|---|---|---|"
printf '%s\n' "${returning_rows[@]}"
echo ""
echo "Sending back a 1 KB row costs the server its text form (some 4 µs) and the client its transfer."
echo "merge_upsert returning the row against the baseline returning nothing (medians of the two tables):"
echo "${mixed[0]} with 1 client, ${mixed[1]} with 2."
echo ""
echo "**(2) Protected table.** \`UPDATE upsert_bench SET data = <record> WHERE id = :id\` of a random"
echo "existing key (\`benches/upsert_update.sql\`), the record being the whole document as an application"
echo "has it, one leaf short (\`s4.g3.f4\`), on the table unprotected (*baseline*) and after"
echo "\`SELECT syncguard.protect('upsert_bench')\` (*protected*: the trigger deep-merges the record into"
echo "the stored document, which keeps \`s4.g3.f4\`). Target: protected at least 0.8× unprotected."
echo ""
echo "| clients | unprotected (TPS) | protected (TPS) | protected / unprotected | target ≥ 0.8× |"
echo "|---|---|---|---|---|"
printf '%s\n' "${update_rows[@]}"
echo ""
echo "Sanity check, on what the table held after the last 2-client run of each side: the rows the run"
echo "updated, and how many of them equal their loaded document deep-merged with the last value written"
echo "(so still holding the leaves only the load wrote) or that document \`||\` the last patch / the last"
echo "record as written (those leaves gone)."
echo ""
echo "| run | rows updated | = load deep-merged with last write | = load \`\|\|\` last patch, or last record | new keys inserted (= their patch) |"
echo "|---|---|---|---|---|"
show() {  # $1 label, $2 check output
    echo "$2" | awk -F ' [|] ' -v l="$1" 'NF == 5 { printf "| %s | %d | %d | %d | %d (%d) |\n", l, $1, $3, $4, $2, $5 }
                                          NF == 3 { printf "| %s | %d | %d | %d | |\n", l, $1, $2, $3 }'
}
show "(1) baseline \`\|\|\` upsert" "$upsert_check_b"
show "(1) merge_upsert" "$upsert_check_c"
show "(2) unprotected UPDATE" "$update_check_b"
show "(2) protected UPDATE" "$update_check_c"
