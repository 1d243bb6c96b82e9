#!/usr/bin/env bash
# Make this machine able to build, install and test syncguard.
#
# Idempotent and silent when everything is already present, because `make
# test`, `make demo` and `make bench` run it first every time. Works as root
# (CI) and as a normal user with sudo. Debian/Ubuntu only (apt + dpkg).
set -euo pipefail
cd "$(dirname "$0")/.."

PGRX_VERSION=0.18.0             # must match pgrx in Cargo.toml; 0.19 needs rustc 1.96
PG_MAJOR=15
source scripts/env.sh   # PGRX_HOME, PATH, PG and its chroot (pgversion_setup)
HOST_PG_CONFIG=/usr/bin/pg_config   # PostgreSQL 15, the host's: what pgrx init registers

# Root runs commands directly; anybody else goes through sudo.
if [ "$(id -u)" -eq 0 ]; then SUDO=(); else SUDO=(sudo); fi

# Debian packages:
#   postgresql-$PG_MAJOR             the server (initdb, pg_ctl, postgres, pgbench)
#   postgresql-server-dev-$PG_MAJOR  pg_config, headers, pg_regress, pg_isolation_regress
#   libclang-dev clang               bindgen (pgrx-pg-sys generates bindings from the headers)
#   build-essential pkg-config libssl-dev   compiling cargo-pgrx and the crate
#   sudo                             every test server runs as the `postgres` user (initdb refuses root)
#   ca-certificates                  fetching crates over TLS
#   python3 python3-venv             the ORM client tests (tests/client/src/orm_env.rs) make a
#                                    virtualenv and pip-install SQLAlchemy and Django into it
#   postgresql-$PG_MAJOR-cron           pg_cron, for tests/client/tests/pg_cron.rs
#   prometheus-postgres-exporter     the exporter tests/client/tests/prometheus.rs scrapes
#   valgrind                         callgrind, for the profile of `make bench` (benches/sections/profile.sh)
packages=(postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR libclang-dev clang
          build-essential pkg-config libssl-dev sudo ca-certificates python3 python3-venv
          postgresql-$PG_MAJOR-cron prometheus-postgres-exporter valgrind)
missing=()
for p in "${packages[@]}"; do
    # "installed", not merely known to dpkg (a removed package keeps its config files).
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || missing+=("$p")
done
apt_updated=""
apt_update() {
    [ -n "$apt_updated" ] && return 0
    # sudo itself may be among the missing packages, so only a non-root user needs it here.
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
}
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    apt_update
    # RUNLEVEL=1: a package's service (the exporter's) is installed, not started.
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# node and npm for the Knex client test (tests/client/src/orm_env.rs); a machine may have
# them from elsewhere than Debian (whose npm conflicts with such a nodejs).
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "setup: installing nodejs npm"
    apt_update
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi

# The newest PostgreSQL minor the archive has: a brand-new machine gets it, so
# every machine must test against it (minors change behaviour tests see). The
# package lists are refreshed when they are more than a day old.
server_packages=(postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR postgresql-client-$PG_MAJOR libpq-dev libpq5)
stamp=/var/lib/apt/lists/syncguard-updated
lists_age=$(( $(date +%s) - $(stat -c %Y "$stamp" 2>/dev/null || echo 0) ))
if [ "$lists_age" -gt 86400 ]; then
    apt_update
    "${SUDO[@]}" touch "$stamp"
fi
outdated=()
for p in "${server_packages[@]}"; do
    installed=$(dpkg-query -W -f='${Version}' "$p" 2>/dev/null) || continue
    candidate=$(apt-cache policy "$p" | sed -n 's/^ *Candidate: //p')
    if [ -n "$candidate" ] && [ "$candidate" != "(none)" ] && [ "$candidate" != "$installed" ]; then
        outdated+=("$p")
    fi
done
if [ ${#outdated[@]} -gt 0 ]; then
    echo "setup: upgrading ${outdated[*]} to the newest minor"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --only-upgrade "${outdated[@]}" >/dev/null
fi

# Rust comes with the machine (rustup's toolchain); nothing here can fetch a
# toolchain, so say plainly what is missing instead of failing later.
if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found. Install the Rust toolchain (rustc 1.95 or newer, e.g. with rustup)" >&2
    echo "       and make sure ~/.cargo/bin is on PATH, then run this again." >&2
    exit 1
fi

# cargo-pgrx must match the pgrx crate exactly, or schema generation fails.
if [ "$(cargo pgrx --version 2>/dev/null)" != "cargo-pgrx $PGRX_VERSION" ]; then
    echo "setup: installing cargo-pgrx $PGRX_VERSION (takes about 5 minutes)"
    cargo install cargo-pgrx --version "$PGRX_VERSION" --locked --force --quiet
fi

# The repository's own PGRX_HOME; config.toml is committed, so this only runs
# when somebody deleted it.
if [ ! -f "$PGRX_HOME/config.toml" ]; then
    echo "setup: cargo pgrx init --pg$PG_MAJOR $HOST_PG_CONFIG"
    cargo pgrx init --pg$PG_MAJOR "$HOST_PG_CONFIG" >/dev/null
fi

# PostgreSQL 17 or 18 (PG=17, PG=18): that version's chroot and pg_config.
pgversion_setup
