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

    /// JSON number texts: the examples every codec must get right, plus the
    /// short/long form and overflow boundaries.
    fn number_corpus() -> Vec<String> {
        let mut v: Vec<String> = [
            "0",
            "-0",
            "-0.0",
            "0.000",
            "0e-5",
            "0e5",
            "0E+99999",
            "0.0e16383",
            "1",
            "-1",
            "1.10",
            "1.50",
            "0.0001",
            "0.00001",
            "-0.5",
            "1e3",
            "1.5e1",
            "1E+2",
            "1e+2",
            "123e-2",
            "123E-5",
            "12.5e-1",
            "1.230e1",
            "0.10e1",
            "100e-2",
            "4e-1",
            "9999",
            "10000",
            "99999999",
            "100000000",
            "-12345.678",
            "12345678901234567890.123456789012345",
            "-12345678901234567890.123456789012345",
            "1e0000000000000000000000003",
            "1e-400",
            "-1e-400",
            "1e1001",
            "1e-1001",
            "1e252",
            "1e253",
            "1e255",
            "1e256",
            "1e-252",
            "1e-255",
            "1e-256",
            "1e-257",
            "1e131071",
            "-9.999e131071",
            "1e131072",
            "1e-16383",
            "1e-16384",
            "0e-16384",
            "1e1073741822",
            "1e1073741823",
            "0e1073741822",
            "0e1073741823",
            "1e99999999999999999999",
            "5e-324",
            "1.7976931348623157e308",
            "-9223372036854775808",
            "18446744073709551616",
            "3.141592653589793238462643383279502884197169399375105820974944592307816406286",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Display scales around the short-form limit (63).
        for n in [62, 63, 64, 65] {
            v.push(format!("0.{}1", "0".repeat(n - 1)));
            v.push(format!("1.{}", "0".repeat(n)));
            v.push(format!("-7.{}5", "1".repeat(n - 1)));
        }
        // Integer digit counts around every NBASE boundary.
        for n in 1..=20 {
            v.push("9".repeat(n));
            v.push(format!("1{}", "0".repeat(n)));
            v.push(format!("0.{}", "9".repeat(n)));
        }
        v
    }

    /// Deterministic xorshift generator.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn digits(&mut self, out: &mut String, n: usize) {
            for _ in 0..n {
                out.push((b'0' + self.below(10) as u8) as char);
            }
        }

        fn number(&mut self) -> String {
            let mut s = String::new();
            if self.below(3) == 0 {
                s.push('-');
            }
            match self.below(4) {
                0 => s.push('0'),
                _ => {
                    s.push((b'1' + self.below(9) as u8) as char);
                    let n = self.below(25) as usize;
                    self.digits(&mut s, n);
                }
            }
            if self.below(2) == 0 {
                s.push('.');
                let n = 1 + self.below(25) as usize;
                self.digits(&mut s, n);
            }
            if self.below(3) == 0 {
                s.push(if self.below(2) == 0 { 'e' } else { 'E' });
                match self.below(3) {
                    0 => s.push('+'),
                    1 => s.push('-'),
                    _ => {}
                }
                let n = 1 + self.below(3) as usize;
                self.digits(&mut s, n);
            }
            s
        }

        fn string(&mut self) -> String {
            const PIECES: &[&str] = &[
                "a",
                "b",
                "key",
                "K",
                "é",
                "中",
                "😀",
                " ",
                "\\\"",
                "\\\\",
                "\\/",
                "\\b",
                "\\f",
                "\\n",
                "\\r",
                "\\t",
                "\\u0001",
                "\\u001F",
                "\\u00e9",
                "\\u4E2D",
                "\\ud83d\\ude00",
                "\\u0041",
                "\u{7f}",
                "'",
            ];
            let mut s = String::from("\"");
            for _ in 0..self.below(6) {
                s.push_str(PIECES[self.below(PIECES.len() as u64) as usize]);
            }
            s.push('"');
            s
        }

        fn ws(&mut self, out: &mut String) {
            const WS: &[&str] = &["", "", "", " ", "\n", "\t", "\r\n  "];
            out.push_str(WS[self.below(WS.len() as u64) as usize]);
        }

        fn value(&mut self, out: &mut String, depth: usize) {
            let kinds = if depth >= 5 { 6 } else { 8 };
            match self.below(kinds) {
                0 => out.push_str("null"),
                1 => out.push_str("true"),
                2 => out.push_str("false"),
                3 | 4 => out.push_str(&self.number()),
                5 => out.push_str(&self.string()),
                6 => {
                    out.push('[');
                    let n = if self.below(8) == 0 {
                        30 + self.below(40)
                    } else {
                        self.below(5)
                    };
                    for i in 0..n {
                        if i > 0 {
                            out.push(',');
                        }
                        self.ws(out);
                        self.value(out, depth + 1);
                        self.ws(out);
                    }
                    out.push(']');
                }
                _ => {
                    out.push('{');
                    let n = if self.below(8) == 0 {
                        30 + self.below(40)
                    } else {
                        self.below(6)
                    };
                    for i in 0..n {
                        if i > 0 {
                            out.push(',');
                        }
                        self.ws(out);
                        // Small key space: duplicates are common.
                        if self.below(3) == 0 {
                            out.push_str(&self.string());
                        } else {
                            out.push_str(&format!(
                                "\"k{}\"",
                                self.below(if n > 20 { 60 } else { 4 })
                            ));
                        }
                        self.ws(out);
                        out.push(':');
                        self.ws(out);
                        self.value(out, depth + 1);
                        self.ws(out);
                    }
                    out.push('}');
                }
            }
        }
    }

    fn wide_object(n: usize) -> String {
        let pairs: Vec<String> = (0..n)
            .map(|i| format!("\"key{}\": {}", (i * 7919) % n, i))
            .collect();
        format!("{{{}}}", pairs.join(", "))
    }

    fn json_corpus() -> Vec<String> {
        let mut v: Vec<String> = [
            "null",
            "true",
            "false",
            "\"\"",
            "\"abc\"",
            "  \t\n\r 42 \n",
            "[]",
            "{}",
            "[ ]",
            "{ }",
            "[[]]",
            "[{}]",
            "[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]",
            r#"{"a":{}}"#,
            r#"[1,2,3]"#,
            r#"{"a":1,"b":[1,2]}"#,
            r#"{"b":1,"a":2}"#,
            r#"{"aa":1,"b":2,"":3}"#,
            r#"{"":""}"#,
            r#"{"a":1,"a":2}"#,
            r#"{"a":1,"b":0,"a":{"x":1},"a":[3]}"#,
            r#"{"a":{"c":1,"c":2},"a":{"d":3,"d":4}}"#,
            r#"{"é":1,"e":2,"f":3,"中":4,"😀":5}"#,
            r#"{"k\n":"v\t"}"#,
            r#""a\"b\\c\/d""#,
            r#""\b\f\n\r\t""#,
            r#""\u0001\u001f\u0020\u007f""#,
            r#""\u00e9\u4e2d\uD83D\uDE00""#,
            r#""\uFFFF\uDBFF\uDFFF""#,
            "\"é中😀\u{7f}\"",
            r#"{"a":{"b":{"c":[true,false,null]}}}"#,
            r#"[{"b":1},{"a":[{}, []]}]"#,
            r#"[1e3, 1.5e1, 1E+2, 123e-2, -0, 1.10, 0.0001, -0.0]"#,
            r#"["x", 1, "yy", 2.5, "zzz", -3, true, [4], {"n": 5}]"#,
            r#"{"n": 12345678901234567890.123456789012345, "m": 1e-400}"#,
            // Invalid: both sides must reject.
            "",
            " ",
            "{",
            "[1,]",
            "[,1]",
            "[1 2]",
            "{\"a\"}",
            "{\"a\":1,}",
            "{a:1}",
            "['a']",
            "\"abc",
            "\"a\nb\"",
            "\"\u{1}\"",
            r#""\x""#,
            r#""\u12""#,
            r#""\U0041""#,
            r#""\u0000""#,
            r#""\uD83D""#,
            r#""\uD83Dx""#,
            r#""\uD83D\n""#,
            r#""\uD83D\uD83D""#,
            r#""\uDE00""#,
            "truex",
            "True",
            "nul",
            "NaN",
            "Infinity",
            "+1",
            ".5",
            "1.",
            "01",
            "-",
            "1e",
            "0x1F",
            "1 2",
            "{} x",
            "[1e131072]",
            "1e-16384",
            "\u{feff}1",
            "\u{c}1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for n in [31, 32, 33, 40, 64, 65, 100, 257] {
            v.push(wide_object(n));
            let elems: Vec<String> = (0..n)
                .map(|i| match i % 5 {
                    0 => format!("{i}"),
                    1 => format!("\"s{i}\""),
                    2 => format!("[{i}, \"x\"]"),
                    3 => format!("{{\"k\": {i}.5}}"),
                    _ => "null".to_string(),
                })
                .collect();
            v.push(format!("[{}]", elems.join(",")));
        }
        // Nested wide objects: offsets inside containers inside containers.
        v.push(format!(
            "{{\"outer\": {}, \"list\": [{}, {}]}}",
            wide_object(45),
            wide_object(33),
            wide_object(70)
        ));
        // Every number of the number corpus inside an array and as a value.
        for n in number_corpus() {
            v.push(format!("[\"pad\", {n}]"));
            v.push(format!("{{\"n\": {n}, \"s\": \"x\"}}"));
        }
        v
    }

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
