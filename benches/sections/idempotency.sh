#!/usr/bin/env bash
# `make bench` section: idempotency keys with pgbench, against the key table an
# application writes by hand, on the server benches/run.sh started
# (PGHOST/PGPORT/PGUSER exported, extension created). Tables and the
# two-round-trip scripts are copies of ../shared/bench/pgbench/:
#   two round trips: syncguard's claim + effect + complete
#     (benches/idem_syncguard.sql) against the hand-written key table
#     (benches/idem_hand_written.sql), the bare effect insert
#     (benches/idem_bare.sql) as a reference, simple protocol;
#   one statement: syncguard's claim with `complete`, the key written once
#     (benches/idem_one_statement_once.sql), and claim + effect + complete
#     (benches/idem_one_statement.sql), against their hand-written
#     equivalent (benches/idem_hand_written_one_statement.sql), -M prepared;
# at 1 and 2 clients, and the two-round-trip comparison once more at 1 client
# with fsync = on and synchronous_commit = on (a restart of the server).
# IDEM_SECONDS and IDEM_ROUNDS override the mode's seconds per run and rounds.
set -euo pipefail
cd "$(dirname "$0")/../.."
source benches/lib.sh
RUN_SECONDS=${IDEM_SECONDS:-$BENCH_SECONDS}
ROUNDS=${IDEM_ROUNDS:-${BENCH_ROUNDS:-3}}
started=$SECONDS

psql_q -c "SET client_min_messages = warning" -f benches/idem_setup.sql >/dev/null

# Every run starts from empty tables (they would otherwise grow from run to run).
empty() {
    psql_q -c "TRUNCATE effects, hand_keys, syncguard.idempotency_keys" -c "CHECKPOINT"
}
BENCH_PREPARE=empty
# After a run: effects, and keys completed, in either table.
count() {
    psql -X -At -c "SELECT (SELECT count(*) FROM effects) || ' effects, '
                        || (SELECT count(*) FROM hand_keys WHERE status = 'succeeded')
                        + (SELECT count(*) FROM syncguard.idempotency_keys WHERE status = 'succeeded')
                        || ' keys succeeded'"
}
BENCH_CHECK=count

two_rt=() one=()
for clients in 1 2; do
    compare "$clients" simple benches/idem_bare.sql benches/idem_hand_written.sql benches/idem_syncguard.sql
    two_rt+=("| $clients | fsync off | $(tps_cell 0) | $(tps_cell 1) | $(tps_cell 2) | $(ratio_cell 2 1 1.0) | $(ratio_cell 2 0) |")
    checks=("${SIDE_CHECK[@]}")
    compare "$clients" prepared benches/idem_hand_written_one_statement.sql benches/idem_one_statement_once.sql \
        benches/idem_one_statement.sql
    one+=("| $clients | $(tps_cell 0) | $(tps_cell 1) | $(ratio_cell 1 0 1.0) | $(tps_cell 2) | $(ratio_cell 2 0) |")
done

# Durable: fsync only changes with a restart (the command line of
# scripts/pgcluster.sh sets it off); synchronous_commit per run.
bench_server_restart "-c fsync=on"
[ "$(psql -X -At -c 'SHOW fsync')" = on ] || { echo "fsync is not on after the restart" >&2; exit 1; }
export PGOPTIONS="-c synchronous_commit=on"
compare 1 simple benches/idem_bare.sql benches/idem_hand_written.sql benches/idem_syncguard.sql
two_rt+=("| 1 | **fsync on, synchronous_commit on** | $(tps_cell 0) | $(tps_cell 1) | $(tps_cell 2) | $(ratio_cell 2 1 1.0) | $(ratio_cell 2 0) |")
unset PGOPTIONS
bench_server_restart
psql_q -c "DROP TABLE effects, hand_keys" -c "TRUNCATE syncguard.idempotency_keys"
elapsed=$((SECONDS - started))

echo "## Idempotency keys (pgbench)"
echo ""
echo "\`benches/sections/idempotency.sh\`: pgbench, ${RUN_SECONDS} s per run, each client on its own connection,"
echo "the tables of \`../shared/bench/pgbench/idem_setup.sql\` (\`benches/idem_setup.sql\`), emptied before every"
echo "run. The sides alternate (forward in odd rounds, backward in even ones), rounds: $ROUNDS; a TPS cell"
echo "is the median of a side, its runs in parentheses in the order they ran; a ratio is the median of the"
echo "per-round ratios, their range in parentheses, truncated. The bench server runs with fsync = off and"
echo "synchronous_commit = on (commits written, not flushed), but for the row marked *fsync on*, run after a"
echo "restart with fsync = on, with synchronous_commit = on: how production runs. The section took ${elapsed} s."
echo ""
echo "**Two round trips**, the application needing the claim's outcome before it does the work, simple"
echo "protocol; a new key every time. *hand-written key table* (\`benches/idem_hand_written.sql\`): \`BEGIN\`,"
echo "\`INSERT INTO hand_keys … ON CONFLICT DO NOTHING RETURNING key\`, then the effect's \`INSERT\`, an"
echo "\`UPDATE\` of the key's status and response, \`COMMIT\`. *syncguard* (\`benches/idem_syncguard.sql\`):"
echo "\`BEGIN\`, \`syncguard.idem_claim\`, then the effect's \`INSERT\`, \`syncguard.idem_complete\`, \`COMMIT\`."
echo "*bare insert* (\`benches/idem_bare.sql\`, a reference without a target): the effect's \`INSERT\` alone,"
echo "autocommit. Target: syncguard at least 1.0× the hand-written key table."
echo ""
echo "| clients | server | bare insert (TPS) | hand-written key table (TPS) | syncguard (TPS) | syncguard / hand-written | target ≥ 1.0× | syncguard / bare (reference) |"
echo "|---|---|---|---|---|---|---|---|"
printf '%s\n' "${two_rt[@]}"
echo ""
echo "What the tables held after the last 2-client run of each side: bare insert ${checks[0]}; hand-written"
echo "${checks[1]}; syncguard ${checks[2]}."
echo ""
echo "**One statement**, when the work is one SQL statement: key, effect and completion in one statement"
echo "and one round trip, with \`pgbench -M prepared\` as a driver sends a statement it repeats; the sides"
echo "run in the order of the columns, reversed every other round. *hand-written*"
echo "(\`benches/idem_hand_written_one_statement.sql\`): the key inserted (\`ON CONFLICT DO NOTHING\`)"
echo "already completed with the effect's id drawn from the effect's sequence, the effect inserted when"
echo "the key is new, a replay's stored response read back. *syncguard, key written once*"
echo "(\`benches/idem_one_statement_once.sql\`): the same with \`idem_claim(…, complete => …)\`, which stores"
echo "the key succeeded with that response in the claim itself. *claim + complete*"
echo "(\`benches/idem_one_statement.sql\`, a reference without a target): \`idem_claim\`, the effect's"
echo "\`INSERT\` when the claim is won, \`idem_complete\` with the effect's id: the key written twice."
echo "Target: syncguard, key written once, at least 1.0× the hand-written form."
echo ""
echo "| clients | hand-written one statement (TPS) | syncguard, key written once (TPS) | key written once / hand-written | target ≥ 1.0× | claim + complete (TPS) | claim + complete / hand-written (reference) |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${one[@]}"
