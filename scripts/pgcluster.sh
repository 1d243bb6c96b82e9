# shellcheck shell=bash
# Throwaway PostgreSQL clusters for the demo, pg_regress, isolation and bench.
#
# Source this file, then call `pgcluster_start`. It initdb's a fresh cluster in
# a new directory under /tmp, starts it on a free port (never 5432's system
# cluster), exports PGHOST/PGPORT/PGUSER/PGDATABASE so psql, pg_regress and
# pgbench find it, and installs an EXIT trap that stops it and deletes it.
#
# The server runs as the `postgres` system user: initdb refuses root, and a
# directory under /tmp is reachable by postgres wherever the repository lives
# (a checkout under /root is not). It listens on localhost and on a unix socket
# inside its own directory. It uses the binaries of PostgreSQL $PG
# (scripts/pgversion.sh: the system's, or a chroot's, where the cluster's
# directory is under the chroot's /tmp), so it loads the extension that
# `cargo pgrx install` put into that server's pkglibdir.

source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
PG_BINDIR=$("$PG_CONFIG" --bindir)

# Run a command as the postgres user from a directory it can read (sudo keeps
# the caller's working directory, and initdb complains when it cannot read it).
as_postgres() {
    (cd / && sudo -u postgres "$@")
}

# The options of a cluster's server, listening on port $1 with its socket in
# directory $2. fsync=off: these clusters are thrown away; it makes setup and
# tests faster. PGCLUSTER_OPTS: extra server settings ("-c name=value ..."),
# e.g. for the bench.
pgcluster_opts() {
    echo "-p $1 -k $2 -c listen_addresses=localhost -c fsync=off ${PGCLUSTER_OPTS:-}"
}

pgcluster_start() {
    PGCLUSTER_DIR=$(as_postgres mktemp -d "$PG_ROOT/tmp/syncguard-pg.XXXXXX")
    # Clients that are not root must reach the socket inside it.
    as_postgres chmod 755 "$PGCLUSTER_DIR"
    trap pgcluster_stop EXIT
    # Make Ctrl-C and kill run the EXIT trap too, so no server is left behind.
    trap "exit 130" INT
    trap "exit 143" TERM HUP

    local out
    if ! out=$(as_server "$PG_BINDIR/initdb" -D "$PGCLUSTER_DIR/data" -U postgres \
                   --auth=trust --no-locale --encoding=UTF8 --no-sync 2>&1); then
        echo "$out" >&2
        return 1
    fi

    # Pick a random high port that nobody answers on; if the server still
    # fails to bind (a race with another process), try another one.
    local attempt port
    for attempt in 1 2 3 4 5 6 7 8 9 10; do
        port=$((20000 + RANDOM % 40000))
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then continue; fi
        if as_server "$PG_BINDIR/pg_ctl" -D "$PGCLUSTER_DIR/data" -l "$PGCLUSTER_DIR/server.log" \
               -w -t 60 -o "$(pgcluster_opts "$port" "$PGCLUSTER_DIR")" start >/dev/null; then
            export PGHOST=$PGCLUSTER_DIR PGPORT=$port PGUSER=postgres PGDATABASE=postgres
            return 0
        fi
    done
    echo "pgcluster: could not start a server after $attempt attempts; log:" >&2
    as_postgres tail -n 30 "$PGCLUSTER_DIR/server.log" >&2 || true
    return 1
}

# Restart the running cluster (the one PGHOST and PGPORT name, maybe started
# by another process) with its options and then $1 ("-c name=value ..."), for
# a setting its command line would otherwise override, such as fsync = on.
pgcluster_restart() {
    as_server "$PG_BINDIR/pg_ctl" -D "$PGHOST/data" -l "$PGHOST/server.log" -w -t 60 -m fast \
        -o "$(pgcluster_opts "$PGPORT" "$PGHOST") ${1:-}" restart >/dev/null
}

# Stop and delete the cluster. Runs from the EXIT trap, so it keeps the exit
# status of the script, and shows the end of the server log when that failed.
pgcluster_stop() {
    local status=$?
    trap - EXIT
    if [ -n "${PGCLUSTER_DIR:-}" ] && [ -d "$PGCLUSTER_DIR" ]; then
        if [ "$status" -ne 0 ] && [ -f "$PGCLUSTER_DIR/server.log" ]; then
            echo "--- last lines of the server log ($PGCLUSTER_DIR/server.log) ---" >&2
            as_postgres tail -n 30 "$PGCLUSTER_DIR/server.log" >&2 || true
        fi
        # (data/ is private to postgres: ask as postgres whether it is running.)
        if as_postgres test -f "$PGCLUSTER_DIR/data/postmaster.pid"; then
            as_server "$PG_BINDIR/pg_ctl" -D "$PGCLUSTER_DIR/data" -m fast -w stop >/dev/null ||
                as_server "$PG_BINDIR/pg_ctl" -D "$PGCLUSTER_DIR/data" -m immediate -w stop >/dev/null || true
        fi
        # A process still exiting may write a file meanwhile: try again.
        as_postgres rm -rf "$PGCLUSTER_DIR" 2>/dev/null ||
            { sleep 2; as_postgres rm -rf "$PGCLUSTER_DIR"; }
    fi
    unset PGCLUSTER_DIR
    return "$status"
}
