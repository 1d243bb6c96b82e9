#!/usr/bin/env bash
# Packages of syncguard, into target/packages/:
#
#   scripts/package.sh deb     postgresql-$PG-syncguard_<version>-1_amd64.deb for
#                              PostgreSQL $PG (scripts/pgversion.sh), laid out like
#                              Debian's own postgresql-N-* extension packages
#   scripts/package.sh pgxn    syncguard-<version>.zip, the PGXN source
#                              distribution (git archive of HEAD, META.json at its top)
#   scripts/package.sh test    builds the .deb, then installs it with apt-get into
#                              a new minimal chroot of that version's Debian suite
#                              (nothing else of syncguard there), creates the
#                              extension, runs one merge, and removes the package:
#                              its files must be gone
#
# `make package` runs deb for 15, 17 and 18, then pgxn; the test tier
# `package` of scripts/test.sh runs test for $PG.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
out=$PWD/target/packages
mkdir -p "$out"
deb=$out/postgresql-$PG-syncguard_${version}-1_amd64.deb

build_deb() {
    local stage=$PWD/target/package-pg$PG
    rm -rf "$stage" "$stage.pgrx"
    # cargo pgrx package lays the files out under pg_config's directories,
    # which for a chroot's version start with PG_ROOT: taken off here.
    cargo pgrx package --pg-config "$PG_CONFIG" --no-default-features --features "pg$PG" \
        --out-dir "$stage.pgrx" >/dev/null
    mkdir -p "$stage"
    cp -a "$stage.pgrx$PG_ROOT/usr" "$stage/"
    rm -rf "$stage.pgrx"
    local docdir=$stage/usr/share/doc/postgresql-$PG-syncguard
    mkdir -p "$docdir" "$stage/DEBIAN"
    cat > "$docdir/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: syncguard
Source: the syncguard repository

Files: *
License: PostgreSQL
 Permission to use, copy, modify, and distribute this software and its
 documentation for any purpose, without fee, and without a written agreement
 is hereby granted, provided that the above copyright notice and this
 paragraph and the following two paragraphs appear in all copies.
EOF
    gzip -9n < README.md > "$docdir/README.md.gz"
    # The newest glibc symbol version the library uses: the libc6 it needs.
    local glibc
    glibc=$(objdump -T "$stage/usr/lib/postgresql/$PG/lib/syncguard.so" |
                grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)
    cat > "$stage/DEBIAN/control" <<EOF
Package: postgresql-$PG-syncguard
Version: $version-1
Architecture: amd64
Maintainer: syncguard maintainers <maintainers@syncguard.invalid>
Depends: postgresql-$PG, libc6 (>= $glibc), libgcc-s1
Section: database
Priority: optional
Installed-Size: $(du -sk "$stage/usr" | cut -f1)
Description: partial-failure-safe writes for PostgreSQL $PG
 syncguard makes an application's writes safe against partial failure
 without changing the application: jsonb deep-merge upserts and protection
 triggers, idempotency keys, sync watermarks that never advance past a
 failure, a retry queue, sync health views and SQL invariant checks.
EOF
    dpkg-deb --root-owner-group --build "$stage" "$deb" >/dev/null
    echo "$deb"
}

build_pgxn() {
    local zip=$out/syncguard-$version.zip
    grep -q "\"version\": \"$version\"" META.json ||
        { echo "META.json does not say version $version" >&2; exit 1; }
    git archive --format=zip --prefix="syncguard-$version/" -o "$zip" HEAD
    echo "$zip"
}

remove_chroot() {
    local m
    for m in "$1/dev" "$1/proc"; do
        if mountpoint -q "$m"; then "${PGV_SUDO[@]}" umount -R "$m"; fi
    done
    "${PGV_SUDO[@]}" rm -rf "$1"
}

# A new minimal chroot of the version's suite, the .deb installed by apt
# (which brings postgresql-$PG from the archive), then removed.
test_deb() {
    build_deb >/dev/null
    local suite=${PG_SUITE:-bookworm}
    local root=/srv/syncguard-pkgtest-pg$PG
    # shellcheck disable=SC2064 # $root is fixed now
    trap "remove_chroot '$root'" EXIT
    remove_chroot "$root"
    echo "-- a new $suite chroot: $root"
    "${PGV_SUDO[@]}" debootstrap --variant=minbase "$suite" "$root" http://deb.debian.org/debian >/dev/null
    local PG_ROOT=$root
    pgv_mount
    pgv_prepare_root
    "${PGV_SUDO[@]}" cp "$deb" "$root/tmp/"
    echo "-- apt-get install ./$(basename "$deb")"
    pgv_in_root apt-get update -qq
    pgv_in_root apt-get install -y -qq --no-install-recommends "/tmp/$(basename "$deb")" >/dev/null
    pgv_in_root dpkg -L "postgresql-$PG-syncguard" | grep -E 'syncguard(\.so|\.control)$'
    echo "-- CREATE EXTENSION syncguard, one merge"
    local bin=/usr/lib/postgresql/$PG/bin c=/tmp/syncguard-pkg
    pgv_in_root install -d -o postgres -g postgres "$c"
    pgv_in_root su postgres -s /bin/sh -c "$bin/initdb -D $c/data -U postgres --auth=trust --no-sync >/dev/null &&
        $bin/pg_ctl -D $c/data -l $c/log -w -o '-k $c -c listen_addresses=' start >/dev/null"
    "${PGV_SUDO[@]}" tee "$root/tmp/check.sql" >/dev/null <<'SQL'
CREATE EXTENSION syncguard;
SELECT syncguard.jsonb_deep_merge('{"a": {"b": 1}}', '{"a": {"c": 2}}');
SQL
    local merged
    merged=$(pgv_in_root su postgres -s /bin/sh -c "$bin/psql -X -At -h $c -d postgres -f /tmp/check.sql")
    echo "$merged"
    pgv_in_root su postgres -s /bin/sh -c "$bin/pg_ctl -D $c/data -m fast -w stop >/dev/null"
    [ "$(echo "$merged" | tail -n 1)" = '{"a": {"b": 1, "c": 2}}' ] ||
        { echo "the packaged extension merged wrong: $merged" >&2; exit 1; }
    echo "-- apt-get remove --purge postgresql-$PG-syncguard"
    pgv_in_root apt-get remove --purge -y -qq "postgresql-$PG-syncguard" >/dev/null
    local left
    left=$(find "$root/usr" -name 'syncguard*' | sed "s|^$root||")
    [ -z "$left" ] || { echo "files left after removing the package: $left" >&2; exit 1; }
    echo "package test for PostgreSQL $PG: passed"
}

case "${1:-}" in
    deb) build_deb ;;
    pgxn) build_pgxn ;;
    test) test_deb ;;
    *) echo "usage: $0 deb|pgxn|test   (PG=15|17|18 for the version)" >&2; exit 2 ;;
esac
