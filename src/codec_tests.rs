//! In-server checks that the pure-Rust jsonb codec agrees with PostgreSQL's own.
//!
//! Every JSON text of a corpus (hand-picked edge cases plus generated
//! documents) goes through PostgreSQL's `jsonb_in` and through
//! `merge::text::parse`: the datums must be byte-identical, `merge::text::to_text`
//! must print exactly what `jsonb_out` prints, and both sides must reject the
//! same invalid inputs. Numbers get the same treatment against `numeric_in`,
//! `numeric_out` and `numeric_cmp`.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use pgrx::prelude::*;
    use std::ffi::{CStr, CString};

    use crate::merge::jsonb::VARHDRSZ;
    use crate::merge::{numeric, text};

    type PgFn = unsafe fn(pg_sys::FunctionCallInfo) -> pg_sys::Datum;

    /// Calls a PostgreSQL function directly (fmgr's DirectFunctionCallN).
    unsafe fn call(f: PgFn, args: &[pg_sys::Datum]) -> pg_sys::Datum {
        let args: Vec<Option<pg_sys::Datum>> = args.iter().map(|&a| Some(a)).collect();
        pgrx::direct_function_call_as_datum(f, &args).expect("function returned NULL")
    }

    /// The bytes of a (detoasted) varlena datum.
    unsafe fn varlena_bytes(d: pg_sys::Datum) -> Vec<u8> {
        let v = pg_sys::pg_detoast_datum(d.cast_mut_ptr::<pg_sys::varlena>());
        let len = pgrx::varlena::varsize_any(v);
        std::slice::from_raw_parts(v as *const u8, len).to_vec()
    }

    /// A MAXALIGNed palloc'd copy of a datum, as PostgreSQL functions expect.
    fn palloc_copy(bytes: &[u8]) -> pg_sys::Datum {
        unsafe {
            let p = pg_sys::palloc(bytes.len()) as *mut u8;
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len());
            pg_sys::Datum::from(p)
        }
    }

    /// Calls a type input function (`numeric_in` also gets typioparam and
    /// typmod -1); `None` if it raises an error.
    fn call_in(f: PgFn, three_args: bool, s: &str) -> Option<Vec<u8>> {
        let c = CString::new(s).ok()?;
        let c = &c;
        PgTryBuilder::new(|| unsafe {
            let arg = pg_sys::Datum::from(c.as_ptr());
            let d = if three_args {
                call(
                    f,
                    &[arg, pg_sys::Datum::from(0u32), pg_sys::Datum::from(-1i32)],
                )
            } else {
                call(f, &[arg])
            };
            Some(varlena_bytes(d))
        })
        .catch_others(|_| None)
        .execute()
    }

    /// Calls a type output function on a datum.
    fn call_out(f: PgFn, datum: &[u8]) -> String {
        unsafe {
            let d = call(f, &[palloc_copy(datum)]);
            CStr::from_ptr(d.cast_mut_ptr::<std::os::raw::c_char>())
                .to_str()
                .expect("UTF-8 output")
                .to_owned()
        }
    }

    fn pg_jsonb_in(s: &str) -> Option<Vec<u8>> {
        call_in(pg_sys::jsonb_in, false, s)
    }

    fn pg_jsonb_out(datum: &[u8]) -> String {
        call_out(pg_sys::jsonb_out, datum)
    }

    fn pg_numeric_in(s: &str) -> Option<Vec<u8>> {
        call_in(pg_sys::numeric_in, true, s)
    }

    fn pg_numeric_out(datum: &[u8]) -> String {
        call_out(pg_sys::numeric_out, datum)
    }

    fn pg_numeric_cmp(a: &[u8], b: &[u8]) -> i32 {
        unsafe {
            let d = call(pg_sys::numeric_cmp, &[palloc_copy(a), palloc_copy(b)]);
            d.value() as i32
        }
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// The whole check for one JSON text; returns whether PostgreSQL accepted it.
    fn check_json(s: &str) -> bool {
        let ours = text::parse(s);
        let Some(pg) = pg_jsonb_in(s) else {
            assert!(
                ours.is_err(),
                "PostgreSQL rejects {s:?} but text::parse accepts it"
            );
            return false;
        };
        let ours = ours
            .unwrap_or_else(|e| panic!("PostgreSQL accepts {s:?} but text::parse rejects it: {e}"));
        assert_eq!(
            hex(&ours),
            hex(&pg),
            "datum bytes differ for {s:?}\n ours: {:?}\n   pg: {:?}",
            text::to_text(&ours[VARHDRSZ..]),
            pg_jsonb_out(&pg)
        );
        let printed = pg_jsonb_out(&pg);
        assert_eq!(
            text::to_text(&pg[VARHDRSZ..]).as_deref(),
            Ok(printed.as_str()),
            "to_text differs for {s:?}"
        );
        // PostgreSQL reads our bytes back to the same text, and its text parses
        // back to the same bytes.
        assert_eq!(
            pg_jsonb_out(&ours),
            printed,
            "jsonb_out of our datum for {s:?}"
        );
        assert_eq!(
            text::parse(&printed).as_deref(),
            Ok(&pg[..]),
            "re-parse of {printed:?}"
        );
        true
    }

    fn check_number(s: &str) -> bool {
        let ours = numeric::parse(s);
        let Some(pg) = pg_numeric_in(s) else {
            assert!(
                ours.is_none(),
                "numeric_in rejects {s:?} but numeric::parse accepts it"
            );
            return false;
        };
        let ours = ours
            .unwrap_or_else(|| panic!("numeric_in accepts {s:?} but numeric::parse rejects it"));
        assert_eq!(hex(&ours), hex(&pg), "numeric bytes differ for {s:?}");
        let printed = pg_numeric_out(&pg);
        assert_eq!(
            numeric::to_text(&pg).as_deref(),
            Ok(printed.as_str()),
            "numeric::to_text differs for {s:?}"
        );
        true
    }

    use crate::codec_corpus::{json_corpus, number_corpus, Rng};

    #[pg_test]
    fn codec_database_is_utf8() {
        let enc = unsafe { pg_sys::GetDatabaseEncoding() };
        assert_eq!(
            enc,
            pg_sys::pg_enc::PG_UTF8 as i32,
            "the codec tests assume a UTF8 database"
        );
    }

    #[pg_test]
    fn codec_numbers_match_numeric_in_and_out() {
        let mut accepted = 0;
        for s in number_corpus() {
            if check_number(&s) {
                accepted += 1;
            }
        }
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        for _ in 0..5000 {
            if check_number(&rng.number()) {
                accepted += 1;
            }
        }
        assert!(accepted > 5000, "only {accepted} numbers accepted");
    }

    #[pg_test]
    fn codec_numeric_cmp_matches() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut pool: Vec<Vec<u8>> = number_corpus()
            .iter()
            .filter_map(|s| pg_numeric_in(s))
            .collect();
        for _ in 0..300 {
            pool.push(pg_numeric_in(&rng.number()).expect("generated numbers are in range"));
        }
        // Near-equal pairs: same value at different scales.
        for s in [
            "1", "1.0", "1.00", "-0", "0.000", "1e3", "1000.0", "-2.50", "-2.5",
        ] {
            pool.push(pg_numeric_in(s).unwrap());
        }
        for a in &pool {
            for b in &pool {
                let want = pg_numeric_cmp(a, b).cmp(&0);
                assert_eq!(
                    numeric::cmp(a, b),
                    Ok(want),
                    "cmp {} vs {}",
                    pg_numeric_out(a),
                    pg_numeric_out(b)
                );
                let same =
                    want == std::cmp::Ordering::Equal && pg_numeric_out(a) == pg_numeric_out(b);
                assert_eq!(
                    numeric::same(a, b),
                    Ok(same),
                    "same {} vs {}",
                    pg_numeric_out(a),
                    pg_numeric_out(b)
                );
            }
        }
    }

    #[pg_test]
    fn codec_corpus_matches_jsonb_in_and_out() {
        let mut accepted = 0;
        let mut rejected = 0;
        for s in json_corpus() {
            if check_json(&s) {
                accepted += 1;
            } else {
                rejected += 1;
            }
        }
        assert!(
            accepted > 150 && rejected > 30,
            "accepted {accepted}, rejected {rejected}"
        );
    }

    #[pg_test]
    fn codec_generated_documents_match() {
        let mut rng = Rng(0xD1B5_4A32_D192_ED03);
        for _ in 0..3000 {
            let mut s = String::new();
            rng.ws(&mut s);
            rng.value(&mut s, 0);
            rng.ws(&mut s);
            assert!(check_json(&s), "generated document rejected: {s}");
        }
    }

    #[pg_test]
    fn codec_generated_corruptions_are_rejected_alike() {
        // Cut or damage valid documents: both sides must agree on validity,
        // and on the bytes whenever the result is still valid.
        let mut rng = Rng(0x0123_4567_89AB_CDEF);
        let mut both_invalid = 0;
        for _ in 0..2000 {
            let mut s = String::new();
            rng.value(&mut s, 0);
            let mut chars: Vec<char> = s.chars().collect();
            if chars.is_empty() {
                continue;
            }
            let at = rng.below(chars.len() as u64) as usize;
            match rng.below(3) {
                0 => chars.truncate(at),
                1 => {
                    chars.remove(at);
                }
                _ => {
                    const JUNK: &[char] = &[
                        ',', ':', '"', '\\', '[', ']', '{', '}', 'e', '-', '0', '.', ' ',
                    ];
                    chars.insert(at, JUNK[rng.below(JUNK.len() as u64) as usize]);
                }
            }
            let t: String = chars.into_iter().collect();
            if !check_json(&t) {
                both_invalid += 1;
            }
        }
        assert!(
            both_invalid > 500,
            "only {both_invalid} corrupted documents were invalid"
        );
    }

    #[pg_test]
    fn codec_deep_nesting_matches() {
        for depth in [100, 1000, 5000] {
            assert!(check_json(&format!(
                "{}{}",
                "[".repeat(depth),
                "]".repeat(depth)
            )));
            assert!(check_json(&format!(
                "{}1{}",
                "{\"a\": [".repeat(depth),
                "]}".repeat(depth)
            )));
        }
    }
}
