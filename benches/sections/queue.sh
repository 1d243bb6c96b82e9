#!/usr/bin/env bash
# `make bench` section: the retry queue with pgbench, on the server
# benches/run.sh started (PGHOST/PGPORT/PGUSER exported, extension created).
# enqueue + dequeue + ack (benches/queue_syncguard.sql) against a bare
# SKIP LOCKED queue table (benches/queue_bare.sql), 1 and 2 clients, each
# client producing and consuming; the two sides alternate QUEUE_ROUNDS times
# (default 3) and the median TPS of each is kept.
# Prints a markdown section; QUEUE_SECONDS sets the duration of each run.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECONDS_EACH=${QUEUE_SECONDS:-10}
ROUNDS=${QUEUE_ROUNDS:-3}

psql_q() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }
psql_q >/dev/null <<'SQL'
SET client_min_messages = warning;
DROP TABLE IF EXISTS queue_bench_bare;
CREATE TABLE queue_bench_bare (id bigserial PRIMARY KEY, payload jsonb NOT NULL);
DELETE FROM syncguard.queue_jobs WHERE queue = 'bench';
SQL

# TPS of one pgbench run on emptied, vacuumed queues. $1: script, $2: clients.
tps() {
    psql_q -c "DELETE FROM queue_bench_bare" -c "DELETE FROM syncguard.queue_jobs WHERE queue = 'bench'" \
           -c "VACUUM queue_bench_bare, syncguard.queue_jobs" -c "CHECKPOINT" >/dev/null
    pgbench -n -c "$2" -j "$2" -T "$SECONDS_EACH" -f "$1" 2>&1 |
        sed -nE 's/^tps = ([0-9.]+).*/\1/p' | head -n 1
}
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

rows=()
for clients in 1 2; do
    bare=() sg=()
    for _ in $(seq "$ROUNDS"); do
        bare+=("$(tps benches/queue_bare.sql "$clients")")
        sg+=("$(tps benches/queue_syncguard.sql "$clients")")
    done
    b=$(median "${bare[@]}") s=$(median "${sg[@]}")
    [ -n "$b" ] && [ -n "$s" ] || { echo "pgbench failed (clients=$clients)" >&2; exit 1; }
    rows+=("$(awk -v c="$clients" -v b="$b" -v s="$s" \
        'BEGIN { printf "| %d | %.0f | %.0f | **%.2f×** | %s |", c, b, s, s / b, (s >= 0.8 * b) ? "met" : "**not met**" }')")
done
left=$(psql -X -At -c "SELECT count(*) FROM syncguard.queue_jobs WHERE queue = 'bench'")

echo "## Retry queue (pgbench)"
echo ""
echo "\`benches/sections/queue.sh\`: pgbench, ${SECONDS_EACH} s per run, median of ${ROUNDS} alternating runs,"
echo "simple protocol; every client enqueues one job and consumes one. *bare*: a plain table with a"
echo "\`bigserial\` key: \`INSERT\`, then \`BEGIN; SELECT … ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED;"
echo "DELETE; COMMIT\` (\`benches/queue_bare.sql\`). *syncguard*: \`enqueue\`, \`dequeue\` (a lease with a"
echo "visibility timeout), \`ack(job_id, attempt)\` (\`benches/queue_syncguard.sql\`). Target: syncguard at"
echo "least 0.8× the bare queue's TPS with 2 clients."
echo ""
echo "| clients | bare SKIP LOCKED queue (TPS) | syncguard enqueue + dequeue + ack (TPS) | syncguard / bare | target ≥ 0.8× |"
echo "|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo ""
echo "Jobs left in the syncguard queue after the last run: $left (a dequeue that finds every due job locked"
echo "by the other client returns nothing, as the bare queue's SELECT does; those jobs wait for the next run)."
