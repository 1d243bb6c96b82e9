#!/usr/bin/env bash
# `make bench` section: syncguard.reconcile of a 1,000,000-row table against
# a postgres_fdw foreign table with 0, 100 and 10,000 differing rows, against
# count(*) on both sides and a FULL OUTER JOIN over the foreign table. Runs on
# the server benches/run.sh started (PGHOST/PGPORT/PGUSER exported, extension
# created); the "remote" table is in another database of the same server,
# reached through postgres_fdw over a TCP connection to localhost, so every
# remote row does cross a connection (but shares the machine's CPUs). The
# foreign server is async_capable, as docs/reconcile.md recommends: the two
# servers compute their checksums at the same time. The remote database has
# syncguard, listed in the foreign server's `extensions` option (reconcile
# then ships syncguard's row hash and checksum aggregate); a second foreign
# server without that option measures the built-in hash functions.
# Prints a markdown section; RECONCILE_RUNS sets the runs per timing (median),
# JOIN_RUNS those of the FULL OUTER JOIN.
set -euo pipefail
cd "$(dirname "$0")/../.."
source benches/lib.sh
RUNS=${RECONCILE_RUNS:-$(bench_pick 5 3)}
JOIN_RUNS=${JOIN_RUNS:-$(bench_pick 3 1)}
REMOTE_DB=syncguard_bench_remote

table_sql="CREATE TABLE rc_products (id int PRIMARY KEY, name text NOT NULL, price numeric(10, 2),
                                     attrs jsonb, updated_at timestamptz);
INSERT INTO rc_products
SELECT g, 'product ' || g, 10 + g % 90,
       jsonb_build_object('color', 'black', 'dims', jsonb_build_object('w', g % 7, 'h', 20)),
       timestamptz '2026-01-01 00:00+00' + g * interval '1 minute'
  FROM generate_series(1, 1000000) AS g;
VACUUM ANALYZE rc_products;"

psql_q -c "DROP DATABASE IF EXISTS $REMOTE_DB" -c "CREATE DATABASE $REMOTE_DB" 2>/dev/null
psql_q -d "$REMOTE_DB" <<< "$table_sql"
psql_q -d "$REMOTE_DB" -c "CREATE EXTENSION syncguard"
psql_q <<SQL
SET client_min_messages = warning;
DROP TABLE IF EXISTS rc_products;
$table_sql
CREATE EXTENSION IF NOT EXISTS postgres_fdw;
DROP SERVER IF EXISTS rc_bench_remote CASCADE;
CREATE SERVER rc_bench_remote FOREIGN DATA WRAPPER postgres_fdw
    OPTIONS (host 'localhost', port '$PGPORT', dbname '$REMOTE_DB', async_capable 'true', extensions 'syncguard');
CREATE USER MAPPING FOR CURRENT_USER SERVER rc_bench_remote OPTIONS (user '$PGUSER');
DROP SCHEMA IF EXISTS rc_remote CASCADE;
CREATE SCHEMA rc_remote;
IMPORT FOREIGN SCHEMA public LIMIT TO (rc_products) FROM SERVER rc_bench_remote INTO rc_remote;
DROP SERVER IF EXISTS rc_bench_builtin CASCADE;
CREATE SERVER rc_bench_builtin FOREIGN DATA WRAPPER postgres_fdw
    OPTIONS (host 'localhost', port '$PGPORT', dbname '$REMOTE_DB', async_capable 'true');
CREATE USER MAPPING FOR CURRENT_USER SERVER rc_bench_builtin OPTIONS (user '$PGUSER');
DROP SCHEMA IF EXISTS rc_builtin CASCADE;
CREATE SCHEMA rc_builtin;
IMPORT FOREIGN SCHEMA public LIMIT TO (rc_products) FROM SERVER rc_bench_builtin INTO rc_builtin;
SQL

# Median milliseconds of `runs` executions of a query, after one to warm up.
helpers=$(cat <<'SQL'
CREATE FUNCTION pg_temp.time_query(q text, runs int) RETURNS numeric LANGUAGE plpgsql AS $$
DECLARE
    t timestamptz;
    ms numeric[] := '{}';
BEGIN
    EXECUTE q;
    FOR i IN 1 .. runs LOOP
        t := clock_timestamp();
        EXECUTE q;
        ms := ms || (extract(epoch FROM clock_timestamp() - t) * 1000)::numeric;
    END LOOP;
    RETURN (SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY m)::numeric, 1) FROM unnest(ms) AS m);
END $$;
SQL
)
time_query() {
    psql -X -q -At -v ON_ERROR_STOP=1 -v q="$1" <<SQL | tail -n 1
$helpers
SELECT pg_temp.time_query(:'q', ${2:-$RUNS});
SQL
}

counts=$(time_query "SELECT (SELECT count(*) FROM rc_products), (SELECT count(*) FROM rc_remote.rc_products)")
reconcile="SELECT count(*) FROM syncguard.reconcile('rc_products', 'rc_remote.rc_products')"
builtin="SELECT count(*) FROM syncguard.reconcile('rc_products', 'rc_builtin.rc_products')"
join="SELECT count(*) FROM rc_products l FULL JOIN rc_remote.rc_products r USING (id)
       WHERE l.id IS NULL OR r.id IS NULL
          OR (l.name, l.price, l.attrs, l.updated_at) IS DISTINCT FROM (r.name, r.price, r.attrs, r.updated_at)"

rows=""
for n in 0 100 10000; do
    if [ "$n" -gt 0 ]; then
        # n rows spread over the key space get another price.
        psql_q -d "$REMOTE_DB" -c "UPDATE rc_products SET price = price + 1 WHERE id % (1000000 / $n) = 0" \
               -c "VACUUM ANALYZE rc_products"
    fi
    for q in "$reconcile" "$builtin"; do
        found=$(psql -X -At -c "$q")
        [ "$found" -eq "$n" ] || { echo "reconcile found $found differences, expected $n: $q" >&2; exit 1; }
    done
    ms=$(time_query "$reconcile")
    builtin_ms=$(time_query "$builtin")
    join_ms=""
    [ "$n" -eq 100 ] && join_ms=$(time_query "$join" "$JOIN_RUNS")
    rows+="$n $ms $builtin_ms $join_ms"$'\n'
    if [ "$n" -gt 0 ]; then
        psql_q -d "$REMOTE_DB" -c "UPDATE rc_products SET price = price - 1 WHERE id % (1000000 / $n) = 0" \
               -c "VACUUM ANALYZE rc_products"
    fi
done

psql_q -c "DROP SCHEMA rc_remote, rc_builtin CASCADE" -c "DROP SERVER rc_bench_remote, rc_bench_builtin CASCADE" \
       -c "DROP TABLE rc_products" 2>/dev/null
psql_q -c "DROP DATABASE $REMOTE_DB"

echo "## Reconciliation"
echo ""
echo "\`benches/sections/reconcile.sh\`: \`syncguard.reconcile\` (default segments and threshold) of a"
echo "1,000,000-row table (int key, text, numeric, jsonb, timestamptz) against a postgres_fdw foreign"
echo "table holding the same rows but for 0, 100 or 10,000 prices, median of $RUNS runs after one to warm"
echo "up. The remote table is in another database of the same server, reached over a TCP connection"
echo "to localhost: its rows cross a connection, but both sides share the machine's CPUs; the foreign"
echo "server has \`async_capable\` (docs/reconcile.md), so the two servers compute at the same time."
echo "*reconcile*: the remote database has syncguard, listed in the foreign server's \`extensions\`"
echo "option, so each server hashes with syncguard's row hash and checksum aggregate. *built-in"
echo "hashes*: the same remote through a foreign server without that option (built-in hash functions"
echo "on both sides). *count(\\*)*: \`count(*)\` of both tables (the remote's computed remotely) in one"
echo "statement, $counts ms. *FULL OUTER JOIN*: every row of the foreign table fetched and compared by"
echo "key (timed at 100 differences, median of $JOIN_RUNS). PostgreSQL $(psql -X -At -c 'SHOW server_version'),"
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), load average $(cut -d ' ' -f 1-3 /proc/loadavg) (the machine is shared:"
echo "the figures are noisy)."
echo ""
echo "| differing rows | reconcile | / count(*) both sides | target ≤ 3× (at 100) | built-in hashes | / count(*) | FULL OUTER JOIN | JOIN / reconcile | target ≥ 10× |"
echo "|---|---|---|---|---|---|---|---|---|"
ratio_up() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", int(a / b * 10 + 0.999) / 10 }'; }
while read -r n ms builtin_ms join_ms; do
    [ -n "$n" ] || continue
    if [ "$n" -eq 100 ]; then
        met=$(awk -v a="$ms" -v b="$counts" 'BEGIN { print (a <= 3 * b) ? "met" : "**not met**" }')
        jr=$(awk -v a="$join_ms" -v b="$ms" 'BEGIN { printf "%.1f", int(a / b * 10) / 10 }')
        jmet=$(awk -v a="$join_ms" -v b="$ms" 'BEGIN { print (a >= 10 * b) ? "met" : "**not met**" }')
        echo "| $n | $ms ms | $(ratio_up "$ms" "$counts")× | $met | $builtin_ms ms | $(ratio_up "$builtin_ms" "$counts")× | $join_ms ms | ${jr}× | $jmet |"
    else
        echo "| $n | $ms ms | $(ratio_up "$ms" "$counts")× | | $builtin_ms ms | $(ratio_up "$builtin_ms" "$counts")× | | | |"
    fi
done <<< "$rows"
echo ""
echo "reconcile reads every row of both tables once to checksum it (a 64-bit hash of each compared"
echo "column, summed per segment; a key other than an integer is also read once more, in order, to cut"
echo "the segments): the hashing, not the network, is its cost, so it is a multiple of a \`count(*)\`,"
echo "which only counts; each server hashes its own rows, at the same time. syncguard's aggregate"
echo "hashes a row in about a third of the time of the built-in hash functions (jsonb's above all) and"
echo "sums the segments in place, where a GROUP BY over the segment sorts every row."
echo "What it saves is the transfer: one row of checksums (10,000 with built-in hashes), a row of keys"
echo "and row hashes per differing segment (100 rows each) and the differing rows come back instead of"
echo "the whole table (tests/client/tests/reconcile.rs counts them)."
echo "With 10,000 differences nearly every segment differs: every row is hashed a second time on"
echo "its server, and only the 10,000 differing rows are fetched."
