#!/usr/bin/env bash
# `make bench` section: the last `make soak` run, as recorded in benches/soak.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -f benches/soak.md ]; then
    cat benches/soak.md
else
    printf '## Merge core soak (`make soak`)\n\nNo run recorded yet: run `make soak`.\n'
fi
