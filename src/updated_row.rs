//! The protection trigger's work on one UPDATE, in the order it happens:
//! the new and stored rows deformed once, the protected columns merged, then
//! the conflict rules (a stale write is ignored, a version must grow) and
//! the freshness stamps, and last the tuple the trigger returns. Each step
//! is a method; the datums all point into the trigger's two tuples, which
//! live as long as the trigger call.

use crate::column_merge::{json_to_jsonb, jsonb_to_json, merge_value, MergeOutcome};
use crate::conflict::{self, check_skew, version_error};
use crate::errors::SqlError;
use crate::freshness::stamp;
use crate::jsonb_arg::JsonbRaw;
use crate::protect::{column_name, with_columns};
use crate::protect_config::{Protected, Resolved};
use crate::varlena::raw_bytes;
use pgrx::prelude::*;

pub struct UpdatedRow {
    tuple: pg_sys::HeapTuple,
    tupdesc: pg_sys::TupleDesc,
    /// The row as it will be written (starts as the application's).
    new: (Vec<pg_sys::Datum>, Vec<bool>),
    /// The stored row.
    old: (Vec<pg_sys::Datum>, Vec<bool>),
    /// The application's values, before protection changed them.
    written: (Vec<pg_sys::Datum>, Vec<bool>),
    changed: Vec<bool>,
}

impl UpdatedRow {
    /// Both rows of a BEFORE UPDATE row trigger's call, deformed.
    pub fn deform(td: &pg_sys::TriggerData) -> Self {
        // SAFETY: a BEFORE UPDATE row trigger's data: the relation and both
        // tuples are valid for the call, and each array has one entry per
        // attribute of the tuple descriptor.
        unsafe {
            let tupdesc = (*td.tg_relation).rd_att;
            let natts = (*tupdesc).natts as usize;
            let deform = |tuple| {
                let (mut v, mut n) = (vec![pg_sys::Datum::from(0); natts], vec![false; natts]);
                pg_sys::heap_deform_tuple(tuple, tupdesc, v.as_mut_ptr(), n.as_mut_ptr());
                (v, n)
            };
            let new = deform(td.tg_newtuple);
            UpdatedRow {
                tuple: td.tg_newtuple,
                tupdesc,
                written: new.clone(),
                new,
                old: deform(td.tg_trigtuple),
                changed: vec![false; natts],
            }
        }
    }

    fn set(&mut self, i: usize, value: pg_sys::Datum, null: bool) {
        (self.new.0[i], self.new.1[i], self.changed[i]) = (value, null, true);
    }

    /// Each protected column: a NULL keeps the stored value, a composite
    /// keeps the stored fields it leaves NULL, a document is merged into
    /// the stored one.
    pub fn protect_columns(&mut self, columns: &[Protected]) {
        for p in columns {
            match p {
                Protected::KeepNonNull { attnum } => {
                    let i = attnum - 1;
                    if self.new.1[i] && !self.old.1[i] {
                        self.set(i, self.old.0[i], false);
                    }
                }
                Protected::Record { attnum } => {
                    let i = attnum - 1;
                    if self.new.1[i] && !self.old.1[i] {
                        self.set(i, self.old.0[i], false);
                    } else if !self.new.1[i] && !self.old.1[i] {
                        // SAFETY: two composite datums of this column, valid for the call.
                        let kept = unsafe {
                            crate::composite::keep_stored_fields(self.new.0[i], self.old.0[i])
                        };
                        if let Some(d) = kept {
                            self.set(i, d, false);
                        }
                    }
                }
                Protected::Merge {
                    attnum,
                    policy,
                    nulls_overwrite,
                    json,
                } => self.merge_document(attnum - 1, policy, *nulls_overwrite, *json),
            }
        }
    }

    fn merge_document(
        &mut self,
        i: usize,
        policy: &crate::merge::policy::Policy,
        nulls_overwrite: bool,
        json: bool,
    ) {
        let (new, old) = (
            (self.new.0[i], self.new.1[i]),
            (self.old.0[i], self.old.1[i]),
        );
        if new.1 {
            if !old.1 && !nulls_overwrite {
                self.set(i, old.0, false);
            }
            return;
        }
        // SAFETY: both are datums of this varlena column, valid for the call.
        if !old.1 && unsafe { raw_bytes(new.0) == raw_bytes(old.0) } {
            return;
        }
        let doc = |d: pg_sys::Datum| if json { json_to_jsonb(d) } else { d };
        let stored = (!old.1).then(|| doc(old.0));
        // SAFETY: jsonb datums (json ones converted above).
        match unsafe { merge_value(doc(new.0), stored, policy) } {
            MergeOutcome::AsWritten => {}
            // The stored datum as it is (a TOAST pointer stays one).
            MergeOutcome::Stored => self.set(i, old.0, false),
            MergeOutcome::Value(Some(d)) => {
                self.set(i, if json { jsonb_to_json(d) } else { d }, false)
            }
            MergeOutcome::Value(None) => self.set(i, pg_sys::Datum::from(0), true),
        }
    }

    /// Last-write-wins: a timestamp too far ahead is an error; one older
    /// than the stored one makes the write stale.
    pub fn is_stale(
        &self,
        r: &Resolved,
        table: &str,
        relid: pg_sys::Oid,
    ) -> Result<bool, SqlError> {
        let Some((attnum, skew)) = r.lww else {
            return Ok(false);
        };
        let i = attnum - 1;
        if self.new.1[i] {
            return Ok(false);
        }
        let incoming = self.new.0[i].value() as i64;
        check_skew(incoming, skew, table, &column_name(relid, attnum))?;
        Ok(!self.old.1[i] && conflict::is_stale(incoming, self.old.0[i].value() as i64))
    }

    /// The version the application wrote (before NULL keeping restored the
    /// stored one) must be greater than the stored version.
    pub fn check_version(
        &self,
        r: &Resolved,
        table: &str,
        relid: pg_sys::Oid,
    ) -> Result<(), SqlError> {
        let Some((attnum, typid)) = r.version else {
            return Ok(());
        };
        let i = attnum - 1;
        let incoming =
            (!self.written.1[i]).then(|| conflict::version_value(self.written.0[i], typid));
        let stored = (!self.old.1[i]).then(|| conflict::version_value(self.old.0[i], typid));
        if conflict::version_refused(incoming, stored) {
            return Err(version_error(
                table,
                &column_name(relid, attnum),
                stored,
                incoming,
            ));
        }
        Ok(())
    }

    /// Stamps each companion with the keys its document's write carried.
    /// The stamps are the trigger's to write: a direct write of the
    /// companion (an ORM sends every column) is ignored.
    pub fn stamp_freshness(&mut self, freshness: &[(usize, usize)]) {
        for &(doc, companion) in freshness {
            let (d, f) = (doc - 1, companion - 1);
            self.set(f, self.old.0[f], self.old.1[f]);
            let (pv, pn) = (self.written.0[d], self.written.1[d]);
            // SAFETY: datums of this varlena column, valid for the call.
            if pn || (!self.old.1[d] && unsafe { raw_bytes(pv) == raw_bytes(self.old.0[d]) }) {
                continue;
            }
            // SAFETY: non-NULL jsonb datums of the two columns.
            let (patch, old) = unsafe {
                let old = (!self.old.1[f])
                    .then(|| JsonbRaw::from_datum(self.old.0[f], false))
                    .flatten();
                (JsonbRaw::from_datum(pv, false).unwrap(), old)
            };
            // SAFETY: reads the transaction's start time.
            let at = unsafe { pg_sys::GetCurrentTransactionStartTimestamp() };
            if let Some(d) = stamp(old, patch.container(), at).and_then(JsonbRaw::into_datum) {
                self.set(f, d, false);
            }
        }
    }

    /// The tuple to write, or None when protection changed nothing (the
    /// application's tuple is written as it is).
    pub fn into_tuple<'a>(
        self,
        _td: &'a pg_sys::TriggerData,
    ) -> Option<PgHeapTuple<'a, AllocatedByPostgres>> {
        let cols: Vec<i32> = (0..self.changed.len())
            .filter(|&i| self.changed[i])
            .map(|i| i as i32 + 1)
            .collect();
        if cols.is_empty() {
            return None;
        }
        // SAFETY: the new tuple and its descriptor live for the trigger call.
        Some(unsafe { with_columns(self.tuple, self.tupdesc, &cols, &self.new.0, &self.new.1) })
    }
}
