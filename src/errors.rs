//! Raising errors with an explicit SQLSTATE, including the extension's own
//! `SGnnn` codes.
//!
//! pgrx's `ErrorReport` knows only PostgreSQL's predefined SQLSTATEs, and an
//! error raised inside a pgrx-guarded call to the server comes back with any
//! other code turned into XX000. So the `SGnnn` errors are raised with the
//! server's own `ereport` calls, declared here without pgrx's guard, and the
//! statements that may raise codes pgrx does not know (user triggers, our
//! own checks) run through [`spi_execute_plan`], also unguarded.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use std::ffi::{c_char, c_int, c_long, CString};

/// An error for the client: its SQLSTATE, message, and optional detail and
/// hint. Every error syncguard raises is one of these, raised by
/// [`SqlError::raise`]; code that finds a condition deep in a call returns
/// it, and the SQL entry point raises it.
pub struct SqlError {
    pub code: SqlState,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

/// A SQLSTATE: one of PostgreSQL's, or one of the extension's own `SGnnn`
/// (built with [`sqlstate`]), which pgrx's error reports cannot carry.
#[derive(Clone, Copy)]
pub enum SqlState {
    Pg(PgSqlErrorCode),
    Own(c_int),
}

impl SqlError {
    pub fn new(code: PgSqlErrorCode, message: String) -> Self {
        SqlError {
            code: SqlState::Pg(code),
            message,
            detail: None,
            hint: None,
        }
    }

    pub fn own(code: c_int, message: String) -> Self {
        SqlError {
            code: SqlState::Own(code),
            message,
            detail: None,
            hint: None,
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Raises the error. PostgreSQL's codes go through pgrx, which unwinds
    /// the Rust frames; the extension's own are raised with the server's
    /// ereport, which longjmps past them: raise those only where the frames
    /// above own nothing that must be dropped (the texts are copied into
    /// palloc'd memory first).
    pub fn raise(self) -> ! {
        match self.code {
            SqlState::Pg(code) => {
                let mut report = ErrorReport::new(code, self.message, "syncguard");
                if let Some(d) = self.detail {
                    report = report.set_detail(d);
                }
                if let Some(h) = self.hint {
                    report = report.set_hint(h);
                }
                report.report(PgLogLevel::ERROR);
                unreachable!("ERROR does not return")
            }
            SqlState::Own(code) => raise_unguarded(code, self.message, self.detail, self.hint),
        }
    }
}

/// Raises ERROR with this SQLSTATE, message and optional hint: the short
/// form of [`SqlError::raise`].
pub fn raise(code: PgSqlErrorCode, message: String, hint: Option<&str>) -> ! {
    SqlError {
        hint: hint.map(str::to_string),
        ..SqlError::new(code, message)
    }
    .raise()
}

/// PostgreSQL's MAKE_SQLSTATE.
const fn sqlstate(code: &[u8; 5]) -> c_int {
    let mut v = 0;
    let mut i = 0;
    while i < 5 {
        v |= ((code[i] - b'0') as c_int & 0x3F) << (6 * i);
        i += 1;
    }
    v
}

/// SG001: an idempotency key was used for another request.
pub const KEY_REUSED: c_int = sqlstate(b"SG001");
/// SG003: a write's version is not newer than the stored row's.
pub const VERSION_CONFLICT: c_int = sqlstate(b"SG003");
/// SG004: a last-write-wins timestamp lies too far in the future.
pub const CLOCK_SKEW: c_int = sqlstate(b"SG004");

mod unguarded {
    use super::*;
    extern "C-unwind" {
        pub fn errstart(elevel: c_int, domain: *const c_char) -> bool;
        pub fn errcode(sqlerrcode: c_int) -> c_int;
        pub fn errmsg_internal(fmt: *const c_char, ...) -> c_int;
        pub fn errdetail_internal(fmt: *const c_char, ...) -> c_int;
        pub fn errhint(fmt: *const c_char, ...) -> c_int;
        pub fn errfinish(filename: *const c_char, lineno: c_int, funcname: *const c_char);
        pub fn SPI_execute_plan(
            plan: pg_sys::SPIPlanPtr,
            values: *mut pg_sys::Datum,
            nulls: *const c_char,
            read_only: bool,
            tcount: c_long,
        ) -> c_int;
    }
}

/// The server's ereport for a code pgrx does not know. The strings are
/// moved into palloc'd copies and dropped before the longjmp.
fn raise_unguarded(
    code: c_int,
    message: String,
    detail: Option<String>,
    hint: Option<String>,
) -> ! {
    let text = |s: String| {
        let c = CString::new(s.replace('\0', " ")).unwrap_or_default();
        // SAFETY: pstrdup copies into the current memory context.
        unsafe { pg_sys::pstrdup(c.as_ptr()) }
    };
    let message = text(message);
    let detail = detail.map(text);
    let hint = hint.map(text);
    let fmt = c"%s".as_ptr();
    // SAFETY: the ereport protocol: errstart(ERROR) always returns true and
    // errfinish does not return. Every argument is a NUL-terminated palloc'd
    // string passed through "%s", never as a format.
    unsafe {
        unguarded::errstart(PgLogLevel::ERROR as c_int, std::ptr::null());
        unguarded::errcode(code);
        unguarded::errmsg_internal(fmt, message);
        if let Some(d) = detail {
            unguarded::errdetail_internal(fmt, d);
        }
        if let Some(h) = hint {
            unguarded::errhint(fmt, h);
        }
        unguarded::errfinish(c"syncguard".as_ptr(), 0, std::ptr::null());
    }
    unreachable!("ERROR does not return")
}

/// `SPI_execute_plan` without pgrx's guard, so an error raised by the
/// statement (a user trigger's own SQLSTATE included) reaches the client
/// unchanged. The server longjmps past the caller's frames on error: the
/// caller must own nothing with a destructor across this call.
///
/// # Safety
/// `plan` is a prepared SPI plan, `values`/`nulls` hold one entry per
/// parameter, and SPI is connected.
pub unsafe fn spi_execute_plan(
    plan: pg_sys::SPIPlanPtr,
    values: *mut pg_sys::Datum,
    nulls: *const c_char,
) -> c_int {
    unsafe { unguarded::SPI_execute_plan(plan, values, nulls, false, 0) }
}

/// A stored jsonb value that does not decode.
pub fn corrupt() -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
        "jsonb value is corrupted".into(),
        None,
    )
}

/// An invalid argument of a call (22023).
pub fn bad_input(message: String) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        message,
        None,
    )
}
