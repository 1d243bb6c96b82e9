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

/// Raises ERROR with this SQLSTATE, message and optional hint.
pub fn raise(code: PgSqlErrorCode, message: String, hint: Option<&str>) -> ! {
    let mut report = ErrorReport::new(code, message, "syncguard");
    if let Some(h) = hint {
        report = report.set_hint(h);
    }
    report.report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
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

/// The parts of an `SGnnn` error, built where the condition is found and
/// raised by [`raise_own`] once nothing with a destructor is left on the stack.
pub struct OwnError {
    pub code: c_int,
    pub message: String,
    pub detail: String,
    pub hint: &'static str,
}

/// Raises an `SGnnn` error. The server longjmps to its error handler from
/// here, past the Rust frames above: call it only where they own nothing
/// that must be dropped (the texts are copied into palloc'd memory first).
pub fn raise_own(e: OwnError) -> ! {
    let text = |s: String| {
        let c = CString::new(s.replace('\0', " ")).unwrap_or_default();
        // SAFETY: pstrdup copies into the current memory context.
        unsafe { pg_sys::pstrdup(c.as_ptr()) }
    };
    let (message, detail, hint) = (text(e.message), text(e.detail), text(e.hint.to_string()));
    let fmt = c"%s".as_ptr();
    // SAFETY: the ereport protocol: errstart(ERROR) always returns true and
    // errfinish does not return. Every argument is a NUL-terminated palloc'd
    // string passed through "%s", never as a format.
    unsafe {
        unguarded::errstart(PgLogLevel::ERROR as c_int, std::ptr::null());
        unguarded::errcode(e.code);
        unguarded::errmsg_internal(fmt, message);
        unguarded::errdetail_internal(fmt, detail);
        unguarded::errhint(fmt, hint);
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
