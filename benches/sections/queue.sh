#!/usr/bin/env bash
# `make bench` section: the retry queue with pgbench, on the server
# benches/run.sh started (PGHOST/PGPORT/PGUSER exported, extension created).
# enqueue + dequeue + ack (benches/queue_syncguard.sql) against two bare
# SKIP LOCKED queue tables: one whose consumer holds the job's row lock while it
# works (benches/queue_bare.sql) and one with leases and a visibility timeout,
# as syncguard's (benches/queue_bare_lease.sql). 1 and 2 clients, each client
# producing and consuming; the three alternate (benches/lib.sh: compare), 3
# rounds. Prints a markdown section; QUEUE_SECONDS and QUEUE_ROUNDS override
# the mode's seconds per run and rounds.
set -euo pipefail
cd "$(dirname "$0")/../.."
source benches/lib.sh
RUN_SECONDS=${QUEUE_SECONDS:-$BENCH_SECONDS}
ROUNDS=${QUEUE_ROUNDS:-${BENCH_ROUNDS:-3}}
started=$SECONDS
psql_q >/dev/null <<'SQL'
SET client_min_messages = warning;
DROP TABLE IF EXISTS queue_bench_bare, queue_bench_lease;
CREATE TABLE queue_bench_bare (id bigserial PRIMARY KEY, payload jsonb NOT NULL);
CREATE TABLE queue_bench_lease (id bigserial PRIMARY KEY, payload jsonb NOT NULL,
                                visible_at timestamptz NOT NULL, attempts int NOT NULL DEFAULT 0);
CREATE INDEX queue_bench_lease_due ON queue_bench_lease (visible_at);
DELETE FROM syncguard.queue_jobs WHERE queue = 'bench';
SQL

# Every run starts from emptied, vacuumed queues.
empty() {
    psql_q -c "DELETE FROM queue_bench_bare" -c "DELETE FROM queue_bench_lease" \
           -c "DELETE FROM syncguard.queue_jobs WHERE queue = 'bench'" \
           -c "VACUUM queue_bench_bare, queue_bench_lease, syncguard.queue_jobs" -c "CHECKPOINT"
}
BENCH_PREPARE=empty

rows=()
for clients in 1 2; do
    compare "$clients" simple benches/queue_bare.sql benches/queue_bare_lease.sql benches/queue_syncguard.sql
    rows+=("| $clients | $(tps_cell 0) | $(tps_cell 1) | $(tps_cell 2) | $(ratio_cell 2 0 0.8) | $(ratio_cell 2 1 0.8) |")
done
left=$(psql -X -At -c "SELECT count(*) FROM syncguard.queue_jobs WHERE queue = 'bench'")
elapsed=$((SECONDS - started))

echo "## Retry queue (pgbench)"
echo ""
echo "\`benches/sections/queue.sh\`: pgbench, ${RUN_SECONDS} s per run, simple protocol, on emptied queues; the"
echo "three sides alternate (forward in odd rounds, backward in even ones), rounds: ${ROUNDS}; a TPS cell is the"
echo "median of a side, its runs in parentheses in the order they ran; a ratio is the median of the"
echo "per-round ratios, their range in parentheses, truncated. The section took ${elapsed} s."
echo "Every client enqueues one job and consumes one. Two bare SKIP LOCKED queue tables"
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
echo "| clients | bare queue, lock held (TPS) | bare queue with leases (TPS) | syncguard enqueue + dequeue + ack (TPS) | syncguard / lock held | ≥ 0.8× | syncguard / leases | ≥ 0.8× |"
echo "|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo ""
echo "A lease is one more committed row write per job than a held lock (the lease's \`UPDATE\`, which also"
echo "moves the job in the due index, and its commit): the difference between the two bare tables."
echo ""
echo "Jobs left in the syncguard queue after the last run: $left (a dequeue that finds every due job locked"
echo "by the other client returns nothing, as the bare queue's SELECT does; those jobs wait for the next run)."
