#!/usr/bin/env bash
# `make bench` section: merge upserts on a Citus cluster (a coordinator and two
# workers of its own, started here; PostgreSQL 15 with Citus installed, see
# scripts/citus.sh), 2 clients through the coordinator, on `upsert_bench`
# distributed by id. Baseline: the `||` upsert (benches/upsert_plain.sql);
# contestants: merge_upsert (benches/upsert_merge_discard.sql) and the
# plain upsert that deep-merges with jsonb_deep_merge
# (benches/upsert_deep_merge.sql). Sides alternate, CITUS_ROUNDS times each
# (default 3), CITUS_SECONDS per run (default 10), every run on a freshly
# loaded table; median TPS kept. Prints a markdown section (or why it did not run).
set -euo pipefail
cd "$(dirname "$0")/../.."
SECONDS_EACH=${CITUS_SECONDS:-10}
ROUNDS=${CITUS_ROUNDS:-3}
CLIENTS=2
started=$SECONDS
source scripts/pgversion.sh
source benches/sections/lib.sh

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
    for attempt in 1 2 3 4 5; do
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
psql_q() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }
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
tps() {
    load
    pgbench -n -c "$CLIENTS" -j "$CLIENTS" -T "$SECONDS_EACH" -f "$1" 2>&1 |
        sed -nE 's/^tps = ([0-9.]+).*/\1/p' | head -n 1
}
# Baseline and contestant alternate (B C, then C B, ...); sets med_b, med_c, runs_b, runs_c.
compare() {
    local r side t all_b=() all_c=()
    runs_b="" runs_c=""
    for r in $(seq 1 "$ROUNDS"); do
        for side in $([ $((r % 2)) = 1 ] && echo "b c" || echo "c b"); do
            if [ "$side" = b ]; then t=$(tps "$1"); else t=$(tps "$2"); fi
            [ -n "$t" ] || { echo "pgbench failed ($side)" >&2; exit 1; }
            if [ "$side" = b ]; then all_b+=("$t"); runs_b+="${runs_b:+, }$(printf '%.0f' "$t")"
            else all_c+=("$t"); runs_c+="${runs_c:+, }$(printf '%.0f' "$t")"; fi
        done
    done
    med_b=$(median "${all_b[@]}")
    med_c=$(median "${all_c[@]}")
}
row() {  # $1 label
    awk -v l="$1" -v b="$med_b" -v k="$med_c" -v rb="$runs_b" -v rk="$runs_c" -v r="$(ratio "$med_c" "$med_b")" \
        'BEGIN { printf "| %s | %.0f (%s) | %.0f (%s) | **%s×** | %s |\n", l, b, rb, k, rk, r, (k >= 0.9 * b ? "met" : "**not met**") }'
}
compare benches/upsert_plain.sql benches/upsert_merge_discard.sql
merge_row=$(row "merge_upsert (\`benches/upsert_merge_discard.sql\`)")
compare benches/upsert_plain.sql benches/upsert_deep_merge.sql
deep_row=$(row "deep-merge upsert (\`benches/upsert_deep_merge.sql\`)")
compare benches/upsert_plain_txn.sql benches/upsert_merge_txn.sql
txn_row=$(row "merge_upsert, both in BEGIN … COMMIT (\`benches/upsert_merge_txn.sql\` against \`benches/upsert_plain_txn.sql\`)")
version=$(psql -X -At -c "SELECT extversion FROM pg_extension WHERE extname = 'citus'")
elapsed=$((SECONDS - started))

echo "\`benches/sections/citus.sh\`: a Citus $version cluster of its own on this machine (a coordinator"
echo "and two workers, fsync off), the table and pgbench scripts of the section \"Merge upserts and"
echo "protected tables\" with \`upsert_bench\` distributed by \`id\` (32 shards; every write names the key,"
echo "so Citus routes it to one shard), $CLIENTS clients through the coordinator, ${SECONDS_EACH} s per run, every run on a"
echo "freshly loaded table (100,000 rows of about 1 KB); the sides alternate, runs per side: $ROUNDS, a cell"
echo "is the median TPS of a side, its runs in parentheses. Baseline: the \`||\` upsert"
echo "(\`benches/upsert_plain.sql\`). The section took ${elapsed} s."
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
