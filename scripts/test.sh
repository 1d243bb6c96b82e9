#!/usr/bin/env bash
# Run the test tiers in order and stop at the first failure.
#
#   scripts/test.sh                      all tiers
#   scripts/test.sh regress client       only these (names below)
#   PG=17 scripts/test.sh                PostgreSQL 17 (or 18): the tiers that
#                                        run SQL against that version's server
#
#   unit       cargo test --lib -- --skip pg_      plain #[test]s (pure Rust), no PostgreSQL
#   pgrx       cargo pgrx test pg15                #[pg_test]s inside a server (15 only:
#                                                  pgrx starts its own server, which a
#                                                  chroot's binaries cannot be)
#   regress    pg_regress  tests/pg_regress/sql    SQL surface vs expected output
#   isolation  pg_isolation_regress tests/isolation/specs   concurrency
#   client     cargo test -p syncguard-client-tests   tests/client/tests/*.rs against real servers
#   package    scripts/package.sh test             the .deb installed into a new chroot
#   citus      ... --test citus                    a Citus coordinator and two workers
#                                                  (PostgreSQL 15; when CITUS_SRC is set or
#                                                  Citus is installed: scripts/citus.sh)
#
# Each tier prints a header and its counts; the last line is the total.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/pgcluster.sh   # scripts/env.sh; as_postgres

if [ -z "$PG_ROOT" ]; then
    all_tiers=(unit pgrx regress isolation client package)
    if scripts/citus.sh available; then all_tiers+=(citus); fi
else
    # The pure-Rust tier is the same for every version; pgrx's runs a
    # server of its own, outside any chroot.
    all_tiers=(regress isolation client package)
fi
if [ $# -eq 0 ]; then tiers=("${all_tiers[@]}"); else tiers=("$@"); fi
echo "-- PostgreSQL $("$PG_CONFIG" --version | sed 's/PostgreSQL //')${PG_ROOT:+ (in $PG_ROOT)}"
log=$(mktemp)
tier="" total=0
finish() {
    local status=$?
    rm -f "$log"
    if [ "$status" -ne 0 ]; then
        echo "" >&2
        local what="tier '$tier'"
        [ -n "$tier" ] || what="checks before the first tier"
        echo "FAILED: $what (exit status $status); later tiers did not run." >&2
    fi
}
trap finish EXIT

header() {
    tier=$1
    printf '\n======== tier %s: %s ========\n' "$1" "$2"
}

# Record a tier's count, refusing a tier that ran nothing (a filter or glob gone wrong).
passed() {
    [ "${1:-0}" -gt 0 ] || { echo "tier '$tier' ran no tests" >&2; return 1; }
    printf -- '-------- tier %s: %d passed, 0 failed\n' "$tier" "$1"
    total=$((total + $1))
}

# Sum the "test result:" lines of a cargo test run; #[ignore]d tests are refused
# (the house style forbids hiding tests).
cargo_count() {
    awk '/^test result:/ { for (i = 2; i <= NF; i++) {
             if ($i == "passed;") p += $(i-1); if ($i == "ignored;") ig += $(i-1) } }
         END { if (ig > 0) { print "ignored tests: " ig > "/dev/stderr"; exit 1 } print p + 0 }' "$log"
}

# pg_regress ends with "All N tests passed." (PG15; later versions prefix "# ").
regress_count() {
    sed -nE 's/.*All ([0-9]+) tests passed.*/\1/p' "$log" | tail -n 1
}

current_version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)

# Install scripts of released versions (tests/upgrade/syncguard--X.sql) go next
# to the current one, so the upgrade test can CREATE EXTENSION ... VERSION 'X'
# and then ALTER EXTENSION syncguard UPDATE through sql/syncguard--X--Y.sql.
install_old_versions() {
    local extdir f
    extdir=$("$PG_CONFIG" --sharedir)/extension
    for f in tests/upgrade/syncguard--*.sql; do
        # The current version's script is the one the build just generated.
        [ -e "$f" ] && [ "$f" != "tests/upgrade/syncguard--$current_version.sql" ] || continue
        if [ "$(id -u)" -eq 0 ]; then install -m 644 "$f" "$extdir/"; else sudo install -m 644 "$f" "$extdir/"; fi
    done
}

# The oldest version in tests/upgrade/ other than the current one, if any.
oldest_release() {
    ls tests/upgrade/syncguard--*.sql 2>/dev/null | sed 's/.*syncguard--\(.*\)\.sql/\1/' |
        grep -vxF "$current_version" | sort -V | head -n 1 | grep .
}

for t in "${tiers[@]}"; do
    [[ " ${all_tiers[*]} " == *" $t "* ]] || { echo "no tier '$t' for PostgreSQL $PG (tiers: ${all_tiers[*]})" >&2; exit 2; }
done

installed=""
install_for_tests() {
    [ -n "$installed" ] && return 0
    # The release build: what users get (stack depth, for one, differs from
    # debug), and the one `make demo` and `make bench` then reuse.
    echo "-- installing the release build for the SQL and client tiers"
    scripts/install.sh release
    install_old_versions
    installed=1
}

for t in "${tiers[@]}"; do
    case "$t" in
    unit)
        header unit "pure-Rust tests (cargo test -p syncguard-core -p syncguard --lib -- --skip pg_)"
        # The core crate's tests, and every plain #[test] in the extension's
        # library; the #[pg_test] wrappers (pg_<name>) need a server and are
        # the next tier's.
        cargo test -p syncguard-core -p syncguard --lib -- --skip pg_ 2>&1 | tee "$log"
        n=$(cargo_count); passed "$n"
        ;;
    pgrx)
        header pgrx "in-server #[pg_test]s (cargo pgrx test pg15)"
        # The data directory must belong to postgres, whom the server runs as;
        # pgrx starts initdb from it and puts the socket there, so others need x.
        pgdata=$(as_postgres mktemp -d /tmp/syncguard-pgrx.XXXXXX)
        as_postgres chmod 755 "$pgdata"
        # "pg_" selects the generated #[pg_test] wrappers (pg_<name>); tier 1
        # already ran the plain #[test]s.
        cargo pgrx test pg15 pg_ --runas postgres --pgdata "$pgdata" 2>&1 | tee "$log"
        as_postgres rm -rf "$pgdata"
        # cargo pgrx test installed its test-only build; the tiers below use the real one.
        installed=""
        n=$(cargo_count); passed "$n"
        ;;
    regress)
        header regress "pg_regress (tests/pg_regress/sql)"
        install_for_tests
        scripts/pg_regress.sh regress 2>&1 | tee "$log"
        n=$(regress_count)
        # Again on a database updated from the oldest released version.
        if oldest=$(oldest_release); then
            echo "-- the same tests on a database updated from $oldest"
            SYNCGUARD_UPGRADE_FROM=$oldest scripts/pg_regress.sh regress 2>&1 | tee "$log"
            n=$((n + $(regress_count)))
        fi
        passed "$n"
        ;;
    isolation)
        header isolation "pg_isolation_regress (tests/isolation/specs)"
        install_for_tests
        scripts/pg_regress.sh isolation 2>&1 | tee "$log"
        passed "$(regress_count)"
        ;;
    client)
        header client "client tests against real servers (cargo test -p syncguard-client-tests)"
        install_for_tests
        # tests/client/tests/citus.rs needs a Citus: the citus tier runs it.
        cargo test -p syncguard-client-tests -- --skip citus_ 2>&1 | tee "$log"
        n=$(cargo_count); passed "$n"
        ;;
    citus)
        header citus "a Citus coordinator and two workers (tests/client/tests/citus.rs)"
        scripts/citus.sh install
        install_for_tests
        cargo test -p syncguard-client-tests --test citus 2>&1 | tee "$log"
        n=$(cargo_count); passed "$n"
        ;;
    package)
        header package "the Debian package, installed into a new chroot (scripts/package.sh test)"
        scripts/package.sh test 2>&1 | tee "$log"
        grep -qx "package test for PostgreSQL $PG: passed" "$log"
        passed 1
        ;;
    esac
done

echo ""
echo "$total passed, 0 failed"
