#!/usr/bin/env bash
# `make bench` section: merge upserts and protected tables with pgbench, on the
# server benches/run.sh started (PGHOST/PGPORT/PGUSER exported, extension
# created, the reference workloads loaded: the documents come from pairs_b).
#   (1) syncguard.merge_upsert (benches/upsert_merge_upsert.sql) against the
#       `||` upsert (benches/upsert_concat.sql), copies of the shared scripts
#       of ../shared/bench/pgbench/, at 1 and 2 clients, simple and prepared
#       protocol, with the deep-merge upsert statement
#       (benches/upsert_deep_merge_set.sql) as a reference;
#   (2) the UPDATE an ORM sends (benches/upsert_update.sql) on the table
#       protected with syncguard.protect and unprotected, 1 and 2 clients.
# Every run starts from the same freshly loaded table; the sides of a
# comparison alternate (benches/lib.sh: compare). UPSERT_SECONDS and
# UPSERT_ROUNDS override the mode's seconds per run and rounds.
set -euo pipefail
cd "$(dirname "$0")/../.."
source benches/lib.sh
RUN_SECONDS=${UPSERT_SECONDS:-$BENCH_SECONDS}
ROUNDS=${UPSERT_ROUNDS:-$ROUNDS}
started=$SECONDS

# The rows every run starts from: workload (b)'s stored documents, as
# ../shared/bench/pgbench/profiles_setup.sql loads them, kept with a primary
# key (the ORM's UPDATE reads its document from it). No autovacuum on the
# table the runs write: every load vacuums, and an autovacuum starting in
# one run and not another is noise.
psql_q >/dev/null <<'SQL'
SET client_min_messages = warning;
DROP TABLE IF EXISTS profiles, profiles_seed;
CREATE TABLE profiles_seed (user_id int PRIMARY KEY, data jsonb NOT NULL);
INSERT INTO profiles_seed SELECT id, a FROM pairs_b ORDER BY id;
VACUUM ANALYZE profiles_seed;
CREATE TABLE profiles (user_id int PRIMARY KEY, data jsonb) WITH (autovacuum_enabled = off);
SQL

# The per-run preparation: the table loaded afresh (the same rows, vacuumed,
# checkpointed so that no run pays for a checkpoint another did not, and read
# into shared buffers), protected when the side's tag says so.
load() {
    local protection="SELECT syncguard.unprotect('profiles')"
    [ "$1" != protect ] || protection="SELECT syncguard.protect('profiles')"
    psql_q <<SQL
TRUNCATE profiles;
INSERT INTO profiles SELECT * FROM profiles_seed ORDER BY user_id;
VACUUM ANALYZE profiles;
$protection;
CHECKPOINT;
SELECT count(*) FROM profiles WHERE data IS NOT NULL;
SQL
}
BENCH_PREPARE=load

# What the table holds after a run of (1): rows updated (they have s3.g1.fnew),
# how many equal their loaded document deep-merged with their last patch
# (rebuilt from its value of s3.g1.f1), or that document `||` the patch, and
# the average size of their documents.
check_upsert() {
    psql -X -At -F ' | ' -c "
        SELECT count(*),
               count(*) FILTER (WHERE p.data = syncguard.jsonb_deep_merge(s.data, x.patch)),
               count(*) FILTER (WHERE p.data = s.data || x.patch),
               round(avg(pg_catalog.pg_column_size(p.data)))
          FROM profiles p JOIN profiles_seed s USING (user_id),
               LATERAL (SELECT CASE WHEN p.data #> '{s3,g1}' ? 'fnew' THEN (p.data #>> '{s3,g1,f1}')::int END AS v) v,
               LATERAL (SELECT jsonb_build_object(
                   'version', 2,
                   's1', jsonb_build_object('g2', jsonb_build_object('f3', 'patched_' || v.v)),
                   's3', jsonb_build_object('g1', jsonb_build_object('f1', v.v, 'fnew', true)),
                   's4', jsonb_build_object('g3', jsonb_build_object('f2', 'z' || v.v)))) x(patch)
         WHERE p.data #> '{s3,g1}' ? 'fnew'"
}
# After a run of (2): rows updated (their s2.g1.f1 starts with orm_), and how
# many equal their loaded document with that one leaf changed.
check_update() {
    psql -X -At -F ' | ' -c "
        SELECT count(*),
               count(*) FILTER (WHERE p.data = jsonb_set(s.data, '{s2,g1,f1}', p.data #> '{s2,g1,f1}'))
          FROM profiles p JOIN profiles_seed s USING (user_id)
         WHERE p.data #>> '{s2,g1,f1}' LIKE 'orm\_%'"
}

upsert_rows=() update_rows=()
BENCH_CHECK=check_upsert
for protocol in simple prepared; do
    for clients in 1 2; do
        compare "$clients" "$protocol" benches/upsert_concat.sql benches/upsert_merge_upsert.sql \
            benches/upsert_deep_merge_set.sql
        upsert_rows+=("| $clients | $protocol | $(tps_cell 0) | $(tps_cell 1) | $(ratio_cell 1 0 0.95) | $(tps_cell 2) | $(ratio_cell 1 2) | $(ratio_cell 2 0) |")
        upsert_check=("${SIDE_CHECK[@]}")
    done
done
BENCH_CHECK=check_update
for clients in 1 2; do
    compare "$clients" simple benches/upsert_update.sql:plain benches/upsert_update.sql:protect
    update_rows+=("| $clients | $(tps_cell 0) | $(tps_cell 1) | $(ratio_cell 1 0 0.95) |")
    update_check=("${SIDE_CHECK[@]}")
done
psql_q -c "DROP TABLE profiles, profiles_seed"
elapsed=$((SECONDS - started))

echo "## Merge upserts and protected tables (pgbench)"
echo ""
echo "\`benches/sections/upsert.sh\`: pgbench, ${RUN_SECONDS} s per run, each client on its own connection, on"
echo "\`profiles (user_id int PRIMARY KEY, data jsonb)\`: the 100,000 stored documents of workload (b) (about"
echo "1 KB, \`{id, name, version, s1..s4: {g1..g3: {f1..f4}}}\`), as \`../shared/bench/pgbench/profiles_setup.sql\`"
echo "loads them. Every run starts from the same freshly loaded, vacuumed and checkpointed table. The two"
echo "sides of a comparison alternate, baseline first in odd rounds and contestant first in even ones"
echo "(B C C B …), rounds: $ROUNDS; a TPS cell is the median of a side, its runs in parentheses in the order"
echo "they ran; a ratio is the median of the per-round ratios, their range in parentheses, truncated."
echo "Every statement builds what it writes in the statement itself, the same way on both sides; no"
echo "plpgsql helper in a measured statement. The section took ${elapsed} s."
echo ""
echo "**(1) Merge upsert**, the scripts of \`../shared/bench/pgbench/\` (copied): a random existing key gets a"
echo "patch built with \`jsonb_build_object\` in the statement: a new \`version\` and four leaves at depth 3 in"
echo "\`s1\`, \`s3\` (one of them new) and \`s4\`. *baseline*: \`INSERT … ON CONFLICT (user_id) DO UPDATE SET"
echo "data = profiles.data || excluded.data\` (\`benches/upsert_concat.sql\`). *merge_upsert*:"
echo "\`SELECT syncguard.merge_upsert('profiles', jsonb_build_object('user_id', :uid::int),"
echo "jsonb_build_object('data', <the same patch>)) IS NOT NULL\` (\`benches/upsert_merge_upsert.sql\`): the"
echo "baseline sends back only its status, so this caller asks only whether a row is stored. The deep"
echo "merge keeps the other leaves of \`s1\`, \`s3\` and \`s4\`; \`||\` replaces those sections with the patch's."
echo "*simple*: \`pgbench -M simple\` (every statement parsed and planned); *prepared*: \`-M prepared\`, as"
echo "a driver sends a statement it repeats. Target: merge_upsert at least 0.95× the baseline."
echo "*deep-merge upsert* (a reference, \`benches/upsert_deep_merge_set.sql\`, a copy of the shared script):"
echo "the baseline's statement with \`syncguard.jsonb_deep_merge(profiles.data, excluded.data)\` for \`||\`,"
echo "which stores what merge_upsert stores; the sides run in the order of the columns, reversed every"
echo "other round. merge_upsert / deep-merge upsert is what the function call costs beyond the statement"
echo "it runs; deep-merge upsert / baseline what keeping the document costs (the sanity check below gives"
echo "the documents' sizes: \`||\` drops the leaves of \`s1\`, \`s3\` and \`s4\` the patch does not carry)."
echo ""
echo "| clients | protocol | baseline \`\|\|\` upsert (TPS) | merge_upsert (TPS) | merge_upsert / baseline | target ≥ 0.95× | deep-merge upsert (TPS) | merge_upsert / deep-merge upsert | deep-merge upsert / baseline |"
echo "|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${upsert_rows[@]}"
echo ""
echo "**(2) Protected table.** The UPDATE an ORM sends after the application changed one leaf of a"
echo "document it loaded: every column but the key in SET, the whole document with one leaf"
echo "(\`s2.g1.f1\`) changed, for a random key (\`benches/upsert_update.sql\`; the document is the loaded row"
echo "from \`profiles_seed\` with the leaf set by \`jsonb_set\`, read by primary key in the statement, since"
echo "pgbench cannot send another literal for every key), simple protocol, on the table unprotected"
echo "(*baseline*) and after \`SELECT syncguard.protect('profiles')\` (*protected*: the trigger deep-merges"
echo "the written document into the stored one). Target: protected at least 0.95× unprotected."
echo ""
echo "| clients | unprotected (TPS) | protected (TPS) | protected / unprotected | target ≥ 0.95× |"
echo "|---|---|---|---|---|"
printf '%s\n' "${update_rows[@]}"
echo ""
echo "Sanity check, on what the table held after the last run of each side (2 clients; (1) prepared):"
echo "the rows the run updated, and how many of them equal their loaded document deep-merged with the last"
echo "patch (the leaves only the load wrote kept) or that document \`||\` the patch (those leaves gone), and"
echo "the average size of the updated documents (\`pg_column_size\`; a loaded one is about 1,200 bytes); for"
echo "(2), how many equal their loaded document with the one leaf changed."
echo ""
echo "| run | rows updated | = load deep-merged with last patch | = load \`\|\|\` last patch | average document size (bytes) | = load with the leaf changed |"
echo "|---|---|---|---|---|---|"
show() {  # $1 label, $2 check output
    awk -F ' [|] ' -v l="$1" 'NF == 4 { printf "| %s | %d | %d | %d | %d | |\n", l, $1, $2, $3, $4 }
                              NF == 2 { printf "| %s | %d | | | | %d |\n", l, $1, $2 }' <<< "$2"
}
show "(1) baseline \`\|\|\` upsert" "${upsert_check[0]}"
show "(1) merge_upsert" "${upsert_check[1]}"
show "(1) deep-merge upsert" "${upsert_check[2]}"
show "(2) unprotected UPDATE" "${update_check[0]}"
show "(2) protected UPDATE" "${update_check[1]}"
