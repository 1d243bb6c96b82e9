#!/usr/bin/env bash
# Run the SQL tests against a throwaway cluster with the installed extension.
#
#   scripts/pg_regress.sh regress     tests/pg_regress/sql/*.sql     vs expected/*.out
#   scripts/pg_regress.sh isolation   tests/isolation/specs/*.spec   vs expected/*.out
#
# Every file is a test, run one after another in sorted order, so a new file is
# picked up without editing a schedule, in a database where CREATE EXTENSION
# syncguard is done and tests/pg_regress/helpers.sql has run.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/pgcluster.sh
export LC_ALL=C   # glob order and pg_regress output must not depend on the locale

pgxs=$("$PG_CONFIG" --pkglibdir)/pgxs/src/test
case "${1:-}" in
    regress)
        runner=$pgxs/regress/pg_regress
        indir=tests/pg_regress outdir=tests/pg_regress files=(tests/pg_regress/sql/*.sql) ;;
    isolation)
        runner=$pgxs/isolation/pg_isolation_regress
        indir=tests/isolation outdir=tests/isolation/output_iso files=(tests/isolation/specs/*.spec) ;;
    *)
        echo "usage: $0 regress|isolation" >&2; exit 2 ;;
esac

tests=()
for f in "${files[@]}"; do
    [ -e "$f" ] && tests+=("$(basename "${f%.*}")")
done
if [ ${#tests[@]} -eq 0 ]; then
    echo "no tests in $indir" >&2
    exit 1
fi

pgcluster_start
rm -rf "$outdir/results" "$outdir/regression.diffs" "$outdir/regression.out"
mkdir -p "$outdir"

# The test database: the extension, created fresh or (SYNCGUARD_UPGRADE_FROM=A)
# installed at version A and updated, so the upgrade scripts must give what
# the install script gives; then, for regress, the shared test helpers.
createdb syncguard_regress
psql -X -q -v ON_ERROR_STOP=1 -d syncguard_regress -v from="${SYNCGUARD_UPGRADE_FROM:-}" <<'SQL'
SELECT :'from' = '' AS fresh \gset
\if :fresh
CREATE EXTENSION syncguard;
\else
CREATE EXTENSION syncguard VERSION :'from';
ALTER EXTENSION syncguard UPDATE;
\endif
SQL
[ "$1" = isolation ] || psql -X -q -v ON_ERROR_STOP=1 -d syncguard_regress -f tests/pg_regress/helpers.sql
db_opts=(--dbname=syncguard_regress --use-existing)

# A chroot's runner sees only the chroot: the tests go in (a copy under its
# /tmp), the results come back out to $outdir.
run_in=$indir run_out=$outdir
if [ -n "$PG_ROOT" ]; then
    work=$(as_postgres mktemp -d "$PG_ROOT/tmp/syncguard-tests.XXXXXX")
    "${PGV_SUDO[@]}" cp -r "$indir" "$work/in"
    "${PGV_SUDO[@]}" chown -R postgres:postgres "$work/in"
    run_in=$work/in run_out=$work/out
fi
ok=1
as_runner=()
[ -z "$PG_ROOT" ] || as_runner=(as_server)
"${as_runner[@]}" "$runner" --host="$PGHOST" --port="$PGPORT" --user=postgres \
    --bindir="$PG_BINDIR" --inputdir="$run_in" --outputdir="$run_out" \
    "${db_opts[@]}" "${tests[@]}" || ok=""
if [ -n "$PG_ROOT" ]; then
    cp -r "$run_out"/. "$outdir"/
    as_postgres rm -rf "$work"
fi
if [ -z "$ok" ]; then
    if [ -f "$outdir/regression.diffs" ]; then
        echo "===== $outdir/regression.diffs =====" >&2
        cat "$outdir/regression.diffs" >&2
    fi
    for t in "${tests[@]}"; do
        if [ ! -f "$indir/expected/$t.out" ]; then
            echo "New test $t has no expected output: read $outdir/results/$t.out and, if it" >&2
            echo "is right, copy it to $indir/expected/$t.out." >&2
        fi
    done
    exit 1
fi
