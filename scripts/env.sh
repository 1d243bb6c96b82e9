# shellcheck shell=bash
# The environment of every script here, in one place: source it, never run it.
#
#   PGRX_HOME   this repository's pgrx home (pgrx-config/), never ~/.pgrx
#   PATH        with ~/.cargo/bin, where rustup and cargo install put tools
#   PG, PG_ROOT, PG_CONFIG and as_server: the PostgreSQL version (pgversion.sh)

SYNCGUARD_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PGRX_HOME=${PGRX_HOME:-$SYNCGUARD_ROOT/pgrx-config}
case ":$PATH:" in *":$HOME/.cargo/bin:"*) ;; *) export PATH="$HOME/.cargo/bin:$PATH" ;; esac
source "$SYNCGUARD_ROOT/scripts/pgversion.sh"
