//! Every setting of syncguard (`syncguard.*`), in one place: the values
//! the code reads and their registration, from `_PG_init`. The settings
//! exist whether or not the library is preloaded; the worker's are SIGHUP
//! settings (postgresql.conf or ALTER SYSTEM, then a reload).

use crate::merge::engine;
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::ffi::CString;

pub static MAX_MERGE_DEPTH: GucSetting<i32> =
    GucSetting::<i32>::new(engine::DEFAULT_MAX_DEPTH as i32);

/// Upper bound of the depth GUC. The server's own stack check stops a walk
/// before the stack runs out whatever this is set to.
const MAX_MERGE_DEPTH_LIMIT: i32 = 100_000;

/// Protected tables take writes as given (`SET LOCAL`, the table's owner only).
pub static BYPASS_PROTECTION: GucSetting<bool> = GucSetting::<bool>::new(false);

/// Milliseconds.
pub static MAX_CLOCK_SKEW: GucSetting<i32> = GucSetting::<i32>::new(5 * 60 * 1000);

/// The operator's bound on one check, in milliseconds: an owner's own
/// `statement_timeout` (up to 24 hours) cannot hold the checker longer.
pub static MAX_CHECK_TIME: GucSetting<i32> = GucSetting::<i32>::new(60 * 1000);

pub static WORKER_ENABLED: GucSetting<bool> = GucSetting::<bool>::new(true);
pub static WORKER_DATABASE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"postgres"));
/// Seconds.
pub static WORKER_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(60);

pub fn init() {
    GucRegistry::define_int_guc(
        c"syncguard.max_merge_depth",
        c"Deepest jsonb nesting the merge functions walk before raising an error.",
        c"Documents nested deeper than this raise SQLSTATE 54001 instead of exhausting the stack.",
        &MAX_MERGE_DEPTH,
        1,
        MAX_MERGE_DEPTH_LIMIT,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"syncguard.bypass_protection",
        c"Protected tables take updates as given (a full replace) while on.",
        c"Use SET LOCAL in the transaction that must really replace or delete data.",
        &BYPASS_PROTECTION,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"syncguard.max_clock_skew",
        c"How far in the future a last_write_wins timestamp may lie.",
        c"A write whose timestamp is later than the server clock plus this is rejected with SQLSTATE SG004.",
        &MAX_CLOCK_SKEW,
        0,
        i32::MAX,
        GucContext::Userset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"syncguard.max_check_time",
        c"The longest one invariant check may run, whatever its own statement_timeout.",
        c"Also each owner's share of one round of the background worker's checks.",
        &MAX_CHECK_TIME,
        1,
        24 * 60 * 60 * 1000,
        GucContext::Suset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_bool_guc(
        c"syncguard.worker_enabled",
        c"Whether the syncguard background worker runs invariant checks and housekeeping.",
        c"Takes effect on reload. The worker exists only with syncguard in shared_preload_libraries.",
        &WORKER_ENABLED,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"syncguard.worker_database",
        c"The database where the syncguard background worker runs checks and housekeeping.",
        c"A database without the syncguard extension is left alone.",
        &WORKER_DATABASE,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"syncguard.worker_interval",
        c"How often the syncguard background worker wakes up to run due checks and housekeeping.",
        c"Each invariant runs on its own schedule; this is how often the worker looks.",
        &WORKER_INTERVAL,
        1,
        86_400,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
}
