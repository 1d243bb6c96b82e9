#!/usr/bin/env bash
# `make bench` section: the retry queue with pgbench, on the server
# benches/run.sh started (PGHOST/PGPORT/PGUSER exported, extension created).
# enqueue + dequeue + ack (benches/queue_syncguard.sql) against two bare
# SKIP LOCKED queue tables: one whose consumer holds the job's row lock while it
# works (benches/queue_bare.sql) and one with leases and a visibility timeout,
# as syncguard's (benches/queue_bare_lease.sql). 1 and 2 clients, each client
# producing and consuming; the three alternate QUEUE_ROUNDS times (default 3)
# and the median TPS of each is kept.
# Prints a markdown section; QUEUE_SECONDS sets the duration of each run.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECONDS_EACH=${QUEUE_SECONDS:-10}
ROUNDS=${QUEUE_ROUNDS:-3}

source benches/sections/lib.sh
psql_q() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }
psql_q >/dev/null <<'SQL'
SET client_min_messages = warning;
DROP TABLE IF EXISTS queue_bench_bare, queue_bench_lease;
CREATE TABLE queue_bench_bare (id bigserial PRIMARY KEY, payload jsonb NOT NULL);
CREATE TABLE queue_bench_lease (id bigserial PRIMARY KEY, payload jsonb NOT NULL,
                                visible_at timestamptz NOT NULL, attempts int NOT NULL DEFAULT 0);
CREATE INDEX queue_bench_lease_due ON queue_bench_lease (visible_at);
DELETE FROM syncguard.queue_jobs WHERE queue = 'bench';
SQL

# TPS of one pgbench run on emptied, vacuumed queues. $1: script, $2: clients.
tps() {
    psql_q -c "DELETE FROM queue_bench_bare" -c "DELETE FROM queue_bench_lease" \
           -c "DELETE FROM syncguard.queue_jobs WHERE queue = 'bench'" \
           -c "VACUUM queue_bench_bare, queue_bench_lease, syncguard.queue_jobs" -c "CHECKPOINT" >/dev/null
    pgbench -n -c "$2" -j "$2" -T "$SECONDS_EACH" -f "$1" 2>&1 |
        sed -nE 's/^tps = ([0-9.]+).*/\1/p' | head -n 1
}

rows=()
for clients in 1 2; do
    bare=() lease=() sg=()
    for _ in $(seq "$ROUNDS"); do
        bare+=("$(tps benches/queue_bare.sql "$clients")")
        lease+=("$(tps benches/queue_bare_lease.sql "$clients")")
        sg+=("$(tps benches/queue_syncguard.sql "$clients")")
    done
    b=$(median "${bare[@]}") l=$(median "${lease[@]}") s=$(median "${sg[@]}")
    [ -n "$b" ] && [ -n "$l" ] && [ -n "$s" ] || { echo "pgbench failed (clients=$clients)" >&2; exit 1; }
    rows+=("$(awk -v c="$clients" -v b="$b" -v l="$l" -v s="$s" -v rb="$(ratio "$s" "$b")" -v rl="$(ratio "$s" "$l")" \
        'BEGIN { printf "| %d | %.0f | %.0f | %.0f | **%s×** %s | **%s×** %s |", c, b, l, s,
                 rb, (s >= 0.8 * b) ? "met" : "not met", rl, (s >= 0.8 * l) ? "met" : "not met" }')")
done
left=$(psql -X -At -c "SELECT count(*) FROM syncguard.queue_jobs WHERE queue = 'bench'")

echo "## Retry queue (pgbench)"
echo ""
echo "\`benches/sections/queue.sh\`: pgbench, ${SECONDS_EACH} s per run, median of ${ROUNDS} alternating runs,"
echo "simple protocol; every client enqueues one job and consumes one. Two bare SKIP LOCKED queue tables"
echo "with a \`bigserial\` key. *lock held*: \`INSERT\`, then \`BEGIN; SELECT … ORDER BY id LIMIT 1 FOR UPDATE"
echo "SKIP LOCKED; DELETE; COMMIT\` (\`benches/queue_bare.sql\`): the consumer keeps the job's row locked"
echo "in an open transaction while it works, so a job has no visibility timeout and a consumer holds a"
echo "connection and a transaction for as long as a job takes. *leases*: \`INSERT\`, then an \`UPDATE\` of"
echo "the oldest due job's \`visible_at\` (\`FOR UPDATE SKIP LOCKED\` in its subquery), committed, then"
echo "\`DELETE\` (\`benches/queue_bare_lease.sql\`): the delivery guarantee of syncguard's queue, a job leased for"
echo "30 s and handed out again if its consumer dies. *syncguard*: \`enqueue\`, \`dequeue\` (a lease with a"
echo "visibility timeout), \`ack(job_id, attempt)\` (\`benches/queue_syncguard.sql\`). Target: syncguard at"
echo "least 0.8× the bare queue's TPS with 2 clients, here against both."
echo ""
echo "| clients | bare queue, lock held (TPS) | bare queue with leases (TPS) | syncguard enqueue + dequeue + ack (TPS) | syncguard / lock held (≥ 0.8×) | syncguard / leases (≥ 0.8×) |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo ""
echo "A lease is one more committed row write per job than a held lock (the lease's \`UPDATE\`, which also"
echo "moves the job in the due index, and its commit): the difference between the two bare tables."
echo ""
echo "Jobs left in the syncguard queue after the last run: $left (a dequeue that finds every due job locked"
echo "by the other client returns nothing, as the bare queue's SELECT does; those jobs wait for the next run)."
