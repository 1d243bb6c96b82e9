//! syncguard: partial-failure-safe writes inside PostgreSQL.
//!
//! This file stays thin: the module list, the module magic and `_PG_init`.
use pgrx::prelude::*;

mod column_merge;
mod composite;
mod conflict;
mod errors;
mod freshness;
mod idempotency;
mod install_order;
mod invariants;
mod jsonb_arg;
/// The merge engine and jsonb codec: the pure core crate (core/).
pub use syncguard_core as merge;
mod merge_sql;
mod merging;
mod policy_args;
mod protect;
mod protect_config;
mod reconcile_hash;
mod regclass;
mod retired;
mod roles;
mod row_delete;
mod schema_guard;
mod settings;
mod table_info;
mod updated_row;
mod upsert;
mod upsert_fields;
mod upsert_row;
mod upsert_statement;
mod upsert_values;
mod varlena;
mod worker;
pub mod write_policy;

#[cfg(any(test, feature = "pg_test"))]
mod codec_corpus;
#[cfg(any(test, feature = "pg_test"))]
mod codec_tests;

::pgrx::pg_module_magic!(name, version);

/// The `pg_finfo_<name>` record PostgreSQL looks up for a `LANGUAGE c`
/// function whose symbol is `<name>` (version-1 calling convention).
macro_rules! finfo_v1 {
    ($finfo:ident) => {
        #[no_mangle]
        #[doc(hidden)]
        pub extern "C-unwind" fn $finfo() -> &'static pg_sys::Pg_finfo_record {
            const V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
            &V1
        }
    };
}
pub(crate) use finfo_v1;

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // pgrx appends a panic's backtrace to the error's DETAIL when the server
    // runs with RUST_BACKTRACE set; a client must never see one. Backends are
    // single-threaded, and this runs before any panic could capture.
    std::env::set_var("RUST_LIB_BACKTRACE", "0");
    settings::init();
    table_info::init();
    merging::init();
    worker::register();
}

/// The version of the loaded shared library (the SQL-level version is in
/// `pg_extension`); a mismatch between the two means a missing `ALTER EXTENSION … UPDATE`.
#[pg_extern(immutable, parallel_safe)]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn version_matches_cargo() {
        let v = Spi::get_one::<&str>("SELECT syncguard.version()").unwrap();
        assert_eq!(v, Some(env!("CARGO_PKG_VERSION")));
    }
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
