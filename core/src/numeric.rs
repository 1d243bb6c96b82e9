//! PostgreSQL `numeric` in its stored (varlena) form, as jsonb embeds it.
//!
//! A jsonb number is a complete numeric datum, varlena header included
//! (src/backend/utils/adt/numeric.c). After the header comes a `u16`:
//!
//! * `0x8000` set, `0x4000` clear — the short form: sign bit `0x2000`,
//!   display scale in `0x1F80`, a sign-extended 7-bit weight in `0x007F`;
//! * `0xC000` — NaN or ±Infinity, which jsonb never contains;
//! * otherwise the long form: sign (`0x4000` negative) and display scale
//!   (`0x3FFF`), then an `i16` weight.
//!
//! Then base-10000 digits (`i16`), most significant first, without leading or
//! trailing zero digits. The value is `Σ digit[i] · 10000^(weight − i)`;
//! zero has no digits, weight 0 and a positive sign.
//!
//! [`parse`] is `numeric_in` (set_var_from_str + make_result) restricted to
//! JSON number syntax and produces the same bytes PostgreSQL stores;
//! [`to_text`] is `numeric_out`; [`cmp`] is `numeric_cmp`.

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

use super::jsonb::FormatError;

const DEC_DIGITS: i64 = 4;

const NUMERIC_SIGN_MASK: u16 = 0xC000;
const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_SHORT: u16 = 0x8000;
const NUMERIC_SPECIAL: u16 = 0xC000;
const NUMERIC_EXT_SIGN_MASK: u16 = 0xF000;
const NUMERIC_NAN: u16 = 0xC000;
const NUMERIC_PINF: u16 = 0xD000;
const NUMERIC_NINF: u16 = 0xF000;

const NUMERIC_SHORT_SIGN_MASK: u16 = 0x2000;
const NUMERIC_SHORT_DSCALE_MASK: u16 = 0x1F80;
const NUMERIC_SHORT_DSCALE_SHIFT: u16 = 7;
const NUMERIC_SHORT_DSCALE_MAX: i64 = 63;
const NUMERIC_SHORT_WEIGHT_SIGN_MASK: u16 = 0x0040;
const NUMERIC_SHORT_WEIGHT_MASK: u16 = 0x003F;
const NUMERIC_SHORT_WEIGHT_MAX: i64 = 63;
const NUMERIC_SHORT_WEIGHT_MIN: i64 = -64;

const NUMERIC_DSCALE_MASK: u16 = 0x3FFF;
const NUMERIC_DSCALE_MAX: i64 = NUMERIC_DSCALE_MASK as i64;

/// set_var_from_str rejects `|exponent| >= INT_MAX / 2` outright; anything
/// smaller is only limited by what make_result can store.
const EXPONENT_LIMIT: i64 = (i32::MAX / 2) as i64;

/// The varlena header PostgreSQL's SET_VARSIZE writes for a datum of `len`
/// bytes (header included).
#[inline]
pub(crate) fn varsize_4b(len: usize) -> [u8; 4] {
    #[cfg(target_endian = "little")]
    {
        ((len as u32) << 2).to_le_bytes()
    }
    #[cfg(target_endian = "big")]
    {
        ((len as u32) & 0x3FFF_FFFF).to_be_bytes()
    }
}

/// The bytes after the varlena header, up to VARSIZE. Accepts a 4-byte
/// uncompressed header or a 1-byte short header; rejects compressed and
/// external (TOAST pointer) datums.
fn varlena_payload(datum: &[u8]) -> Result<&[u8], FormatError> {
    let b0 = *datum.first().ok_or(FormatError)?;
    #[cfg(target_endian = "little")]
    let (hdr, size) = if b0 & 0x01 == 0x01 {
        if b0 == 0x01 {
            return Err(FormatError); // external TOAST pointer
        }
        (1usize, (b0 >> 1) as usize)
    } else {
        if b0 & 0x03 != 0 || datum.len() < 4 {
            return Err(FormatError); // compressed, or truncated header
        }
        (
            4usize,
            (u32::from_le_bytes([datum[0], datum[1], datum[2], datum[3]]) >> 2) as usize,
        )
    };
    #[cfg(target_endian = "big")]
    let (hdr, size) = if b0 & 0x80 == 0x80 {
        if b0 == 0x80 {
            return Err(FormatError);
        }
        (1usize, (b0 & 0x7F) as usize)
    } else {
        if b0 & 0xC0 != 0 || datum.len() < 4 {
            return Err(FormatError);
        }
        (
            4usize,
            (u32::from_be_bytes([datum[0], datum[1], datum[2], datum[3]]) & 0x3FFF_FFFF) as usize,
        )
    };
    if size < hdr || size > datum.len() {
        return Err(FormatError);
    }
    Ok(&datum[hdr..size])
}

/// A decoded numeric, digits still in their stored bytes.
#[derive(Clone, Copy)]
struct Num<'a> {
    neg: bool,
    weight: i32,
    dscale: u16,
    /// `2 * ndigits` bytes of native-endian `i16` digits, each in `0..10000`.
    digits: &'a [u8],
}

impl<'a> Num<'a> {
    fn decode(datum: &'a [u8]) -> Result<Self, FormatError> {
        let num = Self::parse(datum)?;
        if num.digit_iter().any(|d| !(0..10000).contains(&d)) {
            return Err(FormatError);
        }
        Ok(num)
    }

    /// The header and digit bytes, without checking each digit's range.
    #[inline]
    fn parse(datum: &'a [u8]) -> Result<Self, FormatError> {
        let p = varlena_payload(datum)?;
        if p.len() < 2 {
            return Err(FormatError);
        }
        let h = u16::from_ne_bytes([p[0], p[1]]);
        let num = match h & NUMERIC_SIGN_MASK {
            NUMERIC_SHORT => {
                let w = h & NUMERIC_SHORT_WEIGHT_MASK;
                let w = if h & NUMERIC_SHORT_WEIGHT_SIGN_MASK != 0 {
                    w | !NUMERIC_SHORT_WEIGHT_MASK
                } else {
                    w
                };
                Num {
                    neg: h & NUMERIC_SHORT_SIGN_MASK != 0,
                    weight: w as i16 as i32,
                    dscale: (h & NUMERIC_SHORT_DSCALE_MASK) >> NUMERIC_SHORT_DSCALE_SHIFT,
                    digits: &p[2..],
                }
            }
            NUMERIC_SPECIAL => return Err(FormatError),
            sign => {
                if p.len() < 4 {
                    return Err(FormatError);
                }
                Num {
                    neg: sign == NUMERIC_NEG,
                    weight: i16::from_ne_bytes([p[2], p[3]]) as i32,
                    dscale: h & NUMERIC_DSCALE_MASK,
                    digits: &p[4..],
                }
            }
        };
        if num.digits.len() % 2 != 0 {
            return Err(FormatError);
        }
        Ok(num)
    }

    #[inline]
    fn ndigits(&self) -> usize {
        self.digits.len() / 2
    }

    #[inline]
    fn digit(&self, i: usize) -> i16 {
        i16::from_ne_bytes([self.digits[2 * i], self.digits[2 * i + 1]])
    }

    fn digit_iter(&self) -> impl Iterator<Item = i16> + 'a {
        self.digits
            .chunks_exact(2)
            .map(|c| i16::from_ne_bytes([c[0], c[1]]))
    }

    /// Digits without leading/trailing zero digits, and the weight of the
    /// first one; `None` for zero.
    fn stripped(&self) -> Option<(i32, &'a [u8])> {
        let mut d = self.digits;
        let mut w = self.weight;
        while d.len() >= 2 && d[0] == 0 && d[1] == 0 {
            d = &d[2..];
            w -= 1;
        }
        while d.len() >= 2 && d[d.len() - 2] == 0 && d[d.len() - 1] == 0 {
            d = &d[..d.len() - 2];
        }
        if d.is_empty() {
            None
        } else {
            Some((w, d))
        }
    }
}

/// Compares absolute values of two non-zero stripped digit strings.
fn cmp_abs(aw: i32, ad: &[u8], bw: i32, bd: &[u8]) -> Ordering {
    aw.cmp(&bw).then_with(|| {
        let a = ad.chunks_exact(2).map(|c| i16::from_ne_bytes([c[0], c[1]]));
        let b = bd.chunks_exact(2).map(|c| i16::from_ne_bytes([c[0], c[1]]));
        // Neither ends in a zero digit, so a longer string with an equal
        // prefix is the larger value: plain lexicographic order.
        a.cmp(b)
    })
}

/// Compares two numeric datums by value, like `numeric_cmp`: `1.0 = 1.00`
/// and `-0 = 0`.
pub fn cmp(a: &[u8], b: &[u8]) -> Result<Ordering, FormatError> {
    let a = Num::decode(a)?;
    let b = Num::decode(b)?;
    Ok(cmp_num(&a, &b))
}

fn cmp_num(a: &Num<'_>, b: &Num<'_>) -> Ordering {
    match (a.stripped(), b.stripped()) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => {
            if b.neg {
                Ordering::Greater
            } else {
                Ordering::Less
            }
        }
        (Some(_), None) => {
            if a.neg {
                Ordering::Less
            } else {
                Ordering::Greater
            }
        }
        (Some((aw, ad)), Some((bw, bd))) => match (a.neg, b.neg) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            (false, false) => cmp_abs(aw, ad, bw, bd),
            (true, true) => cmp_abs(bw, bd, aw, ad),
        },
    }
}

/// Equal value and equal display scale: the two print identically
/// (`1.0` and `1.00` are equal but not the same).
pub fn same(a: &[u8], b: &[u8]) -> Result<bool, FormatError> {
    let a = Num::decode(a)?;
    let b = Num::decode(b)?;
    Ok(a.dscale == b.dscale && cmp_num(&a, &b) == Ordering::Equal)
}

/// A numeric's value without its display scale: numerics that [`cmp`]
/// equal have equal values here (`1.0` and `1.00`, `-0` and `0`). Also
/// NaN and the infinities, which a table's column may hold (jsonb never does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Canonical<'a> {
    Zero,
    /// Base-10000 digits (`i16` in the server's byte order) without leading
    /// or trailing zero digits, and the weight of the first.
    Finite {
        neg: bool,
        weight: i32,
        digits: &'a [u8],
    },
    NaN,
    Infinity {
        neg: bool,
    },
}

/// The [`Canonical`] value of a numeric datum (4-byte or short header). Its
/// digits are not checked: a malformed datum gets some value, no panic.
#[inline]
pub fn canonical(datum: &[u8]) -> Result<Canonical<'_>, FormatError> {
    let p = varlena_payload(datum)?;
    if p.len() >= 2 {
        let h = u16::from_ne_bytes([p[0], p[1]]);
        if h & NUMERIC_SIGN_MASK == NUMERIC_SPECIAL {
            return match h & NUMERIC_EXT_SIGN_MASK {
                NUMERIC_NAN => Ok(Canonical::NaN),
                NUMERIC_PINF => Ok(Canonical::Infinity { neg: false }),
                NUMERIC_NINF => Ok(Canonical::Infinity { neg: true }),
                _ => Err(FormatError),
            };
        }
    }
    let v = Num::parse(datum)?;
    Ok(match v.stripped() {
        None => Canonical::Zero,
        Some((weight, digits)) => Canonical::Finite {
            neg: v.neg,
            weight,
            digits,
        },
    })
}

/// Feeds the value (not the display scale) to `h`: numerics that [`cmp`]
/// equal — so also those that are [`same`] — hash equal.
pub fn hash_value<H: Hasher>(datum: &[u8], h: &mut H) -> Result<(), FormatError> {
    let v = Num::decode(datum)?;
    match v.stripped() {
        None => 0u8.hash(h),
        Some((weight, digits)) => {
            (if v.neg { 2u8 } else { 1u8 }).hash(h);
            weight.hash(h);
            digits.hash(h);
        }
    }
    Ok(())
}

/// The numeric datum PostgreSQL's `numeric_in` stores for a JSON number
/// (`-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`), 4-byte varlena header
/// included. `None` for anything else — other syntax `numeric_in` would take
/// (`+1`, `.5`, `01`, `NaN`, spaces) included — and for values that overflow
/// the numeric format (weight beyond `i16`, display scale above 16383,
/// `|exponent| >= 2^30 - 1`).
pub fn parse(text: &str) -> Option<Vec<u8>> {
    let s = text.as_bytes();
    let n = s.len();
    let mut i = 0;

    // JSON number syntax (json_lex_number).
    let neg = s.first() == Some(&b'-');
    if neg {
        i += 1;
    }
    let int_start = i;
    match s.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            while i < n && s[i].is_ascii_digit() {
                i += 1;
            }
        }
        _ => return None,
    }
    let int_end = i;
    let (mut frac_start, mut frac_end) = (i, i);
    if i < n && s[i] == b'.' {
        i += 1;
        frac_start = i;
        while i < n && s[i].is_ascii_digit() {
            i += 1;
        }
        if i == frac_start {
            return None;
        }
        frac_end = i;
    }
    let mut exponent: i64 = 0;
    if i < n && (s[i] == b'e' || s[i] == b'E') {
        i += 1;
        let exp_neg = match s.get(i) {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let start = i;
        while i < n && s[i].is_ascii_digit() {
            // Saturates like strtol; anything this large is rejected below.
            exponent = exponent
                .saturating_mul(10)
                .saturating_add((s[i] - b'0') as i64);
            i += 1;
        }
        if i == start {
            return None;
        }
        if exp_neg {
            exponent = -exponent;
        }
    }
    if i != n {
        return None;
    }

    // set_var_from_str.
    let int_digits = &s[int_start..int_end];
    let frac_digits = &s[frac_start..frac_end];
    let ddigits = (int_digits.len() + frac_digits.len()) as i64;
    let mut dweight: i64 = int_digits.len() as i64 - 1;
    let mut dscale: i64 = frac_digits.len() as i64;
    if exponent >= EXPONENT_LIMIT || exponent <= -EXPONENT_LIMIT {
        return None;
    }
    dweight += exponent;
    dscale -= exponent;
    if dscale < 0 {
        dscale = 0;
    }

    let mut weight = if dweight >= 0 {
        (dweight + 1 + DEC_DIGITS - 1) / DEC_DIGITS - 1
    } else {
        -((-dweight - 1) / DEC_DIGITS + 1)
    };
    let offset = (weight + 1) * DEC_DIGITS - (dweight + 1);
    let ndigits = (ddigits + offset + DEC_DIGITS - 1) / DEC_DIGITS;

    // decdigits[k] is the k-th given decimal digit; the first NBASE digit
    // starts `offset` positions before it (zero padding).
    let dec = |k: i64| -> i16 {
        if k < 0 || k >= ddigits {
            0
        } else if (k as usize) < int_digits.len() {
            (int_digits[k as usize] - b'0') as i16
        } else {
            (frac_digits[k as usize - int_digits.len()] - b'0') as i16
        }
    };
    let mut digits: Vec<i16> = (0..ndigits)
        .map(|j| {
            let k = j * DEC_DIGITS - offset;
            ((dec(k) * 10 + dec(k + 1)) * 10 + dec(k + 2)) * 10 + dec(k + 3)
        })
        .collect();

    // strip_var / make_result.
    let lead = digits.iter().take_while(|&&d| d == 0).count();
    digits.drain(..lead);
    weight -= lead as i64;
    while digits.last() == Some(&0) {
        digits.pop();
    }
    let neg = neg && !digits.is_empty();
    if digits.is_empty() {
        weight = 0;
    }

    let short = dscale <= NUMERIC_SHORT_DSCALE_MAX
        && (NUMERIC_SHORT_WEIGHT_MIN..=NUMERIC_SHORT_WEIGHT_MAX).contains(&weight);
    let hdr = if short { 6 } else { 8 };
    let len = hdr + 2 * digits.len();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&varsize_4b(len));
    if short {
        let h = NUMERIC_SHORT
            | if neg { NUMERIC_SHORT_SIGN_MASK } else { 0 }
            | ((dscale as u16) << NUMERIC_SHORT_DSCALE_SHIFT)
            | if weight < 0 {
                NUMERIC_SHORT_WEIGHT_SIGN_MASK
            } else {
                0
            }
            | (weight as u16 & NUMERIC_SHORT_WEIGHT_MASK);
        out.extend_from_slice(&h.to_ne_bytes());
    } else {
        // make_result's "value overflows numeric format".
        if weight < i16::MIN as i64 || weight > i16::MAX as i64 || dscale > NUMERIC_DSCALE_MAX {
            return None;
        }
        let h = if neg { NUMERIC_NEG } else { 0 } | dscale as u16;
        out.extend_from_slice(&h.to_ne_bytes());
        out.extend_from_slice(&(weight as i16).to_ne_bytes());
    }
    for d in digits {
        out.extend_from_slice(&d.to_ne_bytes());
    }
    Some(out)
}

/// `numeric_out`: every integer digit, exactly `dscale` fractional digits,
/// `-` for a negative value, never an exponent.
pub fn to_text(datum: &[u8]) -> Result<String, FormatError> {
    let v = Num::decode(datum)?;
    let ndigits = v.ndigits() as i64;
    let dscale = v.dscale as usize;
    let weight = v.weight as i64;
    let int_len = ((weight + 1) * DEC_DIGITS).max(1) as usize;
    let mut out = String::with_capacity(int_len + dscale + 6);
    if v.neg {
        out.push('-');
    }
    let digit_at = |d: i64| -> i16 {
        if d >= 0 && d < ndigits {
            v.digit(d as usize)
        } else {
            0
        }
    };
    let push4 = |out: &mut String, dig: i16, mut putit: bool| {
        let mut dig = dig;
        for div in [1000i16, 100, 10] {
            let d1 = dig / div;
            dig -= d1 * div;
            putit |= d1 > 0;
            if putit {
                out.push((b'0' + d1 as u8) as char);
            }
        }
        out.push((b'0' + dig as u8) as char);
    };
    let mut d: i64;
    if weight < 0 {
        d = weight + 1;
        out.push('0');
    } else {
        d = 0;
        while d <= weight {
            push4(&mut out, digit_at(d), d > 0);
            d += 1;
        }
    }
    if dscale > 0 {
        out.push('.');
        let end = out.len() + dscale;
        let mut i = 0;
        while i < dscale {
            push4(&mut out, digit_at(d), true);
            d += 1;
            i += DEC_DIGITS as usize;
        }
        out.truncate(end);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The storage form from its parts (4-byte header, short form when it fits).
    fn build(neg: bool, weight: i16, dscale: u16, digits: &[i16]) -> Vec<u8> {
        let short = dscale <= 63 && (-64..=63).contains(&weight);
        let len = if short { 6 } else { 8 } + 2 * digits.len();
        let mut out = varsize_4b(len).to_vec();
        if short {
            let h = 0x8000
                | if neg { 0x2000 } else { 0 }
                | (dscale << 7)
                | if weight < 0 { 0x40 } else { 0 }
                | (weight as u16 & 0x3F);
            out.extend_from_slice(&h.to_ne_bytes());
        } else {
            out.extend_from_slice(&(if neg { 0x4000u16 } else { 0 } | dscale).to_ne_bytes());
            out.extend_from_slice(&weight.to_ne_bytes());
        }
        for d in digits {
            out.extend_from_slice(&d.to_ne_bytes());
        }
        out
    }

    fn p(s: &str) -> Vec<u8> {
        parse(s).unwrap_or_else(|| panic!("parse({s:?}) failed"))
    }

    fn rt(s: &str) -> String {
        to_text(&p(s)).unwrap()
    }

    #[test]
    fn parse_matches_numeric_in_bytes() {
        // (input, sign, weight, dscale, digits) as numeric_send reports them.
        let cases: &[(&str, bool, i16, u16, &[i16])] = &[
            ("0", false, 0, 0, &[]),
            ("-0", false, 0, 0, &[]),
            ("-0.0", false, 0, 1, &[]),
            ("0.000", false, 0, 3, &[]),
            ("0e-5", false, 0, 5, &[]),
            ("0e99999", false, 0, 0, &[]),
            ("1", false, 0, 0, &[1]),
            ("-1", true, 0, 0, &[1]),
            ("1.10", false, 0, 2, &[1, 1000]),
            ("0.0001", false, -1, 4, &[1]),
            ("0.00001", false, -2, 5, &[1000]),
            ("1e3", false, 0, 0, &[1000]),
            ("1.5e1", false, 0, 0, &[15]),
            ("1E+2", false, 0, 0, &[100]),
            ("123e-2", false, 0, 2, &[1, 2300]),
            ("10000", false, 1, 0, &[1]),
            ("9999", false, 0, 0, &[9999]),
            ("-12345.678", true, 1, 3, &[1, 2345, 6780]),
            (
                "12345678901234567890.123456789012345",
                false,
                4,
                15,
                &[1234, 5678, 9012, 3456, 7890, 1234, 5678, 9012, 3450],
            ),
            ("1e-400", false, -100, 400, &[1]),
            ("1e-252", false, -63, 252, &[1]),
            ("1e-256", false, -64, 256, &[1]),
            ("1e-257", false, -65, 257, &[1000]),
            ("1e252", false, 63, 0, &[1]),
            ("1e256", false, 64, 0, &[1]),
            ("1e131071", false, 32767, 0, &[1000]),
            ("1e-16383", false, -4096, 16383, &[10]),
        ];
        for &(s, neg, weight, dscale, digits) in cases {
            assert_eq!(p(s), build(neg, weight, dscale, digits), "{s}");
        }
        // 10^-63 at the largest short display scale, then one past it.
        let s63 = format!("0.{}1", "0".repeat(62));
        assert_eq!(p(&s63), build(false, -16, 63, &[10]));
        let s64 = format!("0.{}10", "0".repeat(62));
        assert_eq!(p(&s64), build(false, -16, 64, &[10]));
        assert_eq!(p(&s64).len(), 8 + 2);
    }

    #[test]
    fn short_and_long_forms() {
        let short = p("1.10");
        assert_eq!(short.len(), 6 + 4);
        assert_eq!(&short[..4], &varsize_4b(10));
        assert_eq!(u16::from_ne_bytes([short[4], short[5]]) & 0xC000, 0x8000);
        // dscale 400 does not fit the short form.
        let long = p("1e-400");
        assert_eq!(long.len(), 8 + 2);
        let h = u16::from_ne_bytes([long[4], long[5]]);
        assert_eq!(h & 0x8000, 0);
        assert_eq!(h & 0x3FFF, 400);
        assert_eq!(i16::from_ne_bytes([long[6], long[7]]), -100);
        // Weight 64 is just past the short form.
        let big = p("1e256");
        assert_eq!(u16::from_ne_bytes([big[4], big[5]]), 0);
        assert_eq!(i16::from_ne_bytes([big[6], big[7]]), 64);
        // Little-endian header: VARSIZE << 2.
        #[cfg(target_endian = "little")]
        assert_eq!(&p("1")[..4], &[8 << 2, 0, 0, 0]);
    }

    #[test]
    fn round_trips_print_like_numeric_out() {
        let cases: &[(&str, &str)] = &[
            ("0", "0"),
            ("-0", "0"),
            ("-0.0", "0.0"),
            ("0.000", "0.000"),
            ("0e-5", "0.00000"),
            ("0e5", "0"),
            ("0.0e16383", "0"),
            ("1", "1"),
            ("-1", "-1"),
            ("1.50", "1.50"),
            ("1.10", "1.10"),
            ("0.0001", "0.0001"),
            ("0.5", "0.5"),
            ("-0.5", "-0.5"),
            ("1e3", "1000"),
            ("1.5e1", "15"),
            ("1E+2", "100"),
            ("1e+2", "100"),
            ("123e-2", "1.23"),
            ("123E-5", "0.00123"),
            ("1.23e1", "12.3"),
            ("1.230e1", "12.30"),
            ("12.5e-1", "1.25"),
            ("10000", "10000"),
            ("9999", "9999"),
            ("99999999", "99999999"),
            ("100000000", "100000000"),
            ("-12345.678", "-12345.678"),
            (
                "12345678901234567890.123456789012345",
                "12345678901234567890.123456789012345",
            ),
            (
                "-12345678901234567890.123456789012345",
                "-12345678901234567890.123456789012345",
            ),
            ("1e0000000000000000000000003", "1000"),
            ("3.14159e0", "3.14159"),
            ("2.5E-0", "2.5"),
            ("0.1e1", "1"),
            ("0.10e1", "1.0"),
            ("100e-2", "1.00"),
            ("4e-1", "0.4"),
            ("1000000000000000000000", "1000000000000000000000"),
            ("123456789.000000001", "123456789.000000001"),
            ("0.00000000000000000001", "0.00000000000000000001"),
            ("5e-324", &format!("0.{}5", "0".repeat(323))),
            (
                "1.7976931348623157e308",
                &format!("17976931348623157{}", "0".repeat(292)),
            ),
            ("-9223372036854775808", "-9223372036854775808"),
            ("18446744073709551616", "18446744073709551616"),
        ];
        for &(s, want) in cases {
            assert_eq!(rt(s), want, "{s}");
        }
        assert_eq!(rt("1e-400"), format!("0.{}1", "0".repeat(399)));
        assert_eq!(rt("1e1001"), format!("1{}", "0".repeat(1001)));
        assert_eq!(rt("1e-16383"), format!("0.{}1", "0".repeat(16382)));
        assert_eq!(rt("1e131071").len(), 131072);
    }

    #[test]
    fn plain_decimals_round_trip_verbatim() {
        // Any canonical decimal (no exponent, no redundant leading zero)
        // prints back exactly as written.
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..5000 {
            let mut s = String::new();
            if next() % 3 == 0 {
                s.push('-');
            }
            let int_len = (next() % 25) as usize;
            if int_len == 0 {
                s.push('0');
            } else {
                s.push((b'1' + (next() % 9) as u8) as char);
                for _ in 1..int_len {
                    s.push((b'0' + (next() % 10) as u8) as char);
                }
            }
            let frac_len = (next() % 30) as usize;
            if frac_len > 0 {
                s.push('.');
                for _ in 0..frac_len {
                    s.push((b'0' + (next() % 10) as u8) as char);
                }
            }
            let want = match s.strip_prefix('-') {
                Some(abs) if abs.bytes().all(|b| b == b'0' || b == b'.') => abs.to_string(),
                _ => s.clone(),
            };
            assert_eq!(rt(&s), want, "{s}");
        }
    }

    #[test]
    fn parse_rejects_non_json_and_overflow() {
        for s in [
            "",
            "-",
            "+1",
            ".5",
            "1.",
            "01",
            "-01",
            "00",
            "1e",
            "1e+",
            "1E-",
            "1.e5",
            "--1",
            "1 ",
            " 1",
            "1x",
            "0x10",
            "NaN",
            "Infinity",
            "-Infinity",
            "1_000",
            "1,5",
            "１",
            "1e1.5",
            "1.2.3",
            "e5",
            "-.5",
        ] {
            assert!(parse(s).is_none(), "{s:?} accepted");
        }
        // make_result's overflow checks.
        for s in [
            "1e131072",
            "1e-16384",
            "0e-16384",
            "1e-131072",
            "1e1073741822",
            "1e1073741823",
            "0e1073741823",
            "1e-1073741823",
            "1e99999999999999999999",
            "1e-99999999999999999999",
        ] {
            assert!(parse(s).is_none(), "{s:?} accepted");
        }
        // Within limits: zero has no weight to overflow.
        assert_eq!(rt("0e1073741822"), "0");
        assert_eq!(
            rt(&format!("0.{}", "0".repeat(16383))),
            format!("0.{}", "0".repeat(16383))
        );
        assert!(parse(&format!("0.{}", "0".repeat(16384))).is_none());
    }

    #[test]
    fn cmp_orders_by_value() {
        use Ordering::*;
        let cases: &[(&str, &str, Ordering)] = &[
            ("1", "1", Equal),
            ("1.0", "1.00", Equal),
            ("1e3", "1000.000", Equal),
            ("-0", "0", Equal),
            ("-0.0", "0e-7", Equal),
            ("0", "1e-400", Less),
            ("0", "-1e-400", Greater),
            ("-1", "1", Less),
            ("-1", "0", Less),
            ("-2", "-1", Less),
            ("-1.5", "-1.25", Less),
            ("1.5", "1.25", Greater),
            ("9999", "10000", Less),
            ("10000", "10000.0001", Less),
            ("0.0001", "0.001", Less),
            ("0.00009999", "0.0001", Less),
            (
                "12345678901234567890.123456789012345",
                "12345678901234567890.12345678901234",
                Greater,
            ),
            (
                "12345678901234567890.123456789012345",
                "12345678901234567891",
                Less,
            ),
            ("-12345678901234567890.5", "-12345678901234567890", Less),
            ("1e131071", "9e131070", Greater),
            ("1e-16383", "1e-16382", Less),
            ("100", "99.99999999999999999999", Greater),
        ];
        for &(a, b, want) in cases {
            assert_eq!(cmp(&p(a), &p(b)).unwrap(), want, "{a} vs {b}");
            assert_eq!(cmp(&p(b), &p(a)).unwrap(), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn cmp_tolerates_unstripped_and_short_header_datums() {
        // 1.0 written with a leading and a trailing zero digit, long form,
        // and with a 1-byte varlena header.
        let padded = build(false, 1, 1, &[0, 1, 0]);
        assert_eq!(cmp(&padded, &p("1")).unwrap(), Ordering::Equal);
        // get_str_from_var only suppresses zeroes inside the first digit.
        assert_eq!(to_text(&padded).unwrap(), "00001.0");
        let mut short_hdr = p("-12.5");
        let body = short_hdr.split_off(4);
        #[cfg(target_endian = "little")]
        let h1 = (((body.len() + 1) as u8) << 1) | 1;
        #[cfg(target_endian = "big")]
        let h1 = ((body.len() + 1) as u8) | 0x80;
        let mut one = vec![h1];
        one.extend_from_slice(&body);
        assert_eq!(cmp(&one, &p("-12.50")).unwrap(), Ordering::Equal);
        assert!(same(&one, &p("-12.5")).unwrap());
        assert_eq!(to_text(&one).unwrap(), "-12.5");
        // Negative zero (never produced by PostgreSQL) still equals zero.
        let negzero = build(true, 0, 0, &[]);
        assert_eq!(cmp(&negzero, &p("0")).unwrap(), Ordering::Equal);
    }

    #[test]
    fn same_requires_equal_scale() {
        let cases: &[(&str, &str, bool)] = &[
            ("1", "1", true),
            ("1.0", "1.00", false),
            ("1.0", "1.0", true),
            ("1e3", "1000", true),
            ("1.5e1", "15", true),
            ("123e-2", "1.23", true),
            ("-0", "0", true),
            ("-0.0", "0", false),
            ("-0.0", "0.0", true),
            ("0.10", "0.1", false),
            ("1", "2", false),
            ("1e-400", "1e-400", true),
            ("1e-400", "10e-401", false),
            ("1e-400", "0.1e-399", true),
            ("1e-400", "1.0e-400", false),
        ];
        for &(a, b, want) in cases {
            assert_eq!(same(&p(a), &p(b)).unwrap(), want, "{a} vs {b}");
            assert_eq!(same(&p(b), &p(a)).unwrap(), want, "{b} vs {a}");
        }
    }

    #[test]
    fn hash_agrees_with_cmp() {
        use std::collections::hash_map::DefaultHasher;
        let hash = |d: &[u8]| {
            let mut h = DefaultHasher::new();
            hash_value(d, &mut h).unwrap();
            h.finish()
        };
        let groups: &[&[&str]] = &[
            &["0", "-0", "0.000", "-0.0", "0e-9"],
            &["1", "1.0", "1.00", "1e0", "0.1e1", "100e-2"],
            &["-1", "-1.0", "-10e-1"],
            &["1000", "1e3", "1000.0"],
            &["12345.678", "12345.6780", "1.2345678e4"],
            &["1e-400", "0.1e-399"],
        ];
        for g in groups {
            for a in g.iter() {
                for b in g.iter() {
                    assert_eq!(hash(&p(a)), hash(&p(b)), "{a} vs {b}");
                }
            }
        }
        // A leading/trailing zero digit does not change the hash either.
        assert_eq!(hash(&build(false, 1, 1, &[0, 1, 0])), hash(&p("1")));
        let distinct: Vec<u64> = ["0", "1", "-1", "2", "10000", "0.0001", "1e-400"]
            .iter()
            .map(|s| hash(&p(s)))
            .collect();
        for i in 0..distinct.len() {
            for j in 0..i {
                assert_ne!(distinct[i], distinct[j]);
            }
        }
        let mut h = DefaultHasher::new();
        assert_eq!(hash_value(&[], &mut h), Err(FormatError));
    }

    #[test]
    fn rejects_malformed_datums() {
        let one = p("1");
        assert_eq!(to_text(&[]), Err(FormatError));
        assert_eq!(to_text(&one[..5]), Err(FormatError)); // shorter than VARSIZE
        let mut odd = one.clone();
        odd[0] = varsize_4b(7)[0];
        assert_eq!(to_text(&odd[..7]), Err(FormatError)); // half a digit
                                                          // NaN / Infinity.
        let mut nan = varsize_4b(6).to_vec();
        nan.extend_from_slice(&0xC000u16.to_ne_bytes());
        assert_eq!(to_text(&nan), Err(FormatError));
        assert_eq!(cmp(&nan, &one), Err(FormatError));
        assert_eq!(same(&one, &nan), Err(FormatError));
        // Digit out of range.
        let bad = build(false, 0, 0, &[10000]);
        assert_eq!(to_text(&bad), Err(FormatError));
        // Compressed and external varlena headers.
        #[cfg(target_endian = "little")]
        {
            let mut c = one.clone();
            c[0] |= 0x02;
            assert_eq!(to_text(&c), Err(FormatError));
            assert_eq!(to_text(&[0x01, 0, 0, 0, 0, 0]), Err(FormatError));
        }
    }
}
