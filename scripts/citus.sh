#!/usr/bin/env bash
# Citus for the `citus` test tier (PostgreSQL 15 only: Citus 13.2 is the last
# line that supports it).
#
#   scripts/citus.sh install     build dependencies, then build and install Citus
#                                from $CITUS_SRC, unless the installed citus.so
#                                already is that version
#   scripts/citus.sh available   exit 0 when the tier can run: CITUS_SRC is set,
#                                or a citus.so is installed
#
# CITUS_SRC is a directory holding citus-X.Y.Z.tar.gz, or an unpacked Citus
# source tree (with its configure script). The build happens in
# target/citus/, never in CITUS_SRC (which may be read-only) and never in a
# committed path. The 3-node cluster itself (a coordinator and two workers)
# is started by the test, tests/client/tests/citus.rs, through the harness in tests/client/src/common.rs.
#
# Idempotent, and works on a brand-new machine as root (CI) or as a user with sudo.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/pgversion.sh   # PG, PG_ROOT, PG_CONFIG

if [ "$(id -u)" -eq 0 ]; then SUDO=(); else SUDO=(sudo); fi

# What Citus links against, besides the PostgreSQL server headers that
# scripts/setup.sh installs.
build_deps=(libcurl4-openssl-dev liblz4-dev libzstd-dev libkrb5-dev)

citus_so() { echo "$("$PG_CONFIG" --pkglibdir)/citus.so"; }

# The version of the source in CITUS_SRC (from the tarball's name, or from
# the unpacked tree's configure script).
src_version() {
    local t
    t=$(ls "$CITUS_SRC"/citus-*.tar.gz 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -n "$t" ]; then
        basename "$t" .tar.gz | sed 's/^citus-//'
    elif [ -f "$CITUS_SRC/configure" ]; then
        sed -n "s/^PACKAGE_VERSION='\(.*\)'/\1/p" "$CITUS_SRC/configure"
    else
        echo "CITUS_SRC=$CITUS_SRC holds neither citus-*.tar.gz nor a Citus source tree" >&2
        return 1
    fi
}

# citus.so carries its version in citus_version()'s text ("Citus 13.2.2 on ...").
installed_matches() {
    [ -f "$(citus_so)" ] && grep -aq "Citus $1 on " "$(citus_so)"
}

install_deps() {
    local p missing=()
    for p in "${build_deps[@]}"; do
        [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "citus: installing ${missing[*]}"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
}

build_and_install() {
    local version=$1 build=target/citus t
    rm -rf "$build"
    mkdir -p "$build"
    t=$CITUS_SRC/citus-$version.tar.gz
    if [ -f "$t" ]; then
        tar xzf "$t" -C "$build"
    else
        cp -a "$CITUS_SRC" "$build/citus-$version"
    fi
    local src=$build/citus-$version
    # PostgreSQL 15.20's commands/dbcommands.h declares have_createdb_privilege()
    # extern, and Citus 13.2 also defines it as a static inline for 15: drop the
    # inline (the server exports the function) when the headers declare it.
    if grep -q 'have_createdb_privilege' "$("$PG_CONFIG" --includedir-server)/commands/dbcommands.h"; then
        perl -0pi -e 's/static inline bool\nhave_createdb_privilege\(void\)\n\{.*?\n\}\n//s' \
            "$src/src/include/pg_version_compat.h"
    fi
    echo "citus: building Citus $version (about 1.5 minutes on 2 cores)"
    (cd "$src" && ./configure PG_CONFIG="$PG_CONFIG" >/dev/null &&
        make -s -j"$(nproc)" >/dev/null 2>"$PWD/../build.log" || { tail -n 40 "$PWD/../build.log" >&2; exit 1; })
    (cd "$src" && "${SUDO[@]}" make -s install >/dev/null)
    installed_matches "$version"
    echo "citus: installed Citus $version into $("$PG_CONFIG" --pkglibdir)"
}

case "${1:-}" in
install)
    [ "$PG" = 15 ] || { echo "citus: the tier runs on PostgreSQL 15 only (PG=$PG)" >&2; exit 2; }
    if [ -z "${CITUS_SRC:-}" ]; then
        [ -f "$(citus_so)" ] || { echo "citus: set CITUS_SRC (a directory with citus-X.Y.Z.tar.gz)" >&2; exit 2; }
        echo "citus: using the installed $(citus_so) (no CITUS_SRC)"
        exit 0
    fi
    version=$(src_version)
    if installed_matches "$version"; then
        echo "citus: Citus $version already installed"
        exit 0
    fi
    install_deps
    build_and_install "$version"
    ;;
available)
    [ "$PG" = 15 ] && { [ -n "${CITUS_SRC:-}" ] || [ -f "$(citus_so)" ]; }
    ;;
*)
    echo "usage: $0 install|available" >&2
    exit 2
    ;;
esac
