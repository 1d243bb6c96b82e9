//! `idem_claim` and `idem_complete`, the two calls every request makes
//! (docs/idempotency.md): C functions over statements prepared once per
//! backend, where plpgsql's interpreter and the function-level settings a
//! plpgsql function needs cost a claim and its completion about a tenth of
//! a request. The rest of the idempotency log (idem_fail, idem_prune, the
//! lease-lost error) is plpgsql in sql/install/idempotency.sql.
//!
//! Every name in the statements is schema-qualified, operators included, so
//! the caller's search_path cannot redirect them. Errors of the statements
//! reach the client unchanged: they run through [`errors::spi_execute_plan`],
//! and nothing with a destructor lives in a frame that runs one.

use crate::errors::{self, raise, SqlError};
use crate::upsert_statement::quote_literal;
use crate::varlena::{detoasted, payload};
use pgrx::prelude::*;
use sha2::{Digest, Sha256};
use std::cell::Cell;
use std::ffi::{c_char, CStr};

const USECS_PER_DAY: i128 = 86_400_000_000;

// The row a claim writes. Parameters: scope, key, owner, fingerprint,
// token, now, lease, ttl, complete. A claim given `complete` (its work shares
// the transaction) stores the key succeeded with that response at once,
// without a lease.
macro_rules! claim_row_insert {
    () => {
        "
INSERT INTO syncguard.idempotency_keys AS k
       (scope, key, owner_role, fingerprint, status, response, attempts, lease_token,
        lease_expires_at, created_at, updated_at, expires_at)
VALUES ($1, $2, $3, $4,
        CASE WHEN $9 IS NULL THEN 'running'::syncguard.idem_status
             ELSE 'succeeded'::syncguard.idem_status END,
        $9, 1, $5,
        CASE WHEN $9 IS NULL THEN $6 OPERATOR(pg_catalog.+) $7 END,
        $6, $6, $6 OPERATOR(pg_catalog.+) $8)
"
    };
}

// The claim of a new key: the common case, and the cheapest statement.
const INSERT_NEW: &str = concat!(
    claim_row_insert!(),
    "ON CONFLICT ON CONSTRAINT idempotency_keys_pkey DO NOTHING"
);

// The key exists: take it over when its lease expired, its retry is due or
// it expired (a new request), as INSERT_NEW would have written it; otherwise
// change nothing but leave the row locked until the end of the transaction,
// so that CURRENT reads the row that decided the outcome. Same parameters as
// INSERT_NEW.
const TAKE_OVER: &str = concat!(
    claim_row_insert!(),
    "ON CONFLICT ON CONSTRAINT idempotency_keys_pkey DO UPDATE
   SET fingerprint      = excluded.fingerprint,
       status           = excluded.status,
       response         = excluded.response,
       attempts         = CASE WHEN k.expires_at OPERATOR(pg_catalog.<=) $6 THEN 1
                               ELSE k.attempts OPERATOR(pg_catalog.+) 1 END,
       last_error       = CASE WHEN k.expires_at OPERATOR(pg_catalog.<=) $6 OR $9 IS NOT NULL THEN NULL
                               ELSE k.last_error END,
       lease_token      = excluded.lease_token,
       lease_expires_at = excluded.lease_expires_at,
       next_attempt_at  = NULL,
       created_at       = CASE WHEN k.expires_at OPERATOR(pg_catalog.<=) $6 THEN excluded.created_at
                               ELSE k.created_at END,
       updated_at       = excluded.updated_at,
       expires_at       = CASE WHEN k.expires_at OPERATOR(pg_catalog.<=) $6 THEN excluded.expires_at
                               ELSE GREATEST(k.expires_at, excluded.expires_at) END
 WHERE NOT (k.status OPERATOR(pg_catalog.=) 'running' AND k.lease_expires_at OPERATOR(pg_catalog.>) $6)
   AND (k.expires_at OPERATOR(pg_catalog.<=) $6
        OR (k.fingerprint OPERATOR(pg_catalog.=) excluded.fingerprint
            AND (k.status OPERATOR(pg_catalog.=) 'running'
                 OR (k.status OPERATOR(pg_catalog.=) 'failed'
                     AND k.next_attempt_at OPERATOR(pg_catalog.<=) $6))))
RETURNING k.attempts"
);

// The row TAKE_OVER left locked, and what a claim answers from it.
// Parameters: scope, key, owner.
const CURRENT: &str = "
SELECT k.fingerprint, k.status::pg_catalog.text,
       CASE WHEN k.status OPERATOR(pg_catalog.=) 'succeeded' THEN k.response
            WHEN k.status OPERATOR(pg_catalog.<>) 'running'
            THEN pg_catalog.jsonb_build_object('error', k.last_error) END,
       k.attempts,
       CASE WHEN k.status OPERATOR(pg_catalog.=) 'running' THEN k.lease_expires_at
            WHEN k.status OPERATOR(pg_catalog.=) 'failed' THEN k.next_attempt_at END
  FROM syncguard.idempotency_keys AS k
 WHERE k.scope OPERATOR(pg_catalog.=) $1 AND k.key OPERATOR(pg_catalog.=) $2
   AND k.owner_role OPERATOR(pg_catalog.=) $3";

// A fingerprint that leaves volatile fields out. Parameters: request, ignore.
const FINGERPRINT: &str = "SELECT syncguard.request_fingerprint($1, $2)";

// Citus (docs/citus.md): the clock and the user are values, and with the
// scope the UPDATE is planned for one shard. Parameters: token, response,
// now, owner[, scope].
const COMPLETE: &str = "
UPDATE syncguard.idempotency_keys AS k
   SET status = 'succeeded', response = $2, last_error = NULL,
       lease_expires_at = NULL, updated_at = $3
 WHERE k.lease_token OPERATOR(pg_catalog.=) $1 AND k.status OPERATOR(pg_catalog.=) 'running'
   AND k.owner_role OPERATOR(pg_catalog.=) $4";
const COMPLETE_IN_SCOPE: &str = " AND k.scope OPERATOR(pg_catalog.=) $5";

// Raises SG002 with what became of the token's key. Parameters: token, scope.
const LEASE_LOST: &str = "SELECT syncguard._idem_lease_lost($1, 'idem_complete', $2)";

#[derive(Clone, Copy)]
struct Plans {
    insert_new: pg_sys::SPIPlanPtr,
    take_over: pg_sys::SPIPlanPtr,
    current: pg_sys::SPIPlanPtr,
    fingerprint: pg_sys::SPIPlanPtr,
    complete: pg_sys::SPIPlanPtr,
    complete_in_scope: pg_sys::SPIPlanPtr,
    lease_lost: pg_sys::SPIPlanPtr,
}

thread_local! {
    static PLANS: Cell<Option<Plans>> = const { Cell::new(None) };
}

/// The prepared statements; SPI must be connected. A plan follows the
/// table through DDL (the plan cache re-analyzes its text), so it is kept
/// for the life of the backend.
fn plans() -> Plans {
    if let Some(p) = PLANS.with(Cell::get) {
        return p;
    }
    use pg_sys::BuiltinOid as T;
    let claim = [
        T::TEXTOID,
        T::TEXTOID,
        T::TEXTOID,
        T::TEXTOID,
        T::UUIDOID,
        T::TIMESTAMPTZOID,
        T::INTERVALOID,
        T::INTERVALOID,
        T::JSONBOID,
    ];
    let p = Plans {
        insert_new: prepare(INSERT_NEW, &claim),
        take_over: prepare(TAKE_OVER, &claim),
        current: prepare(CURRENT, &claim[..3]),
        fingerprint: prepare(FINGERPRINT, &[T::JSONBOID, T::TEXTARRAYOID]),
        complete: prepare(
            COMPLETE,
            &[T::UUIDOID, T::JSONBOID, T::TIMESTAMPTZOID, T::TEXTOID],
        ),
        complete_in_scope: prepare(
            &format!("{COMPLETE}{COMPLETE_IN_SCOPE}"),
            &[
                T::UUIDOID,
                T::JSONBOID,
                T::TIMESTAMPTZOID,
                T::TEXTOID,
                T::TEXTOID,
            ],
        ),
        lease_lost: prepare(LEASE_LOST, &[T::UUIDOID, T::TEXTOID]),
    };
    PLANS.with(|c| c.set(Some(p)));
    p
}

fn prepare(sql: &str, types: &[pg_sys::BuiltinOid]) -> pg_sys::SPIPlanPtr {
    let sql = std::ffi::CString::new(sql).expect("no NUL in a statement");
    let mut types: Vec<pg_sys::Oid> = types.iter().map(|t| t.value()).collect();
    // SAFETY: SPI is connected; the text and types outlive the call, and
    // SPI_keepplan moves the plan out of SPI's memory.
    unsafe {
        let plan = pg_sys::SPI_prepare(sql.as_ptr(), types.len() as i32, types.as_mut_ptr());
        if plan.is_null() || pg_sys::SPI_keepplan(plan) != 0 {
            raise(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                format!(
                    "syncguard: could not prepare an idempotency statement ({})",
                    { pg_sys::SPI_result }
                ),
                None,
            );
        }
        plan
    }
}

// ---------------------------------------------------------------- idem_claim

/// The arguments of a claim, checked.
struct Claim {
    scope: pg_sys::Datum,
    key: pg_sys::Datum,
    request: pg_sys::Datum,
    lease: pg_sys::Datum,
    ttl: pg_sys::Datum,
    ignore: Option<pg_sys::Datum>,
    /// The response to store at once, for work in the claim's transaction.
    complete: Option<pg_sys::Datum>,
}

/// # Safety
/// Called by PostgreSQL's function manager with a valid `fcinfo`.
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn idem_claim_wrapper(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: the manager's fcinfo, with the seven arguments of the SQL
    // declaration (sql/install/idempotency.sql).
    unsafe {
        let arg = |i| pgrx::fcinfo::pg_getarg_datum(fcinfo, i);
        let (Some(scope), Some(key), Some(request)) = (arg(0), arg(1), arg(2)) else {
            raise(
                PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                "idem_claim: scope, key and request must not be NULL".into(),
                Some("Pass '{}' as the request when it has no body."),
            )
        };
        let claim = Claim {
            scope: detoasted(scope),
            key: detoasted(key),
            request,
            lease: arg(3).unwrap_or(pg_sys::Datum::from(0)),
            ttl: arg(4).unwrap_or(pg_sys::Datum::from(0)),
            ignore: arg(5),
            complete: arg(6),
        };
        check_claim(&claim, arg(3).is_none(), arg(4).is_none());
        let fingerprint = match claim.ignore {
            None => text_datum(&sha256_hex(&request_text(request))),
            Some(_) => pg_sys::Datum::from(0),
        };
        // Made here, in the caller's memory: SPI_finish frees SPI's.
        let answer = claim_key(&claim, fingerprint, random_uuid());
        if let Some(e) = answer.error {
            mismatch(e, &claim).raise()
        }
        result_row(&answer)
    }
}

unsafe fn check_claim(c: &Claim, lease_null: bool, ttl_null: bool) {
    let (key_len, scope_len) = unsafe { (payload(c.key).len(), payload(c.scope).len()) };
    if key_len == 0 {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "idem_claim: key must not be empty".into(),
            Some("Use the idempotency key the client sent, e.g. a UUID."),
        );
    }
    // The primary key's index takes entries of up to about 2.7 kB.
    if key_len > 1000 || scope_len > 200 {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("idem_claim: the key may have at most 1000 bytes and the scope 200, got {key_len} and {scope_len}"),
            Some("Pass a digest of a longer key, e.g. encode(sha256(convert_to(key, 'UTF8')), 'hex')."),
        );
    }
    // Bounded: a key remembered for ever, or a lease that never runs out,
    // is a mistake, not a setting. Compared as PostgreSQL compares
    // intervals ('1 year' is 12 months of 30 days).
    let within = |d: pg_sys::Datum, null: bool, max_days: i128| {
        !null && {
            let span = unsafe { interval_span(d) };
            span > 0 && span <= max_days * USECS_PER_DAY
        }
    };
    if !within(c.lease, lease_null, 1) || !within(c.ttl, ttl_null, 360) {
        let shown = |d: pg_sys::Datum, null: bool| {
            if null {
                "NULL".to_string()
            } else {
                unsafe { output_text(pg_sys::BuiltinOid::INTERVALOID, d) }
            }
        };
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "idem_claim: lease must be positive and at most 1 day, ttl positive and at most 1 year, got lease {} and ttl {}",
                shown(c.lease, lease_null),
                shown(c.ttl, ttl_null)
            ),
            Some("The lease covers one attempt (e.g. '30 seconds'); the ttl how long the key is remembered (e.g. '24 hours')."),
        );
    }
}

/// What a claim answers: outcome, token, response, attempt, retry_at (a
/// NULL is `None`), or the stored fingerprint of another request.
struct Answer {
    outcome: &'static CStr,
    token: Option<pg_sys::Datum>,
    response: Option<pg_sys::Datum>,
    attempt: i32,
    retry_at: Option<pg_sys::Datum>,
    error: Option<Mismatch>,
}

/// The fingerprints of a key used for another request: the stored one and
/// this request's (both text datums).
struct Mismatch {
    stored: pg_sys::Datum,
    this: pg_sys::Datum,
}

/// Runs the claim's statements. Owns nothing with a destructor: a
/// statement's error longjmps past this frame.
unsafe fn claim_key(c: &Claim, fingerprint: pg_sys::Datum, token: pg_sys::Datum) -> Answer {
    unsafe {
        pg_sys::SPI_connect();
        let p = plans();
        let fingerprint = match c.ignore {
            None => fingerprint,
            Some(ignore) => {
                let mut args = [c.request, ignore];
                run(p.fingerprint, &mut args, b"  \0", pg_sys::SPI_OK_SELECT);
                pg_sys::SPI_datumTransfer(value(0).unwrap(), false, -1)
            }
        };
        let me = pg_sys::GetUserNameFromId(pg_sys::GetUserId(), false);
        let mut args = [
            c.scope,
            c.key,
            pg_sys::Datum::from(pg_sys::cstring_to_text(me)),
            fingerprint,
            token,
            pg_sys::Datum::from(pg_sys::GetCurrentTimestamp()),
            c.lease,
            c.ttl,
            c.complete.unwrap_or(pg_sys::Datum::from(0)),
        ];
        let nulls: &[u8] = if c.complete.is_some() {
            b"         \0"
        } else {
            b"        n\0"
        };
        let claimed = |attempt| Answer {
            outcome: c"claimed",
            token: Some(token),
            response: c.complete,
            attempt,
            retry_at: None,
            error: None,
        };
        if run(p.insert_new, &mut args, nulls, pg_sys::SPI_OK_INSERT) == 1 {
            pg_sys::SPI_finish();
            return claimed(1);
        }
        if run(
            p.take_over,
            &mut args,
            nulls,
            pg_sys::SPI_OK_INSERT_RETURNING,
        ) == 1
        {
            let attempt = value(0).unwrap().value() as i32;
            pg_sys::SPI_finish();
            return claimed(attempt);
        }
        // The row is locked by TAKE_OVER until the end of this transaction,
        // so it is still there and cannot change under us.
        if run_by_index(p.current, &mut args[..3], nulls, pg_sys::SPI_OK_SELECT) != 1 {
            pg_sys::SPI_finish();
            raise(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                "idem_claim: the conflicting key was not found".into(),
                None,
            );
        }
        let stored = value(0).unwrap();
        let status = CStr::from_ptr(pg_sys::text_to_cstring(value(1).unwrap().cast_mut_ptr()));
        let answer = Answer {
            outcome: match status.to_bytes() {
                b"succeeded" => c"replay",
                b"running" => c"in_progress",
                b"failed" => c"retry_later",
                _ => c"dead",
            },
            token: None,
            response: value(2).map(|d| pg_sys::SPI_datumTransfer(d, false, -1)),
            attempt: value(3).unwrap().value() as i32,
            retry_at: value(4),
            error: (payload(stored) != payload(fingerprint)).then(|| Mismatch {
                stored: pg_sys::SPI_datumTransfer(stored, false, -1),
                this: fingerprint,
            }),
        };
        pg_sys::SPI_finish();
        answer
    }
}

unsafe fn mismatch(m: Mismatch, c: &Claim) -> SqlError {
    let text = |d| unsafe { String::from_utf8_lossy(payload(d)).into_owned() };
    let head = |s: String| s.chars().take(12).collect::<String>();
    let quoted = |d| quote_literal(&text(d));
    SqlError::own(
        errors::KEY_REUSED,
        format!(
            "idempotency key {} in scope {} was used for a different request",
            quoted(c.key),
            quoted(c.scope)
        ),
    )
    .detail(format!(
        "Stored request fingerprint {}…, this request {}….",
        head(text(m.stored)),
        head(text(m.this))
    ))
    .hint("A retry must send the same request; a new request needs a new key. Pass ignore => ARRAY['field'] to leave volatile fields out of the fingerprint.")
}

unsafe fn result_row(a: &Answer) -> pg_sys::Datum {
    unsafe {
        let parts = [
            Some(pg_sys::Datum::from(pg_sys::cstring_to_text(
                a.outcome.as_ptr(),
            ))),
            a.token,
            a.response,
            Some(pg_sys::Datum::from(a.attempt)),
            a.retry_at,
        ];
        let mut values = parts.map(|v| v.unwrap_or(pg_sys::Datum::from(0)));
        let mut nulls = parts.map(|v| v.is_none());
        let tuple = pg_sys::heap_form_tuple(claim_row(), values.as_mut_ptr(), nulls.as_mut_ptr());
        pgrx::heap_tuple_get_datum(tuple)
    }
}

thread_local! {
    static CLAIM_ROW: Cell<pg_sys::TupleDesc> = const { Cell::new(std::ptr::null_mut()) };
}

/// The row type of idem_claim's OUT parameters, built and registered
/// (blessed) once per backend: get_call_result_type would rebuild it from
/// the catalog on every call.
unsafe fn claim_row() -> pg_sys::TupleDesc {
    let desc = CLAIM_ROW.with(Cell::get);
    if !desc.is_null() {
        return desc;
    }
    use pg_sys::BuiltinOid as T;
    let columns = [
        (c"outcome", T::TEXTOID),
        (c"token", T::UUIDOID),
        (c"response", T::JSONBOID),
        (c"attempt", T::INT4OID),
        (c"retry_at", T::TIMESTAMPTZOID),
    ];
    // SAFETY: built in TopMemoryContext, where the record type cache that
    // BlessTupleDesc registers it in keeps it for the backend's life.
    unsafe {
        let old = pg_sys::MemoryContextSwitchTo(pg_sys::TopMemoryContext);
        let desc = pg_sys::CreateTemplateTupleDesc(columns.len() as i32);
        for (i, (name, typ)) in columns.iter().enumerate() {
            pg_sys::TupleDescInitEntry(desc, i as i16 + 1, name.as_ptr(), typ.value(), -1, 0);
        }
        let desc = pg_sys::BlessTupleDesc(desc);
        pg_sys::MemoryContextSwitchTo(old);
        CLAIM_ROW.with(|c| c.set(desc));
        desc
    }
}

// ------------------------------------------------------------- idem_complete

/// # Safety
/// Called by PostgreSQL's function manager with a valid `fcinfo`.
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn idem_complete_wrapper(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: the manager's fcinfo, with the three arguments of the SQL
    // declaration. Nothing with a destructor is alive below the checks.
    unsafe {
        let arg = |i| pgrx::fcinfo::pg_getarg_datum(fcinfo, i);
        let Some(token) = arg(0) else {
            raise(
                PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                "idem_complete: token must not be NULL".into(),
                Some("Pass the token idem_claim returned with outcome claimed."),
            )
        };
        let response = arg(1);
        let scope = arg(2);
        pg_sys::SPI_connect();
        let p = plans();
        let me = pg_sys::GetUserNameFromId(pg_sys::GetUserId(), false);
        let mut args = [
            token,
            response.unwrap_or(pg_sys::Datum::from(0)),
            pg_sys::Datum::from(pg_sys::GetCurrentTimestamp()),
            pg_sys::Datum::from(pg_sys::cstring_to_text(me)),
            scope.unwrap_or(pg_sys::Datum::from(0)),
        ];
        let nulls = [
            b' ',
            if response.is_some() { b' ' } else { b'n' },
            b' ',
            b' ',
            b' ',
            0,
        ];
        let updated = match scope {
            None => run_by_index(p.complete, &mut args[..4], &nulls, pg_sys::SPI_OK_UPDATE),
            Some(_) => run_by_index(
                p.complete_in_scope,
                &mut args,
                &nulls,
                pg_sys::SPI_OK_UPDATE,
            ),
        };
        if updated == 0 {
            let mut lost = [token, args[4]];
            let lost_nulls = [b' ', if scope.is_some() { b' ' } else { b'n' }, 0];
            run(p.lease_lost, &mut lost, &lost_nulls, pg_sys::SPI_OK_SELECT);
        }
        pg_sys::SPI_finish();
        // void, as PG_RETURN_VOID returns it: a value, not NULL.
        pg_sys::Datum::from(0)
    }
}

// ------------------------------------------------------------------- helpers

/// [`run`], planned with enable_seqscan and enable_bitmapscan off for the
/// statement alone (until the transaction's end when it fails): a
/// statement that finds a key by an index keeps that plan whatever the
/// table held when the plan was made (sql/install/idempotency.sql, "Plans").
unsafe fn run_by_index(
    plan: pg_sys::SPIPlanPtr,
    args: &mut [pg_sys::Datum],
    nulls: &[u8],
    ok: u32,
) -> u64 {
    unsafe {
        let level = pg_sys::NewGUCNestLevel();
        for name in [c"enable_seqscan", c"enable_bitmapscan"] {
            pg_sys::set_config_option(
                name.as_ptr(),
                c"off".as_ptr(),
                pg_sys::GucContext::PGC_USERSET,
                pg_sys::GucSource::PGC_S_SESSION,
                pg_sys::GucAction::GUC_ACTION_SAVE,
                true,
                0,
                false,
            );
        }
        let n = run(plan, args, nulls, ok);
        pg_sys::AtEOXact_GUC(true, level);
        n
    }
}

/// Executes a prepared statement (SPI connected) and returns the rows it
/// processed; any result but `ok` is an internal error.
unsafe fn run(plan: pg_sys::SPIPlanPtr, args: &mut [pg_sys::Datum], nulls: &[u8], ok: u32) -> u64 {
    unsafe {
        let rc = errors::spi_execute_plan(plan, args.as_mut_ptr(), nulls.as_ptr() as *const c_char);
        if rc != ok as i32 {
            pg_sys::SPI_finish();
            raise(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                format!("syncguard: an idempotency statement returned SPI code {rc}"),
                None,
            );
        }
        pg_sys::SPI_processed
    }
}

/// Column `i` of the first row SPI returned; `None` for NULL.
unsafe fn value(i: i32) -> Option<pg_sys::Datum> {
    unsafe {
        let tt = &*pg_sys::SPI_tuptable;
        let mut isnull = false;
        let d = pg_sys::SPI_getbinval(*tt.vals, tt.tupdesc, i + 1, &mut isnull);
        (!isnull).then_some(d)
    }
}

unsafe fn text_datum(s: &str) -> pg_sys::Datum {
    unsafe {
        pg_sys::Datum::from(pg_sys::cstring_to_text_with_len(
            s.as_ptr() as *const c_char,
            s.len() as i32,
        ))
    }
}

/// A value's text through its type's output function.
unsafe fn output_text(typ: pg_sys::BuiltinOid, d: pg_sys::Datum) -> String {
    unsafe {
        let (mut out, mut varlena) = (pg_sys::Oid::INVALID, false);
        pg_sys::getTypeOutputInfo(typ.value(), &mut out, &mut varlena);
        CStr::from_ptr(pg_sys::OidOutputFunctionCall(out, d))
            .to_string_lossy()
            .into_owned()
    }
}

/// `request::text`, converted to UTF-8 as `convert_to(…, 'UTF8')` does.
unsafe fn request_text(request: pg_sys::Datum) -> Vec<u8> {
    unsafe {
        let s = pg_sys::OidOutputFunctionCall(pg_sys::Oid::from(pg_sys::F_JSONB_OUT), request);
        let len = CStr::from_ptr(s).to_bytes().len();
        let utf8 = pg_sys::pg_server_to_any(s, len as i32, pg_sys::pg_enc::PG_UTF8 as i32);
        CStr::from_ptr(utf8).to_bytes().to_vec()
    }
}

/// `encode(sha256(bytes), 'hex')`.
fn sha256_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(64);
    for b in Sha256::digest(bytes) {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 15)] as char);
    }
    s
}

/// The span of an interval as PostgreSQL compares intervals, in
/// microseconds (a month is 30 days).
unsafe fn interval_span(d: pg_sys::Datum) -> i128 {
    unsafe {
        let i = &*(d.cast_mut_ptr::<pg_sys::Interval>());
        i.time as i128 + i.day as i128 * USECS_PER_DAY + i.month as i128 * 30 * USECS_PER_DAY
    }
}

/// Tokens drawn from the operating system's random source 32 at a time: a
/// draw costs a claim a few percent of its instructions, most of it per
/// call, not per byte. Filled in the backend that uses it, never before a
/// fork.
struct RandomPool {
    bytes: [u8; 512],
    used: usize,
}

thread_local! {
    static RANDOM: std::cell::RefCell<RandomPool> =
        const { std::cell::RefCell::new(RandomPool { bytes: [0; 512], used: 512 }) };
}

/// A version 4 UUID, as `gen_random_uuid()` makes it, from the same source.
unsafe fn random_uuid() -> pg_sys::Datum {
    let mut u = [0u8; 16];
    let drawn = RANDOM.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.used == pool.bytes.len() {
            // SAFETY: writes exactly the pool's bytes.
            if !unsafe {
                pg_sys::pg_strong_random(pool.bytes.as_mut_ptr().cast(), pool.bytes.len())
            } {
                return false;
            }
            pool.used = 0;
        }
        let at = pool.used;
        u.copy_from_slice(&pool.bytes[at..at + 16]);
        // Handed out once: wiped, so the pool never holds a token it gave.
        pool.bytes[at..at + 16].fill(0);
        pool.used += 16;
        true
    });
    if !drawn {
        raise(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            "idem_claim: could not generate a random token".into(),
            None,
        );
    }
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    // SAFETY: 16 bytes of palloc'd memory, the representation of a uuid.
    unsafe {
        let p = pg_sys::palloc(16) as *mut u8;
        std::ptr::copy_nonoverlapping(u.as_ptr(), p, 16);
        pg_sys::Datum::from(p)
    }
}

crate::finfo_v1!(pg_finfo_idem_claim_wrapper);

crate::finfo_v1!(pg_finfo_idem_complete_wrapper);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_sha256_in_hex() {
        // FIPS 180-2's example, as encode(sha256('abc'), 'hex') prints it.
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
