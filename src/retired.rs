//! Symbols that install scripts of released versions name, for functions
//! later versions removed. `CREATE EXTENSION syncguard VERSION '0.1.0'`
//! with this library looks each one up, so they stay, with no SQL of their
//! own; calling one (an old version not yet updated) is a clear error.

use crate::errors::raise;
use pgrx::prelude::*;

fn removed(name: &str) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
        format!("syncguard.{name} was removed in syncguard 0.2.0"),
        Some("Run ALTER EXTENSION syncguard UPDATE."),
    )
}

/// 0.1.0; replaced by `invariant_check_run`.
#[pg_extern(sql = false)]
fn invariant_check_enter() {
    removed("invariant_check_enter")
}

/// 0.1.0; replaced by `invariant_check_run`.
#[pg_extern(sql = false)]
fn invariant_check_leave() {
    removed("invariant_check_leave")
}
