//! The handshake between `merge_upsert` and the protection trigger: while
//! `merge_upsert` writes a row it has already merged, the trigger leaves it
//! alone instead of merging it a second time.

use pgrx::prelude::*;
use std::cell::RefCell;

thread_local! {
    /// Tables `merge_upsert` is writing right now, with the subtransaction
    /// each write runs in: the protection trigger leaves those rows alone.
    static ACTIVE: RefCell<Vec<(pg_sys::Oid, pg_sys::SubTransactionId)>> = const { RefCell::new(Vec::new()) };
}

/// `merge_upsert` starts writing into `relid` (in the current subtransaction).
pub fn begin(relid: pg_sys::Oid) {
    // SAFETY: reads the current subtransaction's id.
    let subxid = unsafe { pg_sys::GetCurrentSubTransactionId() };
    ACTIVE.with_borrow_mut(|a| a.push((relid, subxid)));
}

/// The write `begin` announced is over (an error instead: the callbacks
/// below forget it).
pub fn end() {
    ACTIVE.with_borrow_mut(|a| a.pop());
}

/// Whether the row being updated in `relid` comes from a `merge_upsert`
/// that already merged it.
pub fn is_merging(relid: pg_sys::Oid) -> bool {
    ACTIVE.with_borrow(|a| a.last().is_some_and(|(r, _)| *r == relid))
}

#[pg_guard]
unsafe extern "C-unwind" fn on_xact(event: pg_sys::XactEvent::Type, _arg: *mut std::ffi::c_void) {
    if event == pg_sys::XactEvent::XACT_EVENT_ABORT
        || event == pg_sys::XactEvent::XACT_EVENT_PARALLEL_ABORT
    {
        ACTIVE.with(|a| a.try_borrow_mut().map(|mut a| a.clear()).ok());
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_subxact(
    event: pg_sys::SubXactEvent::Type,
    my_subid: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    if event == pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB {
        ACTIVE.with(|a| {
            a.try_borrow_mut()
                .map(|mut a| a.retain(|(_, s)| *s < my_subid))
                .ok()
        });
    }
}

pub fn init() {
    // SAFETY: called once from _PG_init; the callbacks only trim ACTIVE,
    // which an error may have left behind (see errors::spi_execute_plan).
    unsafe {
        pg_sys::RegisterXactCallback(Some(on_xact), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(on_subxact), std::ptr::null_mut());
    }
}
