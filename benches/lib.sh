# shellcheck shell=bash
# Helpers of benches/run.sh and of every bench section (benches/sections/*.sh):
# source it, from the repository's root. It prints nothing.
#
# The mode: `make bench` runs the default, shorter mode; `BENCH_FULL=1 make
# bench` the full one (longer runs, more rounds and repetitions). Each section
# picks its settings with bench_pick; BENCH_SECONDS and BENCH_ROUNDS override
# both modes for every pgbench section (e.g. BENCH_SECONDS=1 BENCH_ROUNDS=1 for
# a smoke run of the scripts, whose figures mean nothing), a section's own
# variable (UPSERT_SECONDS, QUEUE_ROUNDS, …) overrides them for that section.

if [ "${BENCH_FULL:-0}" = 1 ]; then BENCH_MODE=full; else BENCH_MODE=default; fi

# bench_pick FULL DEFAULT: the value of this run's mode.
bench_pick() { if [ "$BENCH_MODE" = full ]; then echo "$1"; else echo "$2"; fi; }

# Seconds of one pgbench run (a section sets RUN_SECONDS from it, or from its
# own variable) and alternating rounds of a comparison (a section sets ROUNDS).
BENCH_SECONDS=${BENCH_SECONDS:-$(bench_pick 10 3)}
RUN_SECONDS=$BENCH_SECONDS
ROUNDS=${BENCH_ROUNDS:-$(bench_pick 5 3)}

psql_q() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }

# The median of the numbers given (the mean of the middle two for an even count).
median() {
    printf '%s\n' "$@" | sort -g |
        awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}

# $1 / $2 with two decimals, truncated: 0.899 reads 0.89, never a 0.90 that
# looks like a met 0.9× target.
# (trunc2: the awk function every ratio here is truncated with.)
TRUNC2='function trunc2(x) { return int(x * 100 + 1e-9) / 100 }'
ratio() {
    awk -v a="$1" -v b="$2" "$TRUNC2"' BEGIN { printf "%.2f", trunc2(a / b) }'
}

# The per-run preparation: the name of a function that tps calls before every
# pgbench run with the side's tag (see compare; "" for none), to reload a
# table or empty queues, so that every run starts from the same state. Its
# output is discarded. Empty: no preparation.
BENCH_PREPARE=""
# A function that compare calls after the last run of each side, with the
# side's tag; its output is kept in SIDE_CHECK[side] (what the table holds then).
BENCH_CHECK=""
# What compare sets (see there).
SIDE_TPS=() SIDE_RUNS=() SIDE_MED=() SIDE_CHECK=()

# TPS of one pgbench run of SCRIPT (-n: no vacuum of pgbench's own tables), each
# client on its own connection and thread, RUN_SECONDS long, after the
# preparation. $1 script, $2 clients, $3 protocol (simple or prepared), $4 tag.
# Fails, with the end of pgbench's output, when pgbench does (a client aborted).
tps() {
    local out t
    [ -z "$BENCH_PREPARE" ] || "$BENCH_PREPARE" "${4:-}" >/dev/null
    if ! out=$(pgbench -n -M "$3" -c "$2" -j "$2" -T "$RUN_SECONDS" -f "$1" 2>&1) ||
       ! t=$(sed -nE 's/^tps = ([0-9.]+).*/\1/p' <<< "$out" | head -n 1) || [ -z "$t" ]; then
        echo "pgbench failed: $1, $2 clients, -M $3${4:+, $4}:" >&2
        tail -n 5 <<< "$out" >&2
        return 1
    fi
    echo "$t"
}

# compare CLIENTS PROTOCOL SIDE...: the sides (SIDE = a pgbench script, or
# SCRIPT:TAG to hand the preparation a tag, e.g. benches/x.sql:protect) run
# ROUNDS rounds, in the order given in odd rounds and reversed in even ones
# (B C, C B, B C, …), so that a drift of the machine's speed weighs on every
# side alike. Sets, per side i (0 the first):
#   SIDE_TPS[i]   the TPS of its runs, in the order they ran, space-separated
#   SIDE_RUNS[i]  the same rounded, comma-separated (for a table cell)
#   SIDE_MED[i]   the median TPS
#   SIDE_CHECK[i] what BENCH_CHECK printed after its last run
# Exits the section when a run fails.
compare() {
    local clients=$1 protocol=$2
    shift 2
    local sides=("$@") r i order t script tag
    SIDE_TPS=() SIDE_RUNS=() SIDE_MED=() SIDE_CHECK=()
    for r in $(seq 1 "$ROUNDS"); do
        if [ $((r % 2)) = 1 ]; then order=$(seq 0 $(($# - 1))); else order=$(seq $(($# - 1)) -1 0); fi
        for i in $order; do
            script=${sides[i]%%:*} tag=""
            [ "$script" = "${sides[i]}" ] || tag=${sides[i]#*:}
            t=$(tps "$script" "$clients" "$protocol" "$tag") || exit 1
            SIDE_TPS[i]+="${SIDE_TPS[i]:+ }$t"
            SIDE_RUNS[i]+="${SIDE_RUNS[i]:+, }$(printf '%.0f' "$t")"
            # shellcheck disable=SC2034  # read by the sections
            if [ "$r" = "$ROUNDS" ] && [ -n "$BENCH_CHECK" ]; then SIDE_CHECK[i]=$("$BENCH_CHECK" "$tag"); fi
        done
    done
    for i in "${!sides[@]}"; do
        # shellcheck disable=SC2086  # SIDE_TPS[i] is a list of numbers
        SIDE_MED[i]=$(median ${SIDE_TPS[i]})
    done
}

# The ratio of side $1 to side $2 of the last compare, round by round (the
# runs of one round ran next to each other): "median min max" of the per-round
# ratios, truncated to two decimals, then the median untruncated.
round_ratios() {
    awk -v a="${SIDE_TPS[$1]}" -v b="${SIDE_TPS[$2]}" "$TRUNC2"' BEGIN {
        n = split(a, x, " "); split(b, y, " ")
        for (i = 1; i <= n; i++) r[i] = x[i] / y[i]
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (r[j] < r[i]) { t = r[i]; r[i] = r[j]; r[j] = t }
        med = n % 2 ? r[(n + 1) / 2] : (r[n / 2] + r[n / 2 + 1]) / 2
        printf "%.2f %.2f %.2f %s\n", trunc2(med), trunc2(r[1]), trunc2(r[n]), med }'
}

# A table cell for the ratio of side $1 to side $2: "**0.93×** (0.90–0.97)",
# the median of the per-round ratios and their range; with a target $3, then
# " | met" or " | **not met**" (the median ratio, untruncated, against it).
ratio_cell() {
    local med lo hi raw
    read -r med lo hi raw < <(round_ratios "$1" "$2")
    if [ "$lo" = "$hi" ]; then printf '**%s×**' "$med"; else printf '**%s×** (%s–%s)' "$med" "$lo" "$hi"; fi
    [ -z "${3:-}" ] || awk -v r="$raw" -v goal="$3" 'BEGIN { printf " | %s", (r >= goal ? "met" : "**not met**") }'
}

# A table cell for side $1: its median TPS and its runs, "3338 (3338, 3296, …)".
tps_cell() { printf '%.0f (%s)' "${SIDE_MED[$1]}" "${SIDE_RUNS[$1]}"; }

# Restart the server of benches/run.sh with its own settings and then $1
# ("-c name=value …"), or with its own settings alone when $1 is empty.
bench_server_restart() {
    # shellcheck source=scripts/pgcluster.sh
    source scripts/pgcluster.sh
    pgcluster_restart "${1:-}"
}
