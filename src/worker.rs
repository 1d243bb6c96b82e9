//! The background worker: with syncguard in `shared_preload_libraries` it
//! wakes every `syncguard.worker_interval`, connects to
//! `syncguard.worker_database`, and there runs the invariant checks that are
//! due (`syncguard.due_invariants()`), each in a transaction of its own, then
//! `syncguard.housekeeping()`. A database without the extension is left
//! alone. The SQL it runs is the same a pg_cron job would call. On a Citus
//! worker node it only folds the node's stale-write counters.
//!
//! Many roles, one worker: it waits for no lock longer than
//! [`LOCK_TIMEOUT`], skips an invariant whose row another transaction holds,
//! bounds every check by `syncguard.max_check_time` whatever the owner's own
//! timeout, and takes the due checks round-robin by owner, each owner's
//! checks of one round together getting at most that much time: no role's
//! locks or slow checks hold up the others' checks or housekeeping.
//!
//! Signals: SIGHUP reloads the settings (a new database name makes the worker
//! exit, and the postmaster starts it again connected to that database);
//! SIGTERM is the server's `die`, so a shutdown stops a check in progress at
//! once instead of waiting for it. An error in one step is logged, its
//! transaction aborted, and the worker carries on with the next step.

use crate::settings::{MAX_CHECK_TIME, WORKER_DATABASE, WORKER_ENABLED, WORKER_INTERVAL};
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder};
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use pgrx::spi;
// PostgreSQL 18 renamed the backend's pqsignal to pqsignal_be (port.h keeps
// the old name as a C macro only, which the bindings do not carry).
#[cfg(not(feature = "pg18"))]
use pgrx::pg_sys::pqsignal;
#[cfg(feature = "pg18")]
use pgrx::pg_sys::pqsignal_be as pqsignal;
use std::collections::HashMap;
use std::ffi::CString;
use std::time::{Duration, Instant};

/// When the worker is restarted after it exited on purpose (a new
/// database) or on an error outside any step (e.g. the database is missing).
const RESTART_AFTER: Duration = Duration::from_secs(10);

/// The worker's `lock_timeout`: the longest it waits for any lock.
const LOCK_TIMEOUT: &std::ffi::CStr = c"10s";
/// The worker's `deadlock_timeout`, a tenth of the default: in a lock cycle
/// with a user's statement (a `DROP EXTENSION` or `ALTER TABLE` while
/// housekeeping runs) the worker checks first and is the one cancelled,
/// and it tries again next round.
const DEADLOCK_TIMEOUT: &std::ffi::CStr = c"100ms";

/// Registers the worker when the library is being preloaded (the only time
/// the postmaster accepts a static background worker).
pub fn register() {
    // SAFETY: a flag the postmaster sets while it loads shared_preload_libraries.
    if !unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    BackgroundWorkerBuilder::new("syncguard worker")
        .set_type("syncguard worker")
        .set_library("syncguard")
        .set_function("syncguard_worker_main")
        .enable_spi_access()
        .set_restart_time(Some(RESTART_AFTER))
        .load();
}

fn database() -> String {
    WORKER_DATABASE
        .get()
        .map(|d| d.to_string_lossy().into_owned())
        .unwrap_or_else(|| "postgres".into())
}

/// The server's own signal handlers, as C functions (pgrx binds them as
/// Rust wrappers, which cannot be installed as handlers).
mod handlers {
    extern "C-unwind" {
        pub fn die(signal: std::ffi::c_int);
        pub fn SignalHandlerForConfigReload(signal: std::ffi::c_int);
    }
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn syncguard_worker_main(_arg: pg_sys::Datum) {
    // SAFETY: the handlers of a regular backend: SIGHUP marks the settings
    // for reloading, SIGTERM (die) ends the process at the next interrupt check.
    unsafe {
        pqsignal(
            pg_sys::SIGHUP as i32,
            Some(handlers::SignalHandlerForConfigReload),
        );
        pqsignal(pg_sys::SIGTERM as i32, Some(handlers::die));
        pg_sys::BackgroundWorkerUnblockSignals();
    }
    let db = database();
    BackgroundWorker::connect_worker_to_spi(Some(&db), None);
    for (name, value) in [
        (c"lock_timeout", LOCK_TIMEOUT),
        (c"deadlock_timeout", DEADLOCK_TIMEOUT),
    ] {
        // SAFETY: sets a setting of this session, as SET would.
        unsafe {
            pg_sys::SetConfigOption(
                name.as_ptr(),
                value.as_ptr(),
                pg_sys::GucContext::PGC_SUSET,
                pg_sys::GucSource::PGC_S_OVERRIDE,
            );
        }
    }
    log!("syncguard worker started in database \"{db}\"");

    loop {
        let interval = WORKER_INTERVAL.get().max(1) as i64 * 1000;
        // SAFETY: the standard wait of a background worker; WL_EXIT_ON_PM_DEATH
        // ends the process if the postmaster dies.
        unsafe {
            pg_sys::WaitLatch(
                pg_sys::MyLatch,
                (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
                interval,
                pg_sys::PG_WAIT_EXTENSION,
            );
            pg_sys::ResetLatch(pg_sys::MyLatch);
        }
        check_for_interrupts!();
        // SAFETY: ConfigReloadPending is set by the SIGHUP handler.
        if unsafe { pg_sys::ConfigReloadPending } != 0 {
            unsafe {
                pg_sys::ConfigReloadPending = 0;
                pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP);
            }
            if database() != db {
                log!(
                    "syncguard worker: syncguard.worker_database is now \"{}\"; restarting to connect to it",
                    database()
                );
                // SAFETY: exit code 1 asks the postmaster for a restart.
                unsafe { pg_sys::proc_exit(1) };
            }
        }
        if WORKER_ENABLED.get() {
            tick();
        }
    }
}

/// Whether the worker said that the database's syncguard is at another
/// version than the library.
static WARNED_VERSION: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// One wake-up: the due checks, then housekeeping.
fn tick() {
    let installed = step("looking for the syncguard extension", || {
        Spi::get_one::<String>(
            "SELECT (SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'syncguard')",
        )
    });
    let Some(Some(version)) = installed else {
        return;
    };
    // The SQL the worker calls is this library's version's: in a database
    // still at another version it would fail every round until
    // ALTER EXTENSION syncguard UPDATE, so it waits for that, and says so once.
    if version != env!("CARGO_PKG_VERSION") {
        if !WARNED_VERSION.swap(true, std::sync::atomic::Ordering::Relaxed) {
            pgrx::warning!(
                "syncguard worker: the database has syncguard {version}, the library is {}; \
                 no checks or housekeeping run until ALTER EXTENSION syncguard UPDATE",
                env!("CARGO_PKG_VERSION")
            );
        }
        return;
    }
    if !citus_coordinator() {
        // A Citus worker node: the protection trigger counts stale writes
        // in this node's own syncguard.stale_writes, for its shards.
        step("folding stale write counters", || {
            Spi::run("SELECT syncguard._fold_stale_writes()")
        });
        return;
    }
    // By name and owner: names are per owner, and the worker (a superuser)
    // sees every owner's.
    let due = step("listing due invariants", || {
        Spi::connect(|client| {
            client
                .select(
                    "SELECT d.name, d.owner_role
                       FROM syncguard.due_invariants() WITH ORDINALITY AS d(name, owner_role, n)
                      ORDER BY d.n",
                    None,
                    &[],
                )?
                .map(|row| Ok((row.get::<String>(1)?, row.get::<String>(2)?)))
                .collect::<Result<Vec<_>, spi::Error>>()
        })
    });
    let budget = Duration::from_millis(MAX_CHECK_TIME.get().max(1) as u64);
    let mut spent: HashMap<String, Duration> = HashMap::new();
    for (name, owner) in round_robin(due.unwrap_or_default()) {
        if spent.get(&owner).is_some_and(|t| *t >= budget) {
            continue; // this owner's share of the round is used up: next round
        }
        let started = Instant::now();
        step(
            &format!("checking invariant {name} of role {owner}"),
            || {
                Spi::run_with_args(
                    "SELECT count(*) FROM syncguard._run_invariant_check($1, $2)",
                    &[name.as_str().into(), owner.as_str().into()],
                )
            },
        );
        *spent.entry(owner).or_default() += started.elapsed();
    }
    step("housekeeping", || {
        Spi::run("SELECT count(*) FROM syncguard.housekeeping()")
    });
}

/// False on a Citus worker node: the checks and housekeeping run on the
/// coordinator, where every syncguard function is called (docs/citus.md); a
/// worker's copies of the extension's tables are unused but for the
/// stale-write counters of its shards.
fn citus_coordinator() -> bool {
    let has_citus = step("looking for Citus", || {
        Spi::get_one::<bool>(
            "SELECT pg_catalog.to_regprocedure('pg_catalog.citus_is_coordinator()') IS NOT NULL",
        )
    });
    if has_citus != Some(Some(true)) {
        return true;
    }
    step("asking Citus whether this is the coordinator", || {
        Spi::get_one::<bool>("SELECT pg_catalog.citus_is_coordinator()")
    }) == Some(Some(true))
}

/// `(name, owner)` pairs reordered so that owners take turns: every
/// owner's first due check, then every owner's second, and so on, each
/// owner's checks in the order given.
fn round_robin(due: Vec<(Option<String>, Option<String>)>) -> Vec<(String, String)> {
    let mut queues: Vec<(String, Vec<String>)> = Vec::new();
    for (name, owner) in due {
        let (Some(name), Some(owner)) = (name, owner) else {
            continue;
        };
        match queues.iter_mut().find(|(o, _)| *o == owner) {
            Some((_, q)) => q.push(name),
            None => queues.push((owner, vec![name])),
        }
    }
    let longest = queues.iter().map(|(_, q)| q.len()).max().unwrap_or(0);
    (0..longest)
        .flat_map(|i| {
            queues
                .iter()
                .filter_map(move |(o, q)| q.get(i).map(|n| (n.clone(), o.clone())))
        })
        .collect()
}

/// Runs `f` in a transaction of its own. An error is logged and the
/// transaction aborted; the worker goes on.
fn step<R>(
    what: &str,
    f: impl FnOnce() -> Result<R, spi::Error> + std::panic::UnwindSafe,
) -> Option<R> {
    let activity = CString::new(format!("syncguard worker: {what}")).unwrap_or_default();
    // SAFETY: the transaction protocol of a background worker: start a
    // transaction with a snapshot, then commit it, or abort it after an error.
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
        pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_RUNNING, activity.as_ptr());
    }
    let result = PgTryBuilder::new(move || f().map_err(|e| e.to_string()))
        .catch_others(|e| {
            Err(match &e {
                CaughtError::PostgresError(r)
                | CaughtError::ErrorReport(r)
                | CaughtError::RustPanic { ereport: r, .. } => r.message().to_string(),
            })
        })
        .execute()
        .map_err(|message| warning!("syncguard worker: {what} failed: {message}"))
        .ok();
    // SAFETY: see above; an error left the transaction for us to abort.
    unsafe {
        if result.is_some() {
            pg_sys::PopActiveSnapshot();
            pg_sys::CommitTransactionCommand();
        } else {
            pg_sys::AbortCurrentTransaction();
        }
        pg_sys::pgstat_report_stat(true);
        pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_IDLE, std::ptr::null());
    }
    result
}

#[cfg(test)]
mod tests {
    use super::round_robin;

    #[test]
    fn owners_take_turns() {
        let due = [
            ("a1", "a"),
            ("a2", "a"),
            ("a3", "a"),
            ("b1", "b"),
            ("c1", "c"),
            ("b2", "b"),
        ]
        .map(|(n, o)| (Some(n.to_string()), Some(o.to_string())))
        .to_vec();
        let order: Vec<String> = round_robin(due).into_iter().map(|(n, _)| n).collect();
        assert_eq!(order, ["a1", "b1", "c1", "a2", "b2", "a3"]);
    }
}
