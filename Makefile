# syncguard: the README's commands (and CONTRIBUTING.md's). Every target runs `setup` first, which is
# quiet when the machine already has everything.
#
#   make demo     build + install (release), walk through it on a throwaway server
#   make test     every test tier; TIERS="regress client" runs only those
#
# PG=17 or PG=18 (default 15) does it for that PostgreSQL version, which
# setup installs into a chroot of its own (scripts/pgversion.sh).
#   make bench    benchmark workloads -> benches/RESULTS.md
#   make soak     long fuzz run of the merge core -> benches/soak.md
#   make package  .deb per PostgreSQL version and the PGXN zip -> target/packages/
#   make install  install into the PostgreSQL that PG_CONFIG names

SHELL := /bin/bash
PG ?= 15
export PG
PG_CONFIG ?= /usr/bin/pg_config
TIERS ?=

# The repository's own pgrx configuration, never a user's ~/.pgrx.
export PGRX_HOME := $(CURDIR)/pgrx-config
export PG_CONFIG
# Where rustup puts cargo on a machine that had no Rust before `setup`.
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: setup build install demo test bench soak package clean freeze-release

setup:
	@scripts/setup.sh

build: setup
	cargo build

install: setup
	scripts/install.sh release

demo: install
	scripts/demo.sh

test: setup
	scripts/test.sh $(TIERS)

bench: install
	benches/run.sh

# The Debian packages of every tested version and the PGXN distribution,
# into target/packages/ (scripts/package.sh).
package: setup
	for v in 15 17 18; do PG=$$v scripts/setup.sh && PG=$$v scripts/package.sh deb || exit 1; done
	scripts/package.sh pgxn

# SOAK_CASES=N sets the cases per fuzz property (default 120000, ~10 min).
soak: setup
	scripts/soak.sh

# Before bumping the version in Cargo.toml: keep the current install script, so
# the upgrade test can install this version and update it (CONTRIBUTING.md, "Upgrade scripts").
freeze-release: install
	cp "$$($(PG_CONFIG) --sharedir)/extension/syncguard--$$(cargo pkgid | sed 's/.*[#@]//').sql" tests/upgrade/

clean:
	cargo clean
	rm -rf tests/pg_regress/results tests/pg_regress/regression.* tests/isolation/output_iso
