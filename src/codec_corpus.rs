//! The texts the codec tests feed to PostgreSQL and to the pure-Rust codec:
//! hand-picked edge cases and deterministically generated documents.

/// JSON number texts: the examples every codec must get right, plus the
/// short/long form and overflow boundaries.
pub fn number_corpus() -> Vec<String> {
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
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn digits(&mut self, out: &mut String, n: usize) {
        for _ in 0..n {
            out.push((b'0' + self.below(10) as u8) as char);
        }
    }

    pub fn number(&mut self) -> String {
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

    pub fn string(&mut self) -> String {
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

    pub fn ws(&mut self, out: &mut String) {
        const WS: &[&str] = &["", "", "", " ", "\n", "\t", "\r\n  "];
        out.push_str(WS[self.below(WS.len() as u64) as usize]);
    }

    pub fn value(&mut self, out: &mut String, depth: usize) {
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
                        out.push_str(&format!("\"k{}\"", self.below(if n > 20 { 60 } else { 4 })));
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

pub fn json_corpus() -> Vec<String> {
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
