#!/usr/bin/env bash
# The walk-through behind `make demo`: a throwaway server of its own (never the
# system's 5432 cluster), CREATE EXTENSION syncguard, then demo/walkthrough.sql.
# The extension must be installed already (`make demo` runs `make install` first).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/pgcluster.sh

pgcluster_start
echo "Throwaway PostgreSQL $(psql -X -At -c "SHOW server_version") on port $PGPORT (socket in $PGHOST)"
echo ""
# -X: ignore ~/.psqlrc so the output looks the same for everybody; -q: results
# and \echo text only, without command tags and \pset chatter.
psql -X -q -v ON_ERROR_STOP=1 -c "CREATE EXTENSION syncguard"
psql -X -q -v ON_ERROR_STOP=1 -f demo/walkthrough.sql
echo ""
echo "Demo done; the throwaway server is stopped and deleted."
