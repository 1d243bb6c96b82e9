#!/usr/bin/env bash
# `make bench` section: merge upserts on a Citus cluster (a coordinator and two
# workers of its own, started here; PostgreSQL 15 with Citus installed, see
# scripts/citus.sh), 2 clients through the coordinator, on `upsert_bench`
# distributed by id (benches/upsert_setup.sql). Baseline: the `||` upsert
# (benches/upsert_plain.sql); contestants: merge_upsert
# (benches/upsert_merge_discard.sql) and the plain upsert that deep-merges
# with jsonb_deep_merge (benches/upsert_deep_merge.sql). Sides alternate
# (benches/lib.sh: compare), every run on a freshly loaded table; 3 rounds in
# the full mode, 2 in the default one. Prints a markdown section (or why it
# did not run). CITUS_SECONDS and CITUS_ROUNDS override the mode's settings.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/pgversion.sh
source benches/lib.sh
RUN_SECONDS=${CITUS_SECONDS:-$BENCH_SECONDS}
ROUNDS=${CITUS_ROUNDS:-${BENCH_ROUNDS:-$(bench_pick 3 2)}}
CLIENTS=2
started=$SECONDS

echo "## Merge upserts on Citus (pgbench)"
echo ""
if [ "$PG" != 15 ] || [ ! -f "$("$PG_CONFIG" --pkglibdir)/citus.so" ]; then
    echo "Not run: it needs PostgreSQL 15 with Citus installed (\`CITUS_SRC=… scripts/citus.sh install\`)."
    exit 0
fi

bindir=$("$PG_CONFIG" --bindir)
base=$(cd / && sudo -u postgres mktemp -d /tmp/syncguard-citus-bench.XXXXXX)
sudo -u postgres chmod 755 "$base"
ports=()
cleanup() {
    local d
    for d in "$base"/n*; do
        [ -d "$d" ] && (cd / && sudo -u postgres "$bindir/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1) || true
    done
    (cd / && sudo -u postgres rm -rf "$base")
}
trap cleanup EXIT
for n in 0 1 2; do
    (cd / && sudo -u postgres "$bindir/initdb" -D "$base/n$n" -U postgres --auth=trust --no-locale \
        --encoding=UTF8 --no-sync >/dev/null)
    for _ in 1 2 3 4 5; do
        port=$((20000 + RANDOM % 40000))
        opts="-p $port -k $base -c listen_addresses=localhost -c fsync=off -c shared_buffers=512MB -c jit=off"
        opts+=" -c shared_preload_libraries=citus,syncguard -c max_prepared_transactions=20"
        opts+=" -c citus.node_conninfo=sslmode=disable -c syncguard.worker_enabled=off"
        if (cd / && sudo -u postgres "$bindir/pg_ctl" -D "$base/n$n" -l "$base/n$n.log" -w -o "$opts" start >/dev/null); then
            break
        fi
    done
    ports+=("$port")
    psql -X -q -h "$base" -p "$port" -U postgres -c "CREATE EXTENSION citus"
done
export PGHOST=$base PGPORT=${ports[0]} PGUSER=postgres PGDATABASE=postgres
psql_q -c "SELECT citus_set_coordinator_host('localhost', ${ports[0]})" \
       -c "SELECT citus_add_node('localhost', ${ports[1]})" \
       -c "SELECT citus_add_node('localhost', ${ports[2]})" \
       -c "CREATE EXTENSION syncguard" >/dev/null
psql_q -c "SET client_min_messages = warning" -f benches/upsert_setup.sql >/dev/null
psql_q -c "SELECT create_distributed_table('upsert_bench', 'id')" >/dev/null

load() {
    psql_q >/dev/null <<SQL
TRUNCATE upsert_bench;
INSERT INTO upsert_bench (id, data) SELECT id, data FROM upsert_bench_seed;
VACUUM ANALYZE upsert_bench;
CHECKPOINT;
SQL
}
BENCH_PREPARE=load
row() {  # $1 label
    echo "| $1 | $(tps_cell 0) | $(tps_cell 1) | $(ratio_cell 1 0 0.9) |"
}
compare "$CLIENTS" simple benches/upsert_plain.sql benches/upsert_merge_discard.sql
merge_row=$(row "merge_upsert (\`benches/upsert_merge_discard.sql\`)")
compare "$CLIENTS" simple benches/upsert_plain.sql benches/upsert_deep_merge.sql
deep_row=$(row "deep-merge upsert (\`benches/upsert_deep_merge.sql\`)")
compare "$CLIENTS" simple benches/upsert_plain_txn.sql benches/upsert_merge_txn.sql
txn_row=$(row "merge_upsert, both in BEGIN … COMMIT (\`benches/upsert_merge_txn.sql\` against \`benches/upsert_plain_txn.sql\`)")
version=$(psql -X -At -c "SELECT extversion FROM pg_extension WHERE extname = 'citus'")
elapsed=$((SECONDS - started))

echo "\`benches/sections/citus.sh\`: a Citus $version cluster of its own on this machine (a coordinator"
echo "and two workers, fsync off), a table \`upsert_bench (id bigint PRIMARY KEY, data jsonb)\` of 100,000"
echo "documents of the shape of workload (b), about 1 KB (\`benches/upsert_setup.sql\`), distributed by \`id\`"
echo "(32 shards; every write names the key, so Citus routes it to one shard). A random key, nine in ten"
echo "existing and one in ten new, gets the patch of \`../shared/bench/pgbench/upsert_concat.sql\`, built with"
echo "\`jsonb_build_object\` in the statement on every side. $CLIENTS clients through the coordinator, simple"
echo "protocol, ${RUN_SECONDS} s per run, every run on a freshly loaded table; the sides alternate (B C C B …),"
echo "rounds: $ROUNDS; a TPS cell is the median of a side, its runs in parentheses in the order they ran; a"
echo "ratio is the median of the per-round ratios, their range in parentheses, truncated. Baseline: the"
echo "\`||\` upsert (\`benches/upsert_plain.sql\`). The section took ${elapsed} s."
echo ""
echo "| contestant | baseline \`\|\|\` upsert (TPS) | contestant (TPS) | contestant / baseline | target ≥ 0.9× |"
echo "|---|---|---|---|---|"
echo "$merge_row"
echo "$deep_row"
echo "$txn_row"
echo ""
echo "merge_upsert runs its write from inside a function, where Citus opens a transaction on the worker"
echo "(\`BEGIN\` with \`assign_distributed_transaction_id\`, the write, \`COMMIT\`: three round trips) even"
echo "when the call is the whole transaction, since more writes could follow in the function; a"
echo "statement of its own, like the baseline in autocommit, goes in one round trip. Inside an explicit"
echo "transaction both sides pay for the remote transaction (third row). The deep-merge upsert is the"
echo "baseline's statement with \`syncguard.jsonb_deep_merge(t.data, excluded.data)\` for \`||\`: one round"
echo "trip, the merge on the shard."
