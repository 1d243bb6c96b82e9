#!/usr/bin/env bash
# Build syncguard and install it into the PostgreSQL that $PG_CONFIG names.
#
#   scripts/install.sh            release build (`make install`, and the test tiers)
#   scripts/install.sh debug      debug build: quicker to compile while trying things
#
# `cargo pgrx install` writes the library, the control file, the generated
# install script syncguard--<version>.sql, and copies every upgrade script
# sql/syncguard--A--B.sql into $(pg_config --sharedir)/extension.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh   # PGRX_HOME, PG, PG_CONFIG

args=(--pg-config "$PG_CONFIG" --no-default-features --features "pg$PG")
case "${1:-release}" in
    release) args+=(--release) ;;
    debug) ;;
    *) echo "usage: $0 [release|debug]" >&2; exit 2 ;;
esac
# The system's extension directories belong to root.
[ "$(id -u)" -eq 0 ] || args+=(--sudo)

# Backends of a running server have the old library mapped: removed first,
# it is replaced by a new file instead of being overwritten under them.
lib="$("$PG_CONFIG" --pkglibdir)/syncguard.so"
if [ -e "$lib" ]; then
    if [ "$(id -u)" -eq 0 ]; then rm -f "$lib"; else sudo rm -f "$lib"; fi
fi
cargo pgrx install "${args[@]}"
