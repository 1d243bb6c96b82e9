#!/usr/bin/env bash
# `make bench` section: idempotency keys with pgbench. Claim + effect insert +
# complete in one transaction (benches/idempotency_claim.sql) against the bare
# effect insert (benches/idempotency_bare.sql), 1 and 2 clients, on the server
# benches/run.sh started (PGHOST/PGPORT/PGUSER exported, extension created).
# Prints a markdown section; IDEM_SECONDS sets the duration of each run.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECONDS_EACH=${IDEM_SECONDS:-10}

psql -X -q -v ON_ERROR_STOP=1 <<'SQL' >/dev/null
SET client_min_messages = warning;
DROP TABLE IF EXISTS idem_bench_effects;
CREATE TABLE idem_bench_effects (id bigserial PRIMARY KEY, k bigint NOT NULL, amount int NOT NULL);
DELETE FROM syncguard.idempotency_keys WHERE scope = 'bench';
SQL

# TPS of one pgbench run (-n: no vacuum of pgbench's own tables); $3: protocol.
tps() {
    pgbench -n -M "${3:-simple}" -c "$2" -j "$2" -T "$SECONDS_EACH" -f "$1" 2>&1 |
        sed -nE 's/^tps = ([0-9.]+).*/\1/p' | head -n 1
}

rows=() prows=()
for clients in 1 2; do
    bare=$(tps benches/idempotency_bare.sql "$clients")
    txn=$(tps benches/idempotency_txn.sql "$clients")
    keyed=$(tps benches/idempotency_claim.sql "$clients")
    pbare=$(tps benches/idempotency_bare.sql "$clients" prepared)
    one=$(tps benches/idempotency_one_statement.sql "$clients" prepared)
    [ -n "$bare" ] && [ -n "$txn" ] && [ -n "$keyed" ] && [ -n "$pbare" ] && [ -n "$one" ] ||
        { echo "pgbench failed (clients=$clients)" >&2; exit 1; }
    rows+=("$(awk -v c="$clients" -v b="$bare" -v t="$txn" -v k="$keyed" \
        'BEGIN { printf "| %d | %.0f | %.0f | %.0f | **%.2f×** | %.2f× |", c, b, t, k, k / b, k / t }')")
    prows+=("$(awk -v c="$clients" -v b="$pbare" -v o="$one" \
        'BEGIN { printf "| %d | %.0f | %.0f | **%.2f×** |", c, b, o, o / b }')")
done
check=$(psql -X -At -c "SELECT (SELECT count(*) FROM idem_bench_effects k0) || ' effects, ' ||
                                 (SELECT count(*) FROM syncguard.idempotency_keys WHERE scope = 'bench' AND status = 'succeeded') ||
                                 ' succeeded keys'")

echo "## Idempotency keys (pgbench)"
echo ""
echo "\`benches/sections/idempotency.sh\`: pgbench, ${SECONDS_EACH} s per run, simple protocol, each client on its"
echo "own connection. *bare*: \`INSERT\` of one effect row (\`benches/idempotency_bare.sql\`, autocommit)."
echo "*keyed*: the local-work pattern (\`benches/idempotency_claim.sql\`): \`BEGIN; idem_claim\`, then"
echo "\`INSERT\` of the effect, \`idem_complete\`, \`COMMIT\`, in two round trips; a new key every time."
echo "*same transaction shape*: the bare insert inside that two-round-trip transaction, without the key"
echo "(\`benches/idempotency_txn.sql\`). Target: keyed at least 0.6× the bare insert's TPS. The bench"
echo "server runs with fsync=off, so a bare insert costs only some 20 µs and the ratio shows the key's"
echo "CPU and round-trip cost, not what it adds to a durable commit."
echo ""
echo "| clients | bare insert (TPS) | same transaction shape (TPS) | claim + insert + complete (TPS) | keyed / bare | keyed / same shape |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo ""
echo "After the keyed runs: $check."
echo ""
echo "*One statement*: when the work is one SQL statement, claim, effect and completion fit in one"
echo "statement and one round trip, the effect's id in the stored response"
echo "(\`benches/idempotency_one_statement.sql\`; docs/idempotency.md, \"Two ways to use it\"). Both sides with"
echo "prepared statements (\`pgbench -M prepared\`), as a driver sends a statement it repeats:"
echo ""
echo "| clients | bare insert, prepared (TPS) | claim + insert + complete in one statement, prepared (TPS) | one statement / bare |"
echo "|---|---|---|---|"
printf '%s\n' "${prows[@]}"
