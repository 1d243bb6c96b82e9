# shellcheck shell=bash
# The PostgreSQL version the scripts work with: PG=15 (the default), 17 or 18.
# Source it; it sets
#
#   PG          the major version
#   PG_ROOT     "" for 15 (the host's own server, Debian bookworm), or the
#               root of a chroot holding that version's Debian packages:
#               /srv/syncguard-pg17 (Debian trixie), /srv/syncguard-pg18 (sid);
#               no archive this machine reaches has PostgreSQL 16
#   PG_CONFIG   /usr/bin/pg_config, or for a chroot a generated pg_config
#               that answers as the chroot's does, with PG_ROOT in front of
#               every directory, so the extension builds outside the chroot
#               and installs straight into it
#
# and `as_server PROGRAM ARGS...`: runs a program of that server version (the
# chroot's binaries need the chroot's libraries) as the postgres user, with
# PG_ROOT taken off the front of every path in its arguments. Files under
# PG_ROOT are the host's files too: the chroot's postgres user has the host's
# uid and gid, so either side reads what the other wrote. `pgversion_setup`
# (scripts/setup.sh) makes the chroot; everything else only reads it.

PG=${PG:-15}
case $PG in
    15) PG_ROOT="" ;;
    17) PG_ROOT=/srv/syncguard-pg17 PG_SUITE=trixie ;;
    18) PG_ROOT=/srv/syncguard-pg18 PG_SUITE=sid ;;
    *) echo "PG=$PG: syncguard is tested on PostgreSQL 15, 17 and 18 (PG=15, PG=17, PG=18)" >&2
       return 2 2>/dev/null || exit 2 ;;
esac
if [ -z "$PG_ROOT" ]; then
    PG_CONFIG=${PG_CONFIG:-/usr/bin/pg_config}
else
    # Where pgrx-config/config.toml looks for it (pgN = ...).
    PG_CONFIG=$PG_ROOT.pg_config
fi
export PG PG_ROOT PG_CONFIG

if [ "$(id -u)" -eq 0 ]; then PGV_SUDO=(); else PGV_SUDO=(sudo); fi

as_server() {
    if [ -z "$PG_ROOT" ]; then
        (cd / && sudo -u postgres "$@")
        return
    fi
    local a args=()
    for a in "$@"; do args+=("${a//$PG_ROOT\//\/}"); done
    "${PGV_SUDO[@]}" chroot --userspec=postgres:postgres "$PG_ROOT" /usr/bin/env -i \
        PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C HOME=/var/lib/postgresql "${args[@]}"
}

# Run a command in the chroot as root.
pgv_in_root() {
    "${PGV_SUDO[@]}" chroot "$PG_ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        LC_ALL=C DEBIAN_FRONTEND=noninteractive HOME=/root "$@"
}

pgv_mount() {
    mountpoint -q "$PG_ROOT/proc" || "${PGV_SUDO[@]}" mount -t proc proc "$PG_ROOT/proc"
    if ! mountpoint -q "$PG_ROOT/dev"; then
        # rbind brings /dev/shm (dynamic shared memory); rslave keeps the
        # chroot's unmounts from reaching the host.
        "${PGV_SUDO[@]}" mount --rbind /dev "$PG_ROOT/dev"
        "${PGV_SUDO[@]}" mount --make-rslave "$PG_ROOT/dev"
    fi
}

# Ready $PG_ROOT (a debootstrapped Debian) for apt: no service starts in
# it and no "main" cluster is made (it shares the host's network); it
# resolves names; sid's index may be served past its Valid-Until date
# (signatures are still checked).
pgv_prepare_root() {
    printf '#!/bin/sh\nexit 101\n' | "${PGV_SUDO[@]}" tee "$PG_ROOT/usr/sbin/policy-rc.d" >/dev/null
    "${PGV_SUDO[@]}" chmod 755 "$PG_ROOT/usr/sbin/policy-rc.d"
    "${PGV_SUDO[@]}" mkdir -p "$PG_ROOT/etc/postgresql-common/createcluster.d"
    echo "create_main_cluster = false" |
        "${PGV_SUDO[@]}" tee "$PG_ROOT/etc/postgresql-common/createcluster.d/no-main-cluster.conf" >/dev/null
    "${PGV_SUDO[@]}" cp /etc/resolv.conf "$PG_ROOT/etc/resolv.conf"
    echo 'Acquire::Check-Valid-Until "false";' |
        "${PGV_SUDO[@]}" tee "$PG_ROOT/etc/apt/apt.conf.d/99syncguard" >/dev/null
}

# Make (or bring up to date) the chroot of $PG: idempotent, quiet when done.
pgversion_setup() {
    [ -n "$PG_ROOT" ] || return 0
    local stamp=$PG_ROOT/.syncguard-ready
    if ! command -v debootstrap >/dev/null 2>&1; then
        echo "setup: installing debootstrap"
        "${PGV_SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    fi
    if [ ! -x "$PG_ROOT/usr/bin/apt-get" ]; then
        echo "setup: debootstrap $PG_SUITE into $PG_ROOT (PostgreSQL $PG; once, about a minute)"
        "${PGV_SUDO[@]}" debootstrap --variant=minbase "$PG_SUITE" "$PG_ROOT" http://deb.debian.org/debian >/dev/null
    fi
    pgv_mount
    if [ ! -f "$stamp" ] || [ "$(( $(date +%s) - $(stat -c %Y "$stamp") ))" -gt 86400 ]; then
        echo "setup: PostgreSQL $PG packages in $PG_ROOT (the newest the $PG_SUITE archive has)"
        pgv_prepare_root
        # The chroot's postgres user is the host's (same uid and gid).
        local uid gid
        uid=$(id -u postgres) gid=$(id -g postgres)
        pgv_in_root sh -c "getent group postgres >/dev/null || groupadd -g $gid postgres;
                           getent passwd postgres >/dev/null || useradd -u $uid -g $gid -d /var/lib/postgresql -s /bin/sh postgres"
        pgv_in_root apt-get update -qq
        pgv_in_root apt-get install -y -qq --no-install-recommends \
            "postgresql-$PG" "postgresql-server-dev-$PG" "postgresql-$PG-cron" >/dev/null
        "${PGV_SUDO[@]}" touch "$stamp"
    fi
    pgv_write_pg_config
}

# $PG_CONFIG: the chroot's pg_config answers, read once, paths under PG_ROOT.
pgv_write_pg_config() {
    local opt val answers=""
    for opt in bindir docdir htmldir includedir pkgincludedir includedir-server libdir pkglibdir \
               localedir mandir sharedir sysconfdir pgxs configure cc cppflags cflags cflags_sl \
               ldflags ldflags_ex ldflags_sl libs version; do
        val=$(pgv_in_root "/usr/lib/postgresql/$PG/bin/pg_config" "--$opt")
        case $opt in
            # libdir stays the host's: only a linker search path for pgrx (the
            # extension links no PostgreSQL library), and the chroot's newer
            # glibc stubs must stay out of the link.
            libdir) val=/usr/lib/x86_64-linux-gnu ;;
            *dir|*dir-server|pgxs) val=$PG_ROOT$val ;;
        esac
        answers+="    --$opt) echo '${val//\'/\'\\\'\'}' ;;"$'\n'
    done
    local new
    new=$(cat <<EOF
#!/bin/sh
# pg_config of PostgreSQL $PG in $PG_ROOT, every directory under $PG_ROOT.
# Written by scripts/pgversion.sh.
[ \$# -gt 0 ] || { echo "usage: \$0 --OPTION..." >&2; exit 1; }
for a; do
  case \$a in
$answers    *) echo "pg_config: invalid argument: \$a" >&2; exit 1 ;;
  esac
done
EOF
)
    if [ ! -f "$PG_CONFIG" ] || [ "$(cat "$PG_CONFIG")" != "$new" ]; then
        printf '%s\n' "$new" | "${PGV_SUDO[@]}" tee "$PG_CONFIG" >/dev/null
        "${PGV_SUDO[@]}" chmod 755 "$PG_CONFIG"
    fi
}
