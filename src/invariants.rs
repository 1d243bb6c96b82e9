//! Invariant checks: the registry, the views, checks, episodes, alerts,
//! templates, entity events and housekeeping, all plpgsql in
//! `sql/install/invariants.sql`, `sql/install/invariant_templates.sql`,
//! `sql/install/entity_events.sql` and `sql/install/housekeeping.sql` (readable with `\sf`).
//!
//! Rust does the three things plpgsql cannot:
//! - [`invariant_query_text`]: accept exactly one `SELECT` as an invariant's
//!   query (plpgsql's `EXECUTE` would run a second statement hidden after a `;`).
//! - [`invariant_check_run`]: run one check in a sandbox that user code
//!   cannot leave. The switch to the owner and its undo are one Rust code
//!   path with no SQL-callable half: the check runs in a subtransaction of
//!   its own, as the invariant's owner in a security-restricted context (as
//!   `REFRESH MATERIALIZED VIEW` runs as the view's owner, so it cannot `SET
//!   ROLE` back), inside a GUC nest level that is always rolled back (a
//!   setting the owner's code changes, even with `set_config(…, false)`,
//!   does not outlive the check), under a statement timer of its own
//!   (`SET LOCAL statement_timeout` inside a function changes the setting but
//!   not the timer of the statement already running).

use crate::errors::raise;
use crate::settings::MAX_CHECK_TIME;
use pgrx::pg_sys::panic::CaughtError;
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

thread_local! {
    /// True while a check runs in this backend: a check's own query cannot
    /// start another one.
    static RUNNING: Cell<bool> = const { Cell::new(false) };
}

/// The outcome of one check: the violating entities with their `since`, or
/// the error that ended it.
type CheckRow = (
    Option<Vec<String>>,
    Option<Vec<Option<TimestampWithTimeZone>>>,
    Option<String>,
    Option<String>,
);

/// Runs the check of the invariant whose view is
/// `syncguard_invariants.<view_name>` (its `view_name`, which is not always
/// its name: names are per owner) as role `owner`, and returns the violating entities and their `since`, or
/// the SQLSTATE and message of the error that ended it: `57014` when it ran
/// longer than `timeout_ms` (or the caller's own statement timeout, when
/// that is due first). A cancel request from the user is not the check's
/// error and is raised. The caller must have the privileges of `owner`.
#[pg_extern(volatile, parallel_unsafe, name = "_invariant_check_run")]
fn invariant_check_run(
    owner: pg_sys::Oid,
    view_name: &str,
    timeout_ms: i32,
) -> TableIterator<
    'static,
    (
        name!(entities, Option<Vec<String>>),
        name!(sinces, Option<Vec<Option<TimestampWithTimeZone>>>),
        name!(sqlstate, Option<String>),
        name!(error, Option<String>),
    ),
> {
    if RUNNING.get() {
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
    // SAFETY: a plain read of the backend's user state.
    unsafe { pg_sys::GetUserIdAndSecContext(&mut user, &mut sec_context) };
    // SAFETY: a catalog lookup that raises nothing for an unknown role.
    if owner != user && !unsafe { pg_sys::has_privs_of_role(user, owner) } {
        raise(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("permission denied to run a check as role {}", role_name(owner)),
            Some("Checks run as the role that owns the invariant; only that role, its members and superusers run them."),
        );
    }
    let sql = format!(
        "SELECT coalesce(array_agg(d.entity), '{{}}'), coalesce(array_agg(d.since), '{{}}')
           FROM (SELECT coalesce(v.entity::text, '(null)') AS entity, min(v.since) AS since
                   FROM syncguard_invariants.{} AS v GROUP BY 1) AS d",
        pgrx::spi::quote_identifier(view_name)
    );
    let row = {
        let _running = Running::start();
        sandboxed(owner, user, sec_context, timeout_ms, &sql)
    };
    match row {
        Ok(row) => TableIterator::once(row),
        Err(e) => e.rethrow(),
    }
}

/// Marks a check as running until dropped, on every path out.
struct Running;

impl Running {
    fn start() -> Self {
        RUNNING.set(true);
        Running
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.set(false);
    }
}

/// The check's statement in its sandbox. Every path out restores the
/// caller's user, settings and statement timer before anything else runs.
/// Err: what the caller must raise (a cancel request, or a panic of ours).
fn sandboxed(
    owner: pg_sys::Oid,
    user: pg_sys::Oid,
    sec_context: c_int,
    timeout_ms: i32,
    sql: &str,
) -> Result<CheckRow, CaughtError> {
    // SAFETY: the subtransaction protocol of PL/pgSQL's exception blocks:
    // begin, then release on success or roll back on error, each time
    // returning to the caller's memory context and resource owner. The
    // rollback also restores the user and the GUC nest levels opened inside.
    unsafe {
        let cxt = pg_sys::CurrentMemoryContext;
        let resowner = pg_sys::CurrentResourceOwner;
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(cxt);

        let now = pg_sys::GetCurrentTimestamp();
        let outer_deadline = timeout::get_timeout_active(timeout::STATEMENT_TIMEOUT)
            .then(|| timeout::get_timeout_finish_time(timeout::STATEMENT_TIMEOUT));
        let own = now.saturating_add(i64::from(timeout_ms.min(MAX_CHECK_TIME.get())) * 1000);
        let deadline = outer_deadline.map_or(own, |o| o.min(own));
        pg_sys::SetUserIdAndSecContext(
            owner,
            sec_context
                | pg_sys::SECURITY_LOCAL_USERID_CHANGE as c_int
                | pg_sys::SECURITY_RESTRICTED_OPERATION as c_int,
        );
        let nest = pg_sys::NewGUCNestLevel();
        timeout::enable_timeout_at(timeout::STATEMENT_TIMEOUT, deadline);

        let result = PgTryBuilder::new(|| {
            Ok(
                Spi::get_two::<Vec<String>, Vec<Option<TimestampWithTimeZone>>>(sql)
                    .unwrap_or_else(|e| {
                        raise(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, e.to_string(), None)
                    }),
            )
        })
        .catch_others(|e| Err(caught(e)))
        .execute();

        timeout::disable_timeout(timeout::STATEMENT_TIMEOUT, false);
        if let Some(outer) = outer_deadline {
            timeout::enable_timeout_at(timeout::STATEMENT_TIMEOUT, outer);
        }
        let timed_out = pg_sys::GetCurrentTimestamp() >= deadline;
        match result {
            Ok((entities, sinces)) => {
                pg_sys::AtEOXact_GUC(false, nest);
                pg_sys::SetUserIdAndSecContext(user, sec_context);
                pg_sys::ReleaseCurrentSubTransaction();
                pg_sys::MemoryContextSwitchTo(cxt);
                pg_sys::CurrentResourceOwner = resowner;
                Ok((entities, sinces, None, None))
            }
            Err(failure) => {
                pg_sys::MemoryContextSwitchTo(cxt);
                pg_sys::RollbackAndReleaseCurrentSubTransaction();
                pg_sys::MemoryContextSwitchTo(cxt);
                pg_sys::CurrentResourceOwner = resowner;
                pg_sys::SetUserIdAndSecContext(user, sec_context);
                match failure {
                    // Not the check's timer: the user asked to cancel.
                    Failure::Error(e, sqlstate, _) if sqlstate == "57014" && !timed_out => Err(e),
                    Failure::Error(_, sqlstate, message) => {
                        Ok((None, None, Some(sqlstate), Some(message)))
                    }
                    Failure::Panic(e) => Err(e),
                }
            }
        }
    }
}

enum Failure {
    /// An error the check raised, with its SQLSTATE and message.
    Error(CaughtError, String, String),
    /// An error of our own (SPI's, or a panic): not the check's fault.
    Panic(CaughtError),
}

fn caught(e: CaughtError) -> Failure {
    match &e {
        CaughtError::PostgresError(r) => {
            let (code, message) = (
                sqlstate_text(r.sql_error_code() as c_int),
                r.message().to_string(),
            );
            Failure::Error(e, code, message)
        }
        _ => Failure::Panic(e),
    }
}

/// The five characters of a SQLSTATE packed by PostgreSQL's MAKE_SQLSTATE.
fn sqlstate_text(code: c_int) -> String {
    (0..5)
        .map(|i| char::from(b'0' + ((code >> (6 * i)) & 0x3F) as u8))
        .collect()
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

/// The text of the single `SELECT` statement in `query`, with the comments
/// before it, without the trailing semicolon and what follows it. A syntax error is the
/// parser's (`42601`); anything but exactly one `SELECT` is `42601` too.
/// STABLE: parsing depends on settings (standard_conforming_strings).
#[pg_extern(stable, strict, parallel_safe, name = "_invariant_query_text")]
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
        // WITH x AS (INSERT … RETURNING …) SELECT … is a SelectStmt too.
        let with = (*((*raw).stmt as *mut pg_sys::SelectStmt)).withClause;
        if !with.is_null() && !(*with).ctes.is_null() {
            let ctes = &*(*with).ctes;
            for k in 0..ctes.length as usize {
                let cte = (*ctes.elements.add(k)).ptr_value as *mut pg_sys::CommonTableExpr;
                if !pgrx::is_a((*cte).ctequery, pg_sys::NodeTag::T_SelectStmt) {
                    bad("a data-modifying WITH".into());
                }
            }
        }
        // From the start of the text: before the one statement there can be
        // only whitespace and comments, which are kept as written (the
        // statement's location skips a leading comment from PostgreSQL 18 on).
        let start = (*raw).stmt_location.max(0) as usize;
        let end = match (*raw).stmt_len {
            0 => query.len(),
            len => start + len as usize,
        };
        query.get(..end).unwrap_or(query).trim().to_string()
    }
}
