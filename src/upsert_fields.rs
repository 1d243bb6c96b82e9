//! `merge_upsert` called with its key and data built by `jsonb_build_object`
//! in the statement (`merge_upsert('t', jsonb_build_object('id', $1),
//! jsonb_build_object('data', $2))`): the planner support function of
//! `merge_upsert` rewrites the call into `_merge_upsert_fields`, which takes
//! the column names as constant arrays and the values as they are, so no
//! jsonb object is built only to be taken apart again.
//!
//! The rewrite must not change what the call does. It applies only when
//! every name is a constant and every value is NULL or of a type whose
//! trip through jsonb gives back the same value (`DIRECT`); at run time a
//! value goes in as it is only if its column takes exactly its type without
//! a typmod, or an integer widened to bigint; any other call builds the two
//! objects with jsonb_build_object itself and takes merge_upsert's path.

use crate::errors::{bad_input, raise};
use crate::jsonb_arg::JsonbRaw;
use crate::merge::jsonb::key_cmp;
use crate::regclass::RegClass;
use crate::table_info::Kind;
use crate::upsert::{
    execute_or_raise, names_of, plan_for, require_key, require_target, upsert_objects,
};
use crate::upsert_row::root_item;
use crate::upsert_statement::param_type;
use crate::upsert_values::key_is_null;
use pgrx::array::RawArray;
use pgrx::prelude::*;
use std::cell::Cell;
use std::ffi::CString;

/// Types whose values a rewritten call passes as they are (and unknown, a
/// literal, for a text column).
const DIRECT: [pg_sys::Oid; 12] = [
    pg_sys::BOOLOID,
    pg_sys::INT2OID,
    pg_sys::INT4OID,
    pg_sys::INT8OID,
    pg_sys::NUMERICOID,
    pg_sys::TEXTOID,
    pg_sys::VARCHAROID,
    pg_sys::JSONBOID,
    pg_sys::UUIDOID,
    pg_sys::DATEOID,
    pg_sys::TIMESTAMPOID,
    pg_sys::TIMESTAMPTZOID,
];

/// The elements of a List of pointers.
unsafe fn list_items<T>(list: *mut pg_sys::List) -> &'static [*mut T] {
    if list.is_null() {
        return &[];
    }
    // SAFETY: a pointer List's cells hold its elements' pointers in order.
    unsafe {
        std::slice::from_raw_parts((*list).elements as *const *mut T, (*list).length as usize)
    }
}

unsafe fn is_a(node: *mut pg_sys::Node, tag: pg_sys::NodeTag) -> bool {
    // SAFETY: every Node starts with its tag.
    !node.is_null() && unsafe { (*node).type_ } == tag
}

/// The names (constant text) and value expressions of a
/// `jsonb_build_object(name, value, …)` call the rewrite can take apart.
unsafe fn object_fields(
    node: *mut pg_sys::Node,
) -> Option<(Vec<*mut pg_sys::Node>, Vec<*mut pg_sys::Node>)> {
    // SAFETY: nodes of the planner's expression tree, read as their tags say.
    unsafe {
        if !is_a(node, pg_sys::NodeTag::T_FuncExpr) {
            return None;
        }
        let f = node as *mut pg_sys::FuncExpr;
        match u32::from((*f).funcid) {
            pg_sys::F_JSONB_BUILD_OBJECT_ if list_items::<pg_sys::Node>((*f).args).is_empty() => {
                return Some((vec![], vec![]))
            }
            pg_sys::F_JSONB_BUILD_OBJECT_ANY if !(*f).funcvariadic => {}
            _ => return None,
        }
        let args = list_items::<pg_sys::Node>((*f).args);
        if !args.len().is_multiple_of(2) {
            return None;
        }
        let (mut names, mut values) = (vec![], vec![]);
        for pair in args.chunks(2) {
            // A name is a literal (text, or unknown for a bare 'name').
            let name = pair[0] as *mut pg_sys::Const;
            if !is_a(pair[0], pg_sys::NodeTag::T_Const)
                || !matches!((*name).consttype, pg_sys::TEXTOID | pg_sys::UNKNOWNOID)
                || (*name).constisnull
            {
                return None;
            }
            let value = pair[1];
            let null = is_a(value, pg_sys::NodeTag::T_Const)
                && (*(value as *mut pg_sys::Const)).constisnull;
            let typ = pg_sys::exprType(value);
            if !null && !DIRECT.contains(&typ) && typ != pg_sys::UNKNOWNOID {
                return None;
            }
            names.push(pair[0]);
            values.push(value);
        }
        Some((names, values))
    }
}

/// A `text[]` constant of the names.
unsafe fn names_array(names: &[*mut pg_sys::Node]) -> *mut pg_sys::Node {
    // SAFETY: the names are non-NULL text constants (object_fields).
    unsafe {
        let mut datums: Vec<pg_sys::Datum> = names
            .iter()
            .map(|&n| {
                let c = n as *mut pg_sys::Const;
                if (*c).consttype == pg_sys::UNKNOWNOID {
                    pg_sys::Datum::from(pg_sys::cstring_to_text((*c).constvalue.cast_mut_ptr()))
                } else {
                    (*c).constvalue
                }
            })
            .collect();
        let array = pg_sys::construct_array(
            datums.as_mut_ptr(),
            datums.len() as i32,
            pg_sys::TEXTOID,
            -1,
            false,
            pg_sys::TYPALIGN_INT as std::ffi::c_char,
        );
        pg_sys::makeConst(
            pg_sys::TEXTARRAYOID,
            -1,
            pg_sys::InvalidOid,
            -1,
            pg_sys::Datum::from(array),
            false,
            false,
        ) as *mut pg_sys::Node
    }
}

/// A function of merge_upsert's schema, by name and argument types.
unsafe fn sibling(of: pg_sys::Oid, name: &str, args: &[pg_sys::Oid]) -> pg_sys::Oid {
    // SAFETY: catalog lookups; missing_ok gives InvalidOid for none.
    unsafe {
        let nsp = pg_sys::get_namespace_name(pg_sys::get_func_namespace(of));
        if nsp.is_null() {
            return pg_sys::InvalidOid;
        }
        let name = CString::new(name).unwrap();
        let mut list = pg_sys::lappend(std::ptr::null_mut(), pg_sys::makeString(nsp).cast());
        list = pg_sys::lappend(
            list,
            pg_sys::makeString(pg_sys::pstrdup(name.as_ptr())).cast(),
        );
        pg_sys::LookupFuncName(list, args.len() as i32, args.as_ptr(), true)
    }
}

/// merge_upsert's planner support function: see the module's comment.
///
/// # Safety
/// Called by the planner with a valid `fcinfo` whose argument is a
/// support request.
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn merge_upsert_support_wrapper(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: the request and its call expression, as the planner passes them.
    unsafe {
        let none = pg_sys::Datum::from(0);
        let req = (*fcinfo).args.as_slice(1)[0]
            .value
            .cast_mut_ptr::<pg_sys::Node>();
        if !is_a(req, pg_sys::NodeTag::T_SupportRequestSimplify) {
            return none;
        }
        let call = (*(req as *mut pg_sys::SupportRequestSimplify)).fcall;
        let args = list_items::<pg_sys::Node>((*call).args);
        if args.len() != 4 {
            return none;
        }
        let (Some((key_names, key_values)), Some((data_names, data_values))) =
            (object_fields(args[1]), object_fields(args[2]))
        else {
            return none;
        };
        if key_names.is_empty() {
            return none;
        }
        let fields = sibling(
            (*call).funcid,
            "_merge_upsert_fields",
            &[
                pg_sys::REGCLASSOID,
                pg_sys::TEXTARRAYOID,
                pg_sys::TEXTARRAYOID,
                pg_sys::ANYOID,
            ],
        );
        if fields == pg_sys::InvalidOid {
            return none;
        }
        let mut list = std::ptr::null_mut();
        let parts = [args[0], names_array(&key_names), names_array(&data_names)];
        for node in parts
            .into_iter()
            .chain(key_values)
            .chain(data_values)
            .chain([args[3]])
        {
            list = pg_sys::lappend(list, node.cast());
        }
        let expr = pg_sys::makeFuncExpr(
            fields,
            pg_sys::JSONBOID,
            list,
            pg_sys::InvalidOid,
            (*call).inputcollid,
            pg_sys::CoercionForm::COERCE_EXPLICIT_CALL,
        );
        (*expr).location = (*call).location;
        pg_sys::Datum::from(expr)
    }
}

crate::finfo_v1!(pg_finfo_merge_upsert_support_wrapper);

thread_local! {
    /// `_merge_upsert_fields`'s OID and merge_upsert's, found once.
    static MERGE_UPSERT: Cell<(pg_sys::Oid, pg_sys::Oid)> =
        const { Cell::new((pg_sys::InvalidOid, pg_sys::InvalidOid)) };
}

/// A rewritten call runs as merge_upsert: with the caller's right to it.
unsafe fn check_execute(fields: pg_sys::Oid) {
    // SAFETY: catalog lookups of existing functions.
    unsafe {
        let (cached_for, mut upsert) = MERGE_UPSERT.get();
        if cached_for != fields
            || !pg_sys::SearchSysCacheExists(
                pg_sys::SysCacheIdentifier::PROCOID as i32,
                pg_sys::Datum::from(upsert),
                0.into(),
                0.into(),
                0.into(),
            )
        {
            upsert = sibling(
                fields,
                "merge_upsert",
                &[
                    pg_sys::REGCLASSOID,
                    pg_sys::JSONBOID,
                    pg_sys::JSONBOID,
                    pg_sys::JSONBOID,
                ],
            );
            if upsert == pg_sys::InvalidOid {
                raise(
                    PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                    "_merge_upsert_fields: merge_upsert(regclass, jsonb, jsonb, jsonb) is missing from its schema".into(),
                    Some("Update or reinstall the extension: ALTER EXTENSION syncguard UPDATE."),
                );
            }
            MERGE_UPSERT.set((fields, upsert));
        }
        let user = pg_sys::GetUserId();
        #[cfg(feature = "pg15")]
        let ok = pg_sys::pg_proc_aclcheck(upsert, user, pg_sys::ACL_EXECUTE as _);
        #[cfg(not(feature = "pg15"))]
        let ok = pg_sys::object_aclcheck(
            pg_sys::ProcedureRelationId,
            upsert,
            user,
            pg_sys::ACL_EXECUTE as _,
        );
        if ok != pg_sys::AclResult::ACLCHECK_OK {
            pg_sys::aclcheck_error(
                ok,
                pg_sys::ObjectType::OBJECT_FUNCTION,
                c"merge_upsert".as_ptr(),
            );
        }
    }
}

extern "C-unwind" {
    /// Called without pgrx's guard (which costs more than the lookup): it
    /// reads the type of an argument of the call's expression and raises no
    /// error for the expressions a call has.
    fn get_fn_expr_argtype(flinfo: *mut pg_sys::FmgrInfo, argnum: std::ffi::c_int) -> pg_sys::Oid;
}

/// One argument of the call: its value and type.
#[derive(Clone, Copy)]
struct Arg {
    value: pg_sys::Datum,
    null: bool,
    typ: pg_sys::Oid,
}

/// The elements of a `text[]` argument, read in place.
unsafe fn text_elements(d: pg_sys::Datum, what: &str) -> Vec<&'static str> {
    // SAFETY: a text[] datum, detoasted; its elements live as long as the
    // call, each a varlena at an int-aligned offset after the previous one.
    unsafe {
        let array = pg_sys::pg_detoast_datum(d.cast_mut_ptr()) as *mut pg_sys::ArrayType;
        let mut raw = RawArray::from_ptr(std::ptr::NonNull::new_unchecked(array));
        if raw.dims().len() > 1 {
            bad_input(format!(
                "_merge_upsert_fields: {what} must be a one-dimensional text[]"
            ));
        }
        let n = raw.len();
        let nulls = raw.nulls().map(|b| b.as_ref());
        let mut at = raw.data::<u8>().as_ptr() as *const u8;
        (0..n)
            .map(|i| {
                if nulls.is_some_and(|b| b[i / 8] & (1 << (i % 8)) == 0) {
                    bad_input(format!("_merge_upsert_fields: {what} must not hold NULL"));
                }
                let t = at as *const pg_sys::varlena;
                let bytes = std::slice::from_raw_parts(
                    pgrx::varlena::vardata_any(t) as *const u8,
                    pgrx::varlena::varsize_any_exhdr(t),
                );
                at = at.add(pgrx::varlena::varsize_any(t));
                at = ((at as usize + 3) & !3) as *const u8;
                // As merge_upsert reads a key of its objects.
                std::str::from_utf8(bytes).unwrap_or_else(|_| crate::errors::corrupt())
            })
            .collect()
    }
}

/// The fields of one object: (name, index of its value), in jsonb's key
/// order, a repeated name keeping its last value, as jsonb_build_object
/// keeps it.
fn fields<'a>(names: &[&'a str], first: usize) -> Vec<(&'a str, usize)> {
    let mut order: Vec<usize> = (0..names.len()).collect();
    order.sort_by(|&a, &b| key_cmp(names[a].as_bytes(), names[b].as_bytes()).then(b.cmp(&a)));
    order.dedup_by(|later, kept| names[*later] == names[*kept]);
    order.into_iter().map(|i| (names[i], first + i)).collect()
}

/// The value of `arg` for a parameter of type `typ` without a typmod, if
/// it goes in as it is: `None` to take merge_upsert's own path.
unsafe fn direct(arg: Arg, typ: pg_sys::Oid, jsonb_column: bool) -> Option<Option<pg_sys::Datum>> {
    if arg.null {
        return Some(None);
    }
    let widened = match (arg.typ, typ) {
        (a, t) if a == t => arg.value,
        (pg_sys::INT4OID, pg_sys::INT8OID) => pg_sys::Datum::from(arg.value.value() as i32 as i64),
        (pg_sys::INT2OID, pg_sys::INT8OID) => pg_sys::Datum::from(arg.value.value() as i16 as i64),
        // A bare literal: jsonb_build_object makes it a JSON string.
        // SAFETY: an unknown-type value is a C string.
        (pg_sys::UNKNOWNOID, pg_sys::TEXTOID | pg_sys::VARCHAROID) => {
            pg_sys::Datum::from(unsafe { pg_sys::cstring_to_text(arg.value.cast_mut_ptr()) })
        }
        _ => return None,
    };
    if jsonb_column {
        // JSON null stores SQL NULL, as merge_upsert reads a data object.
        // SAFETY: a jsonb datum.
        let doc = unsafe { JsonbRaw::from_datum(arg.value, false) }?;
        if root_item(doc.container()).is_null() {
            return Some(None);
        }
        return Some(Some(doc.into_datum()?));
    }
    Some(Some(widened))
}

/// jsonb_build_object of the fields, called as the statement would have.
unsafe fn build_object(names: &[&str], args: &[Arg]) -> JsonbRaw {
    // SAFETY: an fcinfo of 2 × n arguments for jsonb_build_object, whose
    // fn_expr gives their types as the parser would.
    unsafe {
        let mut exprs = std::ptr::null_mut();
        let nargs = 2 * names.len();
        let size = std::mem::size_of::<pg_sys::FunctionCallInfoBaseData>()
            + nargs * std::mem::size_of::<pg_sys::NullableDatum>();
        let fcinfo = pg_sys::palloc0(size) as pg_sys::FunctionCallInfo;
        let slots = (*fcinfo).args.as_mut_slice(nargs);
        for (i, (name, arg)) in names.iter().zip(args).enumerate() {
            let t = CString::new(*name).unwrap_or_default();
            slots[2 * i].value = pg_sys::Datum::from(pg_sys::cstring_to_text(t.as_ptr()));
            slots[2 * i + 1] = pg_sys::NullableDatum {
                value: arg.value,
                isnull: arg.null,
            };
            for typ in [pg_sys::TEXTOID, arg.typ] {
                let c = pg_sys::makeNullConst(typ, -1, pg_sys::InvalidOid);
                exprs = pg_sys::lappend(exprs, c.cast());
            }
        }
        let flinfo =
            pg_sys::palloc0(std::mem::size_of::<pg_sys::FmgrInfo>()) as *mut pg_sys::FmgrInfo;
        let func = pg_sys::Oid::from(pg_sys::F_JSONB_BUILD_OBJECT_ANY);
        pg_sys::fmgr_info(func, flinfo);
        (*flinfo).fn_expr = pg_sys::makeFuncExpr(
            func,
            pg_sys::JSONBOID,
            exprs,
            pg_sys::InvalidOid,
            pg_sys::InvalidOid,
            pg_sys::CoercionForm::COERCE_EXPLICIT_CALL,
        )
        .cast();
        (*fcinfo).flinfo = flinfo;
        (*fcinfo).nargs = nargs as i16;
        let d = ((*flinfo).fn_addr.unwrap())(fcinfo);
        JsonbRaw::from_datum(d, (*fcinfo).isnull).unwrap_or_else(|| crate::errors::corrupt())
    }
}

/// `_merge_upsert_fields(target, key_names, data_names, VARIADIC "any")`:
/// merge_upsert of `jsonb_build_object(key_names[i], value…)` and
/// `jsonb_build_object(data_names[i], value…)`, the values the key's then
/// the data's, and the policy last.
///
/// # Safety
/// Called by PostgreSQL's function manager with a valid `fcinfo`.
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn merge_upsert_fields_wrapper(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: the manager's fcinfo; each argument read as its type says.
    unsafe {
        let flinfo = (*fcinfo).flinfo;
        check_execute((*flinfo).fn_oid);
        let nargs = (*fcinfo).nargs as usize;
        let a = (*fcinfo).args.as_slice(nargs);
        let arg = |i: usize| Arg {
            value: a[i].value,
            null: a[i].isnull,
            typ: get_fn_expr_argtype(flinfo, i as i32),
        };
        if pg_sys::get_fn_expr_variadic(flinfo) || nargs < 4 || a[1].isnull || a[2].isnull {
            bad_input("_merge_upsert_fields: takes target, key names, data names, then each value and the policy".into());
        }
        let key_names = text_elements(a[1].value, "key names");
        let data_names = text_elements(a[2].value, "data names");
        let (nk, nd) = (key_names.len(), data_names.len());
        let policy = arg(nargs - 1);
        if nargs != 4 + nk + nd || (!policy.null && policy.typ != pg_sys::JSONBOID) {
            bad_input(
                "_merge_upsert_fields: takes one value for each name, then the policy (jsonb)"
                    .into(),
            );
        }
        let relid = require_target(RegClass::from_datum(a[0].value, a[0].isnull));
        let policy = JsonbRaw::from_datum(policy.value, policy.null);
        let keys = fields(&key_names, 3);
        let cols = fields(&data_names, 3 + nk);
        let (kn, dn) = (names_of(&keys), names_of(&cols));
        // A column in both objects: merge_upsert compares its two values.
        if !kn.iter().any(|k| dn.contains(k)) {
            require_key(keys.len());
            let plan = plan_for(relid, &kn, &dn, policy.as_ref());
            let mut values = vec![pg_sys::Datum::from(0); plan.params.len()];
            let mut nulls = vec![b'n' as std::ffi::c_char; plan.params.len()];
            let mut all = true;
            for (p, &ci) in plan.params.iter().enumerate() {
                let c = &plan.table.columns[ci];
                let (_, at) = if p < plan.n_key {
                    keys[p]
                } else {
                    *cols.iter().find(|(n, _)| *n == c.name).unwrap()
                };
                let v = if c.typmod == -1 {
                    direct(arg(at), param_type(c), c.kind == Kind::Jsonb)
                } else {
                    None
                };
                match v {
                    Some(Some(d)) => {
                        values[p] = d;
                        nulls[p] = b' ' as std::ffi::c_char;
                    }
                    Some(None) if p < plan.n_key => key_is_null(&c.name),
                    Some(None) => {}
                    None => {
                        all = false;
                        break;
                    }
                }
            }
            if all {
                return returned(fcinfo, execute_or_raise(plan, values, nulls));
            }
        }
        let key_args: Vec<Arg> = (3..3 + nk).map(arg).collect();
        let data_args: Vec<Arg> = (3 + nk..3 + nk + nd).map(arg).collect();
        let key = build_object(&key_names, &key_args);
        let data = build_object(&data_names, &data_args);
        returned(fcinfo, upsert_objects(relid, &key, &data, policy.as_ref()))
    }
}

/// The call's result: the row, or NULL.
unsafe fn returned(fcinfo: pg_sys::FunctionCallInfo, row: Option<JsonbRaw>) -> pg_sys::Datum {
    row.and_then(IntoDatum::into_datum).unwrap_or_else(|| {
        // SAFETY: the manager's fcinfo.
        unsafe { (*fcinfo).isnull = true };
        pg_sys::Datum::from(0)
    })
}

crate::finfo_v1!(pg_finfo_merge_upsert_fields_wrapper);
