# Helpers of the pgbench sections (sourced by queue.sh and upsert.sh).

# The median of the numbers given (the mean of the middle two for an even count).
median() {
    printf '%s\n' "$@" | sort -g |
        awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}

# $1 / $2 with two decimals, truncated: 0.899 reads 0.89, never a 0.90 that
# looks like a met 0.9× target.
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", int(a / b * 100 + 1e-9) / 100 }'
}
