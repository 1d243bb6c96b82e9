//! Invariant checks: the registry, the views, checks, episodes, alerts,
//! templates, entity events and housekeeping, all plpgsql in
//! `sql/invariants.sql`, `sql/invariant_templates.sql`,
//! `sql/entity_events.sql` and `sql/housekeeping.sql` (readable with `\sf`).
//!
//! Rust does the three things plpgsql cannot:
//! - [`invariant_query_text`]: accept exactly one `SELECT` as an invariant's
//!   query (plpgsql's `EXECUTE` would run a second statement hidden after a `;`).
//! - a statement timeout per check: `SET LOCAL statement_timeout` inside a
//!   function changes the setting but not the timer of the statement already
//!   running, so [`invariant_check_enter`] arms the server's statement timer
//!   itself and [`invariant_check_leave`] puts the caller's back.
//! - running the check as the invariant's owner in a security-restricted
//!   context (as `REFRESH MATERIALIZED VIEW` runs as the view's owner), so a
//!   check cannot `SET ROLE` back to the caller: when a superuser or the
//!   background worker runs everybody's checks, each query still has only
//!   its owner's privileges.

use crate::errors::raise;
use pgrx::prelude::*;
use std::cell::Cell;
use std::ffi::{c_int, CStr};

/// The server's timeout API (utils/timeout.h), which pgrx does not bind.
/// None of these raises an error.
mod timeout {
    use std::ffi::c_int;
    /// `STATEMENT_TIMEOUT` of `enum TimeoutId`: the fourth entry from
    /// PostgreSQL 13 to 18.
    pub const STATEMENT_TIMEOUT: c_int = 3;
    extern "C-unwind" {
        pub fn enable_timeout_at(id: c_int, fin_time: i64);
        pub fn disable_timeout(id: c_int, keep_indicator: bool);
        pub fn get_timeout_active(id: c_int) -> bool;
        pub fn get_timeout_finish_time(id: c_int) -> i64;
    }
}

/// What [`invariant_check_enter`] replaced, for [`invariant_check_leave`].
#[derive(Clone, Copy)]
struct Entered {
    user: pg_sys::Oid,
    sec_context: c_int,
    /// When the caller's statement timer was due to fire, if it was running.
    outer_deadline: Option<i64>,
    /// When the timer armed for the check fires.
    deadline: i64,
}

thread_local! {
    static ENTERED: Cell<Option<Entered>> = const { Cell::new(None) };
}

/// Starts running an invariant's check: the statement timer fires after
/// `timeout_ms` (or earlier, when the caller's own statement timeout is due
/// first), and the current user becomes `owner` in a security-restricted
/// context. The caller must have the privileges of `owner`.
///
/// `check_invariants` calls it inside the exception block of one check; an
/// error there rolls the user back with the subtransaction, and the handler
/// calls [`invariant_check_leave`] for the timer.
#[pg_extern(volatile, parallel_unsafe)]
fn invariant_check_enter(owner: pg_sys::Oid, timeout_ms: i32) {
    if ENTERED.get().is_some() {
        raise(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "an invariant check is already running in this session".into(),
            Some("An invariant's query cannot run checks itself."),
        );
    }
    if timeout_ms < 1 {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("invariant check timeout must be at least 1 ms, got {timeout_ms}"),
            None,
        );
    }
    let (mut user, mut sec_context) = (pg_sys::InvalidOid, 0);
    // SAFETY: plain reads and writes of the backend's user state and timer.
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut user, &mut sec_context);
        if owner != user && !pg_sys::has_privs_of_role(user, owner) {
            raise(
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                format!(
                    "permission denied to run a check as role {}",
                    role_name(owner)
                ),
                Some("Checks run as the role that owns the invariant; only that role, its members and superusers run them."),
            );
        }
        let now = pg_sys::GetCurrentTimestamp();
        let outer_deadline = timeout::get_timeout_active(timeout::STATEMENT_TIMEOUT)
            .then(|| timeout::get_timeout_finish_time(timeout::STATEMENT_TIMEOUT));
        let own = now.saturating_add(i64::from(timeout_ms) * 1000);
        let deadline = outer_deadline.map_or(own, |o| o.min(own));
        timeout::enable_timeout_at(timeout::STATEMENT_TIMEOUT, deadline);
        pg_sys::SetUserIdAndSecContext(
            owner,
            sec_context
                | pg_sys::SECURITY_LOCAL_USERID_CHANGE as c_int
                | pg_sys::SECURITY_RESTRICTED_OPERATION as c_int,
        );
        ENTERED.set(Some(Entered {
            user,
            sec_context,
            outer_deadline,
            deadline,
        }));
    }
}

/// Ends what [`invariant_check_enter`] started: the caller's user and
/// statement timer are back. True when the check's time ran out (its
/// timer's deadline has passed). Harmless when no check is running.
#[pg_extern(volatile, parallel_unsafe)]
fn invariant_check_leave() -> bool {
    let Some(e) = ENTERED.take() else {
        return false;
    };
    // SAFETY: restores the state read by invariant_check_enter.
    unsafe {
        pg_sys::SetUserIdAndSecContext(e.user, e.sec_context);
        timeout::disable_timeout(timeout::STATEMENT_TIMEOUT, false);
        if let Some(outer) = e.outer_deadline {
            timeout::enable_timeout_at(timeout::STATEMENT_TIMEOUT, outer);
        }
        pg_sys::GetCurrentTimestamp() >= e.deadline
    }
}

fn role_name(role: pg_sys::Oid) -> String {
    // SAFETY: GetUserNameFromId with noerr returns NULL for an unknown role.
    let name = unsafe { pg_sys::GetUserNameFromId(role, true) };
    if name.is_null() {
        format!("with OID {}", role.to_u32())
    } else {
        // SAFETY: a palloc'd NUL-terminated name.
        unsafe { CStr::from_ptr(name) }
            .to_string_lossy()
            .into_owned()
    }
}

/// The text of the single `SELECT` statement in `query`, without the
/// trailing semicolon and comments around it. A syntax error is the
/// parser's (`42601`); anything but exactly one `SELECT` is `42601` too.
/// STABLE: parsing depends on settings (standard_conforming_strings).
#[pg_extern(stable, strict, parallel_safe)]
fn invariant_query_text(query: &str) -> String {
    let bad = |what: String| -> ! {
        raise(
            PgSqlErrorCode::ERRCODE_SYNTAX_ERROR,
            format!("an invariant query must be one SELECT statement, got {what}"),
            Some("Write one SELECT that returns the violating rows with columns entity and since (timestamptz)."),
        )
    };
    let c = std::ffi::CString::new(query).unwrap_or_else(|_| bad("a NUL byte".into()));
    // SAFETY: raw_parser reads a NUL-terminated string and returns a List of
    // RawStmt nodes (or NIL for an empty string); syntax errors are raised.
    unsafe {
        let list = pg_sys::raw_parser(c.as_ptr(), pg_sys::RawParseMode::RAW_PARSE_DEFAULT);
        let n = if list.is_null() { 0 } else { (*list).length };
        if n != 1 {
            bad(format!("{n} statements"));
        }
        let raw = (*(*list).elements).ptr_value as *mut pg_sys::RawStmt;
        if !pgrx::is_a((*raw).stmt, pg_sys::NodeTag::T_SelectStmt) {
            bad("another kind of statement".into());
        }
        let start = (*raw).stmt_location.max(0) as usize;
        let end = match (*raw).stmt_len {
            0 => query.len(),
            len => start + len as usize,
        };
        query.get(start..end).unwrap_or(query).trim().to_string()
    }
}

extension_sql_file!(
    "../sql/invariants.sql",
    name = "invariants",
    requires = [
        invariant_check_enter,
        invariant_check_leave,
        invariant_query_text
    ]
);
extension_sql_file!(
    "../sql/invariant_templates.sql",
    name = "invariant_templates",
    requires = ["invariants"]
);
extension_sql_file!("../sql/entity_events.sql", name = "entity_events");
extension_sql_file!(
    "../sql/housekeeping.sql",
    name = "housekeeping",
    requires = ["idempotency", "protect", "invariants", "sync"]
);
