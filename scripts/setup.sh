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
PG_CONFIG=${PG_CONFIG:-/usr/bin/pg_config}
export PGRX_HOME=${PGRX_HOME:-$PWD/pgrx-config}

# Root runs commands directly; anybody else goes through sudo.
if [ "$(id -u)" -eq 0 ]; then SUDO=(); else SUDO=(sudo); fi

# Debian packages:
#   postgresql-$PG_MAJOR             the server (initdb, pg_ctl, postgres, pgbench)
#   postgresql-server-dev-$PG_MAJOR  pg_config, headers, pg_regress, pg_isolation_regress
#   libclang-dev clang               bindgen (pgrx-pg-sys generates bindings from the headers)
#   build-essential pkg-config libssl-dev   compiling cargo-pgrx and the crate
#   sudo                             every test server runs as the `postgres` user (initdb refuses root)
#   ca-certificates curl             fetching crates (and rustup when cargo is missing)
packages=(postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR libclang-dev clang
          build-essential pkg-config libssl-dev sudo ca-certificates curl)
missing=()
for p in "${packages[@]}"; do
    # "installed", not merely known to dpkg (a removed package keeps its config files).
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    # sudo itself may be among the missing packages, so only a non-root user needs it here.
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Rust: a brand-new machine may have none. pgrx 0.18 builds with rustc 1.95.
if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: installing the Rust toolchain (rustup, 1.95)"
    # (static.rust-lang.org hosts the script sh.rustup.rs redirects to.)
    curl -sSf https://static.rust-lang.org/rustup/rustup-init.sh |
        sh -s -- -y -q --profile minimal --default-toolchain 1.95
    # The Makefile puts ~/.cargo/bin on PATH for the commands that follow.
    export PATH="$HOME/.cargo/bin:$PATH"
fi

# cargo-pgrx must match the pgrx crate exactly, or schema generation fails.
if [ "$(cargo pgrx --version 2>/dev/null)" != "cargo-pgrx $PGRX_VERSION" ]; then
    echo "setup: installing cargo-pgrx $PGRX_VERSION (takes about 5 minutes)"
    cargo install cargo-pgrx --version "$PGRX_VERSION" --locked --force --quiet
fi

# The repository's own PGRX_HOME; config.toml is committed, so this only runs
# when somebody deleted it.
if [ ! -f "$PGRX_HOME/config.toml" ]; then
    echo "setup: cargo pgrx init --pg$PG_MAJOR $PG_CONFIG"
    cargo pgrx init --pg$PG_MAJOR "$PG_CONFIG" >/dev/null
fi
