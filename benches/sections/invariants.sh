#!/usr/bin/env bash
# `make bench` section: an invariant check over a 100,000-row and then a
# 1,000,000-row table with an index on the timestamp and 100 violations,
# on the server benches/run.sh started (PGHOST/PGPORT/PGUSER exported,
# extension created). Prints a markdown section; INV_RUNS sets the runs per
# timing (median kept).
set -euo pipefail
cd "$(dirname "$0")/../.."
source benches/lib.sh
RUNS=${INV_RUNS:-$(bench_pick 31 11)}

# Products: 1 in 10 cancelled a day ago with billing stopped, except 100
# still billed (the violations, the same 100 at both sizes); 1 in 50
# cancelled minutes ago, billing not stopped yet (in flight, inside the grace
# period: as many as the volume makes). `indexed`: since is the column itself,
# so the view's `since < now() - grace` becomes an index condition on the
# partial index. `computed`: the same rule with since computed (date_trunc),
# which no index serves.
psql_q <<'SQL' >/dev/null
SET client_min_messages = warning;
DROP TABLE IF EXISTS inv_bench_products;
CREATE TABLE inv_bench_products (
    id bigint PRIMARY KEY, cancelled_at timestamptz, billing_active boolean NOT NULL);
CREATE INDEX inv_bench_cancelled_billed ON inv_bench_products (cancelled_at)
    WHERE billing_active AND cancelled_at IS NOT NULL;
SELECT syncguard.define_invariant('inv_bench_indexed',
    'SELECT id AS entity, cancelled_at AS since FROM public.inv_bench_products
      WHERE cancelled_at IS NOT NULL AND billing_active',
    grace => '15 minutes');
SELECT syncguard.define_invariant('inv_bench_computed',
    'SELECT id AS entity, date_trunc(''second'', cancelled_at) AS since FROM public.inv_bench_products
      WHERE cancelled_at IS NOT NULL AND billing_active',
    grace => '15 minutes');
SQL

# Session-local helpers, defined again in each psql session that uses them.
helpers=$(cat <<'SQL'
CREATE FUNCTION pg_temp.load(lo bigint, hi bigint) RETURNS void LANGUAGE sql AS $$
    INSERT INTO inv_bench_products
    SELECT i,
           CASE WHEN i % 10 = 0 THEN now() - interval '1 day' - i * interval '1 millisecond'
                WHEN i % 50 = 1 THEN now() - (i % 600) * interval '1 second' END,
           i % 10 <> 0 OR i <= 1000
      FROM generate_series(lo, hi) AS i;
$$;
-- Median milliseconds of `runs` checks of one invariant, after five to warm up.
CREATE FUNCTION pg_temp.time_check(name text, runs int) RETURNS numeric LANGUAGE plpgsql AS $$
DECLARE
    t timestamptz;
    ms numeric[] := '{}';
BEGIN
    FOR i IN 1 .. 5 LOOP
        PERFORM syncguard.check_invariants(name);
    END LOOP;
    FOR i IN 1 .. runs LOOP
        t := clock_timestamp();
        PERFORM syncguard.check_invariants(name);
        ms := ms || (extract(epoch FROM clock_timestamp() - t) * 1000)::numeric;
    END LOOP;
    RETURN (SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY m)::numeric, 2) FROM unnest(ms) AS m);
END $$;
SQL
)

# Load rows lo..hi, then: rows, violations, rows in flight, and both timings.
load_and_measure() {
    psql -X -q -At -F ' | ' -v ON_ERROR_STOP=1 <<SQL
$helpers
SELECT pg_temp.load($1, $2);
SELECT count(*) FROM syncguard.check_invariants('inv_bench_indexed');
SELECT count(*) FROM syncguard.check_invariants('inv_bench_computed');
-- Both sizes start from tidy tables with their episodes open and counted in
-- the statistics (the checks then update those episodes).
VACUUM ANALYZE inv_bench_products, syncguard.violations, syncguard.invariant_runs;
SELECT to_char(count(*), 'FM9,999,999'),
       (SELECT count(*) FROM syncguard_invariants.inv_bench_indexed),
       to_char(count(*) FILTER (WHERE billing_active AND cancelled_at > now() - interval '15 minutes'), 'FM9,999,999'),
       pg_temp.time_check('inv_bench_indexed', $RUNS),
       pg_temp.time_check('inv_bench_computed', $RUNS)
  FROM inv_bench_products;
SQL
}

small=$(load_and_measure 1 100000 | tail -n 1)
large=$(load_and_measure 100001 1000000 | tail -n 1)
plan_indexed=$(psql -X -At -c "EXPLAIN (COSTS OFF) SELECT * FROM syncguard_invariants.inv_bench_indexed")
plan_computed=$(psql -X -At -c "EXPLAIN (COSTS OFF) SELECT * FROM syncguard_invariants.inv_bench_computed")
psql_q -c "SELECT syncguard.drop_invariant(name, keep_history => false) FROM syncguard.invariants WHERE name LIKE 'inv_bench%'" \
       -c "DROP TABLE inv_bench_products" >/dev/null

row() { awk -F ' [|] ' '{ printf "| %s | %s | %s | %s ms | %s ms |\n", $1, $2, $3, $4, $5 }' <<< "$1"; }

echo "## Invariant checks"
echo ""
echo "\`benches/sections/invariants.sh\`: \`syncguard.check_invariants(name)\` (the query, the episode"
echo "bookkeeping and the run record), median of $RUNS checks after five to warm up. Products: 1 in 10 cancelled"
echo "a day ago, billing stopped for all of them but 100 (the violations, the same 100 at both sizes); 1 in"
echo "50 cancelled in the last 10 minutes with billing not stopped yet (in flight: inside the 15-minute"
echo "grace period, as many as the volume makes). Partial index"
echo "\`ON (cancelled_at) WHERE billing_active AND cancelled_at IS NOT NULL\`. *indexed since*: the query"
echo "returns the column itself (\`cancelled_at AS since\`). *computed since*: the same rule with"
echo "\`date_trunc('second', cancelled_at) AS since\`, which no index serves."
echo ""
echo "| rows | violations | in flight | check, indexed since | check, computed since |"
echo "|---|---|---|---|---|"
row "$small"
row "$large"
echo ""
echo "The indexed check takes about the same time at 100,000 and 1,000,000 rows: it reads the 100"
echo "violations, not the table nor the rows in flight. The view's grace predicate reaches the index as"
echo "an index condition:"
echo ""
echo '```'
echo "$plan_indexed"
echo '```'
echo ""
echo "With a computed since, every cancelled and billed row is read and its since computed before the"
echo "grace period can filter, so the time grows with the rows in flight:"
echo ""
echo '```'
echo "$plan_computed"
echo '```'
