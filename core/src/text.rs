//! JSON text to binary jsonb and back, byte for byte as PostgreSQL does it.
//!
//! [`parse`] is `jsonb_in`: the datum it returns is identical to the one
//! PostgreSQL builds for the same text (keys sorted by [`key_cmp`], the last
//! of duplicate keys kept, strings stored unescaped, numbers as `numeric_in`
//! stores them). [`to_text`] is `jsonb_out`. Both walk the input with an
//! explicit stack, so nesting depth is bounded only by memory.
//!
//! The merge engine never goes through text; this module exists for tests,
//! fuzzing and diagnostics.

use super::jsonb::{
    key_cmp, Container, FormatError, Item, Kind, Open, Value, Writer, T_CONTAINER, T_FALSE, T_NULL,
    T_NUMERIC, T_STRING, T_TRUE, VARHDRSZ,
};
use super::numeric;

/// One parsed JSON value; containers refer to their children by index into
/// the arena, so neither building nor dropping the tree recurses.
enum Node {
    Null,
    Bool(bool),
    Str(Vec<u8>),
    Num(Vec<u8>),
    Array(Vec<usize>),
    /// Pairs sorted by key and unique (uniqueifyJsonbObject already applied).
    Object(Vec<(Vec<u8>, usize)>),
}

/// A container still being parsed.
enum Frame {
    Array(Vec<usize>),
    Object(Vec<(Vec<u8>, usize)>, Vec<u8>),
}

struct Lexer<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn err<T>(&self, what: &str) -> Result<T, String> {
        match self.s.get(self.pos) {
            Some(_) => {
                // Show the offending character, not a broken UTF-8 fragment.
                let rest = String::from_utf8_lossy(&self.s[self.pos..]);
                let c = rest.chars().next().unwrap_or('?');
                Err(format!(
                    "invalid JSON at byte {}: {what} (found {c:?})",
                    self.pos
                ))
            }
            None => Err(format!("invalid JSON: {what} (found end of input)")),
        }
    }

    #[inline]
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.s.get(self.pos) {
            self.pos += 1;
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn expect(&mut self, b: u8, what: &str) -> Result<(), String> {
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            self.err(what)
        }
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let mut v = 0u32;
        for _ in 0..4 {
            let d = match self.peek() {
                Some(c @ b'0'..=b'9') => c - b'0',
                Some(c @ b'a'..=b'f') => c - b'a' + 10,
                Some(c @ b'A'..=b'F') => c - b'A' + 10,
                _ => return self.err("\"\\u\" must be followed by four hexadecimal digits"),
            };
            v = v * 16 + d as u32;
            self.pos += 1;
        }
        Ok(v)
    }

    /// A string whose opening quote has been consumed, unescaped
    /// (json_lex_string with de-escaping on).
    fn string(&mut self) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        let mut hi_surrogate: Option<u32> = None;
        loop {
            // Copy the plain run in one go.
            let start = self.pos;
            while let Some(&c) = self.s.get(self.pos) {
                if c == b'"' || c == b'\\' || c < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            if self.pos > start {
                if hi_surrogate.is_some() {
                    return self
                        .err("Unicode high surrogate must not be followed by a non-surrogate");
                }
                out.extend_from_slice(&self.s[start..self.pos]);
            }
            match self.peek() {
                None => return self.err("unterminated string"),
                Some(b'"') => {
                    if hi_surrogate.is_some() {
                        return self
                            .err("Unicode high surrogate must be followed by a low surrogate");
                    }
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let Some(e) = self.peek() else {
                        return self.err("unterminated escape");
                    };
                    if e == b'u' {
                        self.pos += 1;
                        let mut ch = self.hex4()?;
                        if (0xD800..=0xDBFF).contains(&ch) {
                            if hi_surrogate.is_some() {
                                return self.err(
                                    "Unicode high surrogate must not follow a high surrogate",
                                );
                            }
                            hi_surrogate = Some(ch);
                            continue;
                        } else if (0xDC00..=0xDFFF).contains(&ch) {
                            let Some(hi) = hi_surrogate.take() else {
                                return self
                                    .err("Unicode low surrogate must follow a high surrogate");
                            };
                            ch = ((hi & 0x3FF) << 10) + (ch & 0x3FF) + 0x10000;
                        }
                        if hi_surrogate.is_some() {
                            return self
                                .err("Unicode high surrogate must be followed by a low surrogate");
                        }
                        if ch == 0 {
                            return self.err("\\u0000 cannot be converted to text");
                        }
                        let c = char::from_u32(ch).expect("surrogates handled above");
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    } else {
                        if hi_surrogate.is_some() {
                            return self
                                .err("Unicode high surrogate must be followed by a low surrogate");
                        }
                        out.push(match e {
                            b'"' => b'"',
                            b'\\' => b'\\',
                            b'/' => b'/',
                            b'b' => 0x08,
                            b'f' => 0x0C,
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            _ => return self.err("invalid escape sequence"),
                        });
                        self.pos += 1;
                    }
                }
                Some(_) => return self.err("control characters must be escaped"),
            }
        }
    }

    /// A number token; [`numeric::parse`] checks its syntax.
    fn number(&mut self) -> Result<Vec<u8>, String> {
        let start = self.pos;
        while let Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') = self.peek() {
            self.pos += 1;
        }
        let tok = std::str::from_utf8(&self.s[start..self.pos]).expect("ASCII");
        numeric::parse(tok).ok_or_else(|| {
            format!("invalid JSON at byte {start}: bad number or value out of range for numeric: {tok:?}")
        })
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), String> {
        if self.s[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            self.err("invalid token")
        }
    }

    /// An object key: a string, then `:`.
    fn key(&mut self) -> Result<Vec<u8>, String> {
        self.expect(b'"', "expected string as object key")?;
        let k = self.string()?;
        self.skip_ws();
        self.expect(b':', "expected \":\"")?;
        Ok(k)
    }
}

/// Sorts pairs by key and keeps the last value of each duplicated key
/// (uniqueifyJsonbObject).
fn uniqueify(mut pairs: Vec<(Vec<u8>, usize)>) -> Vec<(Vec<u8>, usize)> {
    pairs.sort_by(|a, b| key_cmp(&a.0, &b.0)); // stable: input order within a key
    let mut out: Vec<(Vec<u8>, usize)> = Vec::with_capacity(pairs.len());
    for p in pairs {
        match out.last_mut() {
            Some(last) if last.0 == p.0 => *last = p,
            _ => out.push(p),
        }
    }
    out
}

/// Parses JSON text into an arena; returns the arena and the root's index.
fn parse_tree(json: &str) -> Result<(Vec<Node>, usize), String> {
    let mut lx = Lexer {
        s: json.as_bytes(),
        pos: 0,
    };
    let mut arena: Vec<Node> = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    loop {
        // A value is expected here.
        lx.skip_ws();
        let node = match lx.peek() {
            Some(b'{') => {
                lx.pos += 1;
                lx.skip_ws();
                if lx.peek() == Some(b'}') {
                    lx.pos += 1;
                    Node::Object(Vec::new())
                } else {
                    let k = lx.key()?;
                    stack.push(Frame::Object(Vec::new(), k));
                    continue;
                }
            }
            Some(b'[') => {
                lx.pos += 1;
                lx.skip_ws();
                if lx.peek() == Some(b']') {
                    lx.pos += 1;
                    Node::Array(Vec::new())
                } else {
                    stack.push(Frame::Array(Vec::new()));
                    continue;
                }
            }
            Some(b'"') => {
                lx.pos += 1;
                Node::Str(lx.string()?)
            }
            Some(b'-' | b'0'..=b'9') => Node::Num(lx.number()?),
            Some(b't') => {
                lx.literal(b"true")?;
                Node::Bool(true)
            }
            Some(b'f') => {
                lx.literal(b"false")?;
                Node::Bool(false)
            }
            Some(b'n') => {
                lx.literal(b"null")?;
                Node::Null
            }
            _ => return lx.err("expected JSON value"),
        };
        arena.push(node);
        let mut id = arena.len() - 1;

        // Attach the finished value to its parent, closing every container
        // that ends right after it.
        loop {
            lx.skip_ws();
            match stack.last_mut() {
                None => {
                    if lx.pos != lx.s.len() {
                        return lx.err("expected end of input");
                    }
                    return Ok((arena, id));
                }
                Some(Frame::Array(elems)) => {
                    elems.push(id);
                    match lx.peek() {
                        Some(b',') => {
                            lx.pos += 1;
                            break;
                        }
                        Some(b']') => {
                            lx.pos += 1;
                            let Some(Frame::Array(elems)) = stack.pop() else {
                                unreachable!()
                            };
                            arena.push(Node::Array(elems));
                            id = arena.len() - 1;
                        }
                        _ => return lx.err("expected \",\" or \"]\""),
                    }
                }
                Some(Frame::Object(pairs, key)) => {
                    pairs.push((std::mem::take(key), id));
                    match lx.peek() {
                        Some(b',') => {
                            lx.pos += 1;
                            lx.skip_ws();
                            *key = lx.key()?;
                            break;
                        }
                        Some(b'}') => {
                            lx.pos += 1;
                            let Some(Frame::Object(pairs, _)) = stack.pop() else {
                                unreachable!()
                            };
                            arena.push(Node::Object(uniqueify(pairs)));
                            id = arena.len() - 1;
                        }
                        _ => return lx.err("expected \",\" or \"}\""),
                    }
                }
            }
        }
    }
}

fn push_scalar(w: &mut Writer, o: &mut Open, node: &Node) -> Result<(), String> {
    let item = match node {
        Node::Null => Item {
            ty: T_NULL,
            data: &[],
        },
        Node::Bool(true) => Item {
            ty: T_TRUE,
            data: &[],
        },
        Node::Bool(false) => Item {
            ty: T_FALSE,
            data: &[],
        },
        Node::Str(s) => Item {
            ty: T_STRING,
            data: s,
        },
        Node::Num(n) => Item {
            ty: T_NUMERIC,
            data: n,
        },
        Node::Array(_) | Node::Object(_) => unreachable!("containers are opened, not pushed"),
    };
    w.push_item(o, item).map_err(too_large)
}

fn too_large(e: super::jsonb::WriteError) -> String {
    format!("value too large for jsonb: {e:?}")
}

/// Opens `node` (a container) and writes its keys; values follow.
fn open_container(
    w: &mut Writer,
    node: &Node,
    nested: bool,
) -> Result<(Option<usize>, Open), String> {
    let (kind, count) = match node {
        Node::Array(v) => (Kind::Array, v.len()),
        Node::Object(p) => (Kind::Object, p.len()),
        _ => unreachable!(),
    };
    let (start, mut o) = if nested {
        let (s, o) = w.open_nested(kind, count).map_err(too_large)?;
        (Some(s), o)
    } else {
        (None, w.open(kind, count).map_err(too_large)?)
    };
    if let Node::Object(pairs) = node {
        for (k, _) in pairs {
            w.push_string(&mut o, k).map_err(too_large)?;
        }
    }
    Ok((start, o))
}

/// PostgreSQL's `jsonb_in`: the complete datum (4-byte varlena header
/// included) PostgreSQL stores for this JSON text.
pub fn parse(json: &str) -> Result<Vec<u8>, String> {
    let (arena, root) = parse_tree(json)?;
    let mut w = Writer::with_capacity(json.len() + 16);

    struct Frame {
        node: usize,
        open: Open,
        start: Option<usize>,
        next: usize,
    }
    let child_at = |n: usize, i: usize| -> Option<usize> {
        match &arena[n] {
            Node::Array(v) => v.get(i).copied(),
            Node::Object(p) => p.get(i).map(|p| p.1),
            _ => None,
        }
    };

    let mut stack: Vec<Frame> = Vec::new();
    match &arena[root] {
        n @ (Node::Array(_) | Node::Object(_)) => {
            let (start, open) = open_container(&mut w, n, false)?;
            stack.push(Frame {
                node: root,
                open,
                start,
                next: 0,
            });
        }
        n => {
            let mut o = w.open(Kind::Scalar, 1).map_err(too_large)?;
            push_scalar(&mut w, &mut o, n)?;
        }
    }
    while let Some(top) = stack.last_mut() {
        match child_at(top.node, top.next) {
            Some(c) => {
                top.next += 1;
                match &arena[c] {
                    n @ (Node::Array(_) | Node::Object(_)) => {
                        let (start, open) = open_container(&mut w, n, true)?;
                        stack.push(Frame {
                            node: c,
                            open,
                            start,
                            next: 0,
                        });
                    }
                    n => push_scalar(&mut w, &mut top.open, n)?,
                }
            }
            None => {
                let done = stack.pop().expect("non-empty");
                if let Some(start) = done.start {
                    let parent = stack.last_mut().expect("nested containers have a parent");
                    w.close_nested(&mut parent.open, start, done.open)
                        .map_err(too_large)?;
                }
            }
        }
    }

    let mut out = w.into_inner();
    // A varlena holds at most 1 GB.
    if out.len() > 0x3FFF_FFFF {
        return Err("value too large for jsonb".into());
    }
    let hdr = numeric::varsize_4b(out.len());
    out[..VARHDRSZ].copy_from_slice(&hdr);
    Ok(out)
}

/// escape_json: `\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, other control
/// characters as `\u00xx`; everything else verbatim. Like jsonb_out (which
/// goes through a C string) it stops at a NUL byte, which a valid jsonb
/// string never contains.
fn escape_into(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    for &c in s {
        match c {
            0 => break,
            0x08 => out.extend_from_slice(b"\\b"),
            0x0C => out.extend_from_slice(b"\\f"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            c if c < 0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(c >> 4) as usize]);
                out.push(HEX[(c & 0xF) as usize]);
            }
            c => out.push(c),
        }
    }
    out.push(b'"');
}

fn put_scalar(out: &mut Vec<u8>, item: Item<'_>) -> Result<(), FormatError> {
    match item.value()? {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::String(s) => escape_into(out, s),
        Value::Numeric(n) => out.extend_from_slice(numeric::to_text(n)?.as_bytes()),
        Value::Container(_) => return Err(FormatError),
    }
    Ok(())
}

/// PostgreSQL's `jsonb_out` for a root container (the datum without its
/// varlena header): `{"a": 1, "b": [true, null]}`.
pub fn to_text(root: &[u8]) -> Result<String, FormatError> {
    let c = Container::new(root)?;
    let mut out = Vec::with_capacity(root.len() + root.len() / 2 + 8);
    if c.kind() == Kind::Scalar {
        put_scalar(&mut out, c.scalar()?)?;
        return String::from_utf8(out).map_err(|_| FormatError);
    }

    enum Frame<'a> {
        Array(super::jsonb::Cursor<'a>),
        Object(super::jsonb::Cursor<'a>, super::jsonb::Cursor<'a>),
    }
    fn open<'a>(out: &mut Vec<u8>, c: Container<'a>) -> Result<Frame<'a>, FormatError> {
        match c.kind() {
            Kind::Array => {
                out.push(b'[');
                Ok(Frame::Array(c.elements()))
            }
            Kind::Object => {
                out.push(b'{');
                Ok(Frame::Object(c.keys(), c.values()))
            }
            // Only the root may be a scalar wrapper.
            Kind::Scalar => Err(FormatError),
        }
    }

    let mut stack: Vec<(Frame<'_>, bool)> = vec![(open(&mut out, c)?, true)];
    while let Some((frame, first)) = stack.last_mut() {
        let value = match frame {
            Frame::Array(elems) => elems.next().transpose()?,
            Frame::Object(keys, values) => match keys.next().transpose()? {
                None => None,
                Some(k) => {
                    if k.ty != T_STRING {
                        return Err(FormatError);
                    }
                    if !*first {
                        out.extend_from_slice(b", ");
                    }
                    escape_into(&mut out, k.data);
                    out.extend_from_slice(b": ");
                    *first = true; // no separator before this key's value
                    Some(values.next().ok_or(FormatError)??)
                }
            },
        };
        let Some(v) = value else {
            let (frame, _) = stack.pop().expect("non-empty");
            out.push(match frame {
                Frame::Array(_) => b']',
                Frame::Object(..) => b'}',
            });
            if let Some((_, first)) = stack.last_mut() {
                *first = false;
            }
            continue;
        };
        if !*first {
            out.extend_from_slice(b", ");
        }
        *first = false;
        if v.ty == T_CONTAINER {
            let nested = Container::new(v.data)?;
            let f = open(&mut out, nested)?;
            stack.push((f, true));
        } else {
            put_scalar(&mut out, v)?;
        }
    }
    String::from_utf8(out).map_err(|_| FormatError)
}

/// Test helper: [`parse`], panicking on invalid JSON.
#[doc(hidden)]
pub fn json(s: &str) -> Vec<u8> {
    parse(s).unwrap_or_else(|e| panic!("json({s:?}): {e}"))
}

/// Test helper: [`to_text`] of a complete datum (varlena header skipped),
/// panicking on a malformed one.
#[doc(hidden)]
pub fn show(datum: &[u8]) -> String {
    to_text(&datum[VARHDRSZ..]).unwrap_or_else(|e| panic!("show: malformed jsonb datum: {e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt(s: &str) -> String {
        show(&json(s))
    }

    #[test]
    fn round_trips_print_like_jsonb_out() {
        let cases: &[(&str, &str)] = &[
            // Scalars at top level.
            ("null", "null"),
            ("true", "true"),
            ("false", "false"),
            ("0", "0"),
            ("-0", "0"),
            ("-0.0", "0.0"),
            ("1e3", "1000"),
            ("1.5e1", "15"),
            ("1E+2", "100"),
            ("123e-2", "1.23"),
            ("1.10", "1.10"),
            ("0.0001", "0.0001"),
            (
                "12345678901234567890.123456789012345",
                "12345678901234567890.123456789012345",
            ),
            ("\"\"", "\"\""),
            ("\"abc\"", "\"abc\""),
            ("  \t\n\r 42 \n", "42"),
            // Escapes.
            (r#""a\"b\\c\/d""#, r#""a\"b\\c/d""#),
            (r#""\b\f\n\r\t""#, r#""\b\f\n\r\t""#),
            (r#""\u0001\u001f\u0020\u007f""#, "\"\\u0001\\u001f \u{7f}\""),
            (r#""\u00e9\u4e2d\uD83D\uDE00""#, "\"é中😀\""),
            (r#""\u00E9""#, "\"é\""),
            ("\"é中😀\"", "\"é中😀\""),
            (r#""\uFFFF""#, "\"\u{FFFF}\""),
            (r#""\uDBFF\uDFFF""#, "\"\u{10FFFF}\""),
            // Containers.
            ("[]", "[]"),
            ("{}", "{}"),
            ("[ ]", "[]"),
            ("{ }", "{}"),
            ("[[]]", "[[]]"),
            ("[{}]", "[{}]"),
            ("{\"a\":{}}", "{\"a\": {}}"),
            ("[1,2,3]", "[1, 2, 3]"),
            ("[1, [2, [3, [4]]]]", "[1, [2, [3, [4]]]]"),
            (r#"{"a":1,"b":[1,2]}"#, r#"{"a": 1, "b": [1, 2]}"#),
            (r#"{"b":1,"a":2}"#, r#"{"a": 2, "b": 1}"#),
            (r#"{"aa":1,"b":2,"":3}"#, r#"{"": 3, "b": 2, "aa": 1}"#),
            (r#"{"":""}"#, r#"{"": ""}"#),
            (r#"{"a":1,"a":2}"#, r#"{"a": 2}"#),
            (
                r#"{"a":1,"b":0,"a":{"x":1},"a":[3]}"#,
                r#"{"a": [3], "b": 0}"#,
            ),
            (
                r#"{"a":{"c":1,"c":2},"a":{"d":3,"d":4}}"#,
                r#"{"a": {"d": 4}}"#,
            ),
            (r#"{"é":1,"e":2,"f":3}"#, r#"{"e": 2, "f": 3, "é": 1}"#),
            (r#"{"k\n":"v\t"}"#, r#"{"k\n": "v\t"}"#),
            (
                r#"{"a":{"b":{"c":[true,false,null]}}}"#,
                r#"{"a": {"b": {"c": [true, false, null]}}}"#,
            ),
            (
                r#"[{"b":1},{"a":[{}, []]}]"#,
                r#"[{"b": 1}, {"a": [{}, []]}]"#,
            ),
            (
                r#"[1e3, 1.5e1, 1E+2, 123e-2, -0, 1.10, 0.0001, -0.0]"#,
                "[1000, 15, 100, 1.23, 0, 1.10, 0.0001, 0.0]",
            ),
            (
                r#"{"n": 12345678901234567890.123456789012345}"#,
                r#"{"n": 12345678901234567890.123456789012345}"#,
            ),
            ("[\"\\\"\", \"\\\\\"]", "[\"\\\"\", \"\\\\\"]"),
        ];
        for &(input, want) in cases {
            assert_eq!(rt(input), want, "{input}");
            // Output is itself valid input that prints the same.
            assert_eq!(rt(want), want, "{want}");
            // And re-parsing yields the same bytes.
            assert_eq!(json(want), json(input), "{input}");
        }
        assert_eq!(rt("1e-400"), format!("0.{}1", "0".repeat(399)));
        assert_eq!(rt("[1e-400]"), format!("[0.{}1]", "0".repeat(399)));
    }

    #[test]
    fn every_control_character_escapes() {
        for c in 1u8..0x20 {
            let text = format!("\"\\u{:04x}\"", c);
            let want = match c {
                0x08 => "\"\\b\"".to_string(),
                0x0C => "\"\\f\"".to_string(),
                b'\n' => "\"\\n\"".to_string(),
                b'\r' => "\"\\r\"".to_string(),
                b'\t' => "\"\\t\"".to_string(),
                _ => format!("\"\\u{:04x}\"", c),
            };
            assert_eq!(rt(&text), want);
        }
    }

    #[test]
    fn many_keys_cross_the_offset_stride() {
        let keys: Vec<String> = (0..100).map(|i| format!("key{}", 99 - i)).collect();
        let text = format!(
            "{{{}}}",
            keys.iter()
                .enumerate()
                .map(|(i, k)| format!("\"{k}\": [{i}, \"{k}\"]"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let datum = json(&text);
        let c = Container::new(&datum[VARHDRSZ..]).unwrap();
        assert_eq!(c.len(), 100);
        // Sorted by length, then bytes.
        let stored: Vec<Vec<u8>> = c.keys().map(|k| k.unwrap().data.to_vec()).collect();
        let mut want: Vec<Vec<u8>> = keys.iter().map(|k| k.as_bytes().to_vec()).collect();
        want.sort_by(|a, b| key_cmp(a, b));
        assert_eq!(stored, want);
        for (i, k) in keys.iter().enumerate() {
            let v = c.get(k.as_bytes()).unwrap().unwrap().as_array().unwrap();
            let els: Vec<Item> = v.elements().map(|e| e.unwrap()).collect();
            assert_eq!(numeric::to_text(els[0].data).unwrap(), i.to_string());
            assert_eq!(els[1].data, k.as_bytes());
        }
        let printed = show(&datum);
        assert!(
            printed.starts_with("{\"key0\": [99, \"key0\"], \"key1\": [98, \"key1\"]"),
            "{printed}"
        );
        assert_eq!(json(&printed), datum);

        let arr = format!(
            "[{}]",
            (0..200)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        assert_eq!(rt(&arr), arr);
    }

    #[test]
    fn binary_layout_matches_postgres() {
        // Bytes PostgreSQL stores for these texts (little-endian).
        #[cfg(target_endian = "little")]
        {
            // '1': scalar wrapper, the numeric aligned at data offset 0.
            let want: Vec<u8> = vec![
                80, 0, 0, 0, // VARSIZE 20 << 2
                1, 0, 0, 0x50, // 1 | JB_FSCALAR | JB_FARRAY
                8, 0, 0, 0x90, // HAS_OFF | numeric | end 8
                32, 0, 0, 0, // numeric VARSIZE 8 << 2
                0x00, 0x80, // short header: weight 0, dscale 0
                1, 0, // digit 1
            ];
            assert_eq!(json("1"), want);
            // '{"a": null}'
            let want: Vec<u8> = vec![
                68, 0, 0, 0, // VARSIZE 17 << 2
                1, 0, 0, 0x20, // 1 pair | JB_FOBJECT
                1, 0, 0, 0x80, // key: HAS_OFF | string | end 1
                0, 0, 0, 0x40, // value: null, length 0
                b'a',
            ];
            assert_eq!(json(r#"{"a": null}"#), want);
            // '["x", 1]': padding before the numeric counts as its data.
            let want: Vec<u8> = vec![
                112, 0, 0, 0, // VARSIZE 28 << 2
                2, 0, 0, 0x40, // 2 elements | JB_FARRAY
                1, 0, 0, 0x80, // HAS_OFF | string | end 1
                11, 0, 0, 0x10, // numeric, length 3 (pad) + 8
                b'x', 0, 0, 0, // string, then padding to 4
                32, 0, 0, 0, 0x00, 0x80, 1, 0, // numeric 1
            ];
            assert_eq!(json(r#"["x", 1]"#), want);
        }
    }

    #[test]
    fn rejects_invalid_json() {
        for s in [
            "",
            " ",
            "{",
            "}",
            "[",
            "]",
            "[1,]",
            "[,1]",
            "[1 2]",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\" 1}",
            "{\"a\":1,}",
            "{,}",
            "{1:2}",
            "{a:1}",
            "{'a':1}",
            "['a']",
            "\"abc",
            "\"a\nb\"",
            "\"a\tb\"",
            "\"\u{1}\"",
            r#""\x""#,
            r#""\u12""#,
            r#""\u12g4""#,
            r#""\U0041""#,
            r#""\u0000""#,
            r#""a\u0000b""#,
            r#""\uD83D""#,
            r#""\uD83Dx""#,
            r#""\uD83D\n""#,
            r#""\uD83D\uD83D""#,
            r#""\uDE00""#,
            r#""\uDE00\uD83D""#,
            "tru",
            "truex",
            "True",
            "nul",
            "nulll",
            "falsey",
            "NaN",
            "Infinity",
            "-Infinity",
            "+1",
            ".5",
            "1.",
            "01",
            "-",
            "1e",
            "1e+",
            "0x1F",
            "1 2",
            "[1] [2]",
            "{} x",
            "1e99999999999",
            "1e-16384",
            "[1e131072]",
            "\u{feff}1",
            "[1,\u{a0}2]",
            "\"\\",
            "\"\\u",
        ] {
            assert!(parse(s).is_err(), "{s:?} accepted");
        }
    }

    #[test]
    fn deep_nesting_does_not_overflow_the_stack() {
        let depth = 200_000;
        let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let datum = json(&text);
        assert_eq!(show(&datum), text);
        let obj = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        let datum = json(&obj);
        let printed = show(&datum);
        assert_eq!(
            printed,
            format!("{}1{}", "{\"a\": ".repeat(depth), "}".repeat(depth))
        );
        // Unbalanced deep input fails cleanly.
        assert!(parse(&"[".repeat(depth)).is_err());
        assert!(parse(&format!("{}{}", "[".repeat(depth), "]".repeat(depth - 1))).is_err());
    }

    #[test]
    fn to_text_rejects_malformed_containers() {
        assert_eq!(to_text(&[]), Err(FormatError));
        assert_eq!(to_text(&[0, 0, 0, 0]), Err(FormatError)); // neither array nor object
        let d = json(r#"{"a": [1, "two"]}"#);
        let root = &d[VARHDRSZ..];
        for cut in 4..root.len() {
            assert!(to_text(&root[..cut]).is_err(), "truncated at {cut}");
        }
        // Invalid UTF-8 inside a string.
        let mut bad = json(r#""ab""#);
        let n = bad.len();
        bad[n - 1] = 0xFF;
        assert_eq!(to_text(&bad[VARHDRSZ..]), Err(FormatError));
    }

    #[test]
    fn duplicate_keys_keep_the_last_value() {
        let d = json(r#"{"x": 1, "y": 2, "x": 3, "x": "last"}"#);
        let c = Container::new(&d[VARHDRSZ..]).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(b"x").unwrap().unwrap().data, b"last");
        assert_eq!(d, json(r#"{"y": 2, "x": "last"}"#));
    }

    #[test]
    fn header_is_the_datum_size() {
        for s in ["1", "[]", "{}", r#"{"a": [1, 2, {"b": "c"}]}"#, "\"x\""] {
            let d = json(s);
            assert_eq!(&d[..4], &numeric::varsize_4b(d.len()), "{s}");
        }
    }
}
