//! JSON encoding that matches Go's `encoding/json` byte for byte.
//!
//! Go escapes `<`, `>`, `&`, U+2028 and U+2029 inside strings (as `\u003c`, `\u003e`, `\u0026`,
//! `\u2028`, `\u2029`); serde_json writes them raw. Both are valid JSON, but golden frames captured
//! from Go kites contain the escaped form, and SockJS frames carrying U+2028 raw break old browsers'
//! JSONP transports. Every JSON text this crate puts on the wire goes through [`to_string`].

use std::io;

use serde::Serialize;
use serde_json::ser::{CharEscape, Formatter};

/// A serde_json formatter that escapes exactly what Go's `encoding/json` escapes.
#[derive(Debug, Clone, Copy, Default)]
pub struct GoFormatter;

#[inline]
fn needs_go_escape(fragment: &str) -> bool {
    fragment
        .bytes()
        .any(|b| matches!(b, b'<' | b'>' | b'&' | 0xE2))
}

impl Formatter for GoFormatter {
    fn write_f64<W>(&mut self, writer: &mut W, value: f64) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        // Go: shortest representation; integral values have no ".0"; exponent form (with an
        // explicit sign, e.g. 1e+21, 1.5e-7) below 1e-6 and from 1e21 on.
        let abs = value.abs();
        if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
            let s = format!("{value:e}");
            match s.split_once('e') {
                Some((mantissa, exp)) if !exp.starts_with('-') => {
                    write!(writer, "{mantissa}e+{exp}")
                }
                _ => writer.write_all(s.as_bytes()),
            }
        } else {
            write!(writer, "{value}")
        }
    }

    fn write_string_fragment<W>(&mut self, writer: &mut W, fragment: &str) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        if !needs_go_escape(fragment) {
            return writer.write_all(fragment.as_bytes());
        }
        let mut start = 0;
        for (i, ch) in fragment.char_indices() {
            let escaped: &[u8] = match ch {
                '<' => b"\\u003c",
                '>' => b"\\u003e",
                '&' => b"\\u0026",
                '\u{2028}' => b"\\u2028",
                '\u{2029}' => b"\\u2029",
                _ => continue,
            };
            writer.write_all(&fragment.as_bytes()[start..i])?;
            writer.write_all(escaped)?;
            start = i + ch.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }

    fn write_char_escape<W>(&mut self, writer: &mut W, char_escape: CharEscape) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        // Go writes control characters other than \n, \r, \t as \u00XX and never uses \b or \f.
        let s: &[u8] = match char_escape {
            CharEscape::Quote => b"\\\"",
            CharEscape::ReverseSolidus => b"\\\\",
            CharEscape::LineFeed => b"\\n",
            CharEscape::CarriageReturn => b"\\r",
            CharEscape::Tab => b"\\t",
            CharEscape::Backspace => b"\\u0008",
            CharEscape::FormFeed => b"\\u000c",
            CharEscape::Solidus => b"/",
            CharEscape::AsciiControl(byte) => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let buf = [
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[(byte >> 4) as usize],
                    HEX[(byte & 0xF) as usize],
                ];
                return writer.write_all(&buf);
            }
        };
        writer.write_all(s)
    }
}

/// Serializes `value` as compact JSON with Go's escaping, appending to `out`.
pub fn write_into<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> serde_json::Result<()> {
    let mut ser = serde_json::Serializer::with_formatter(out, GoFormatter);
    value.serialize(&mut ser)
}

/// Serializes `value` as compact JSON with Go's escaping.
pub fn to_string<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    let mut out = Vec::with_capacity(128);
    write_into(&mut out, value)?;
    // The formatter only ever writes valid UTF-8 (input strings are UTF-8, escapes are ASCII).
    Ok(String::from_utf8(out).expect("JSON output is UTF-8"))
}

/// What [`write_str`] does with each byte: 0 copies it, anything else names its escape.
/// `u` is `\u00XX`; `G` is a byte Go escapes as `\u00XX` (`<`, `>`, `&`); `L` (0xE2) may start
/// U+2028 or U+2029.
static ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = b'u';
        b += 1;
    }
    t[b'\n' as usize] = b'n';
    t[b'\r' as usize] = b'r';
    t[b'\t' as usize] = b't';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t[b'<' as usize] = b'G';
    t[b'>' as usize] = b'G';
    t[b'&' as usize] = b'G';
    t[0xE2] = b'L';
    t
};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Serializes a [`serde_json::Value`] as compact JSON with Go's escaping, appending to `out`:
/// the same text as [`write_into`], written directly (arguments and results are values, and a
/// large string in one would otherwise be scanned twice per byte by serde and the formatter).
pub fn write_value(out: &mut Vec<u8>, value: &serde_json::Value) {
    use serde_json::Value;
    use std::io::Write;
    /// What is left to write: a value, or the rest of a list or an object.
    enum Step<'a> {
        Value(&'a Value),
        Items(std::slice::Iter<'a, Value>),
        Entries(serde_json::map::Iter<'a>),
    }
    // Without recursion: a value from a peer may be nested thousands of levels deep.
    let mut stack = vec![Step::Value(value)];
    while let Some(step) = stack.pop() {
        match step {
            Step::Value(Value::Null) => out.extend_from_slice(b"null"),
            Step::Value(Value::Bool(true)) => out.extend_from_slice(b"true"),
            Step::Value(Value::Bool(false)) => out.extend_from_slice(b"false"),
            Step::Value(Value::Number(n)) => {
                if let Some(u) = n.as_u64() {
                    let _ = write!(out, "{u}");
                } else if let Some(i) = n.as_i64() {
                    let _ = write!(out, "{i}");
                } else if let Some(f) = n.as_f64() {
                    let _ = GoFormatter.write_f64(out, f);
                }
            }
            Step::Value(Value::String(s)) => write_str(out, s),
            Step::Value(Value::Array(items)) => {
                out.push(b'[');
                let mut items = items.iter();
                match items.next() {
                    Some(first) => {
                        stack.push(Step::Items(items));
                        stack.push(Step::Value(first));
                    }
                    None => out.push(b']'),
                }
            }
            Step::Value(Value::Object(map)) => {
                out.push(b'{');
                let mut entries = map.iter();
                match entries.next() {
                    Some((k, v)) => {
                        write_str(out, k);
                        out.push(b':');
                        stack.push(Step::Entries(entries));
                        stack.push(Step::Value(v));
                    }
                    None => out.push(b'}'),
                }
            }
            Step::Items(mut rest) => match rest.next() {
                Some(item) => {
                    out.push(b',');
                    stack.push(Step::Items(rest));
                    stack.push(Step::Value(item));
                }
                None => out.push(b']'),
            },
            Step::Entries(mut rest) => match rest.next() {
                Some((k, v)) => {
                    out.push(b',');
                    write_str(out, k);
                    out.push(b':');
                    stack.push(Step::Entries(rest));
                    stack.push(Step::Value(v));
                }
                None => out.push(b'}'),
            },
        }
    }
}

/// Appends `s` as a JSON string literal (quoted, Go escaping) to `out`.
///
/// This is the hot path of every SockJS frame (each dnode message is a JSON string inside the
/// frame), so it scans with a table instead of going through serde; the output is the same as
/// [`to_string`] of the string.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    write_contents(out, s);
    out.push(b'"');
}

/// Appends `s` escaped as the contents of a JSON string, without the quotes ([`write_str`]
/// minus its first and last byte).
pub fn write_contents(out: &mut Vec<u8>, s: &str) {
    write_escaped::<false>(out, s);
}

/// Appends `s` as a JSON string literal for a SockJS server → client frame: [`write_str`]'s
/// escaping plus the characters the SockJS protocol asks servers to escape because browsers and
/// proxies mangle them (U+200C–U+200F, U+2028–U+202F, U+2060–U+206F, U+FFF0–U+FFFF). The
/// client decodes the same string either way.
pub fn write_sockjs_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    write_escaped::<true>(out, s);
    out.push(b'"');
}

/// Whether the UTF-8 sequence starting with `lead` followed by `b1 b2` is one of the characters
/// SockJS servers escape beyond Go's set.
#[inline]
fn sockjs_escaped(lead: u8, b1: Option<&u8>, b2: Option<&u8>) -> bool {
    match (lead, b1, b2) {
        // U+200C..U+200F and U+2028..U+202F: E2 80 8C..8F / A8..AF; U+2060..U+206F: E2 81 A0..AF.
        (0xE2, Some(0x80), Some(&c)) => (0x8C..=0x8F).contains(&c) || (0xA8..=0xAF).contains(&c),
        (0xE2, Some(0x81), Some(&c)) => (0xA0..=0xAF).contains(&c),
        // U+FFF0..U+FFFF: EF BF B0..BF.
        (0xEF, Some(0xBF), Some(&c)) => (0xB0..=0xBF).contains(&c),
        _ => false,
    }
}

/// Appends the `\uXXXX` escape of the three-byte UTF-8 sequence `seq`.
fn push_u_escape(out: &mut Vec<u8>, seq: [u8; 3]) {
    let cp = (u32::from(seq[0] & 0x0F) << 12)
        | (u32::from(seq[1] & 0x3F) << 6)
        | u32::from(seq[2] & 0x3F);
    out.extend_from_slice(b"\\u");
    for shift in [12, 8, 4, 0] {
        out.push(HEX[((cp >> shift) & 0xF) as usize]);
    }
}

fn write_escaped<const SOCKJS: bool>(out: &mut Vec<u8>, s: &str) {
    let flags = if SOCKJS { sockjs_specials } else { go_specials };
    let bytes = s.as_bytes();
    // Room for the escapes of dnode text (every quote doubles) without growing twice.
    out.reserve(bytes.len() + bytes.len() / 4 + 8);
    let mut i = 0;
    // Clean chunks in a row.
    let mut clean = 0;
    loop {
        // Clean eight-byte chunks are copied whole; the bytes before an escape too.
        if let Some(chunk) = bytes.get(i..i + 8) {
            let chunk: [u8; 8] = chunk.try_into().expect("eight bytes");
            let m = flags(u64::from_le_bytes(chunk));
            if m == 0 {
                if clean < 2 {
                    clean += 1;
                    out.extend_from_slice(&chunk);
                    i += 8;
                } else {
                    // A long clean run (a token, a payload): find its end, copy it at once.
                    let run = i;
                    i = scan(bytes, i + 8, flags, |b| {
                        ESCAPE[b as usize] != 0 || (SOCKJS && b == 0xEF)
                    });
                    out.extend_from_slice(&bytes[run..i]);
                }
                continue;
            }
            clean = 0;
            let n = (m.trailing_zeros() / 8) as usize;
            out.extend_from_slice(&chunk[..n]);
            i += n;
        }
        let Some(&b) = bytes.get(i) else {
            break;
        };
        i += 1;
        if SOCKJS && matches!(b, 0xE2 | 0xEF) && sockjs_escaped(b, bytes.get(i), bytes.get(i + 1)) {
            push_u_escape(out, [b, bytes[i], bytes[i + 1]]);
            i += 2;
            continue;
        }
        match ESCAPE[b as usize] {
            0 => out.push(b),
            b'L' => {
                // U+2028 is E2 80 A8, U+2029 is E2 80 A9; other characters starting E2 pass.
                if bytes.get(i) == Some(&0x80) && matches!(bytes.get(i + 1), Some(0xA8 | 0xA9)) {
                    out.extend_from_slice(if bytes[i + 1] == 0xA8 {
                        b"\\u2028"
                    } else {
                        b"\\u2029"
                    });
                    i += 2;
                } else {
                    out.push(b);
                }
            }
            b'u' | b'G' => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 0xF) as usize],
            ]),
            other => out.extend_from_slice(&[b'\\', other]),
        }
    }
}

/// The index of the first byte at or after `i` that `flags` (eight at a time) or `special`
/// (for the last few bytes) marks, or `bytes.len()`.
#[inline]
fn scan(
    bytes: &[u8],
    mut i: usize,
    flags: impl Fn(u64) -> u64,
    special: impl Fn(u8) -> bool,
) -> usize {
    while let Some(chunk) = bytes.get(i..i + 8) {
        let m = flags(u64::from_le_bytes(chunk.try_into().expect("eight bytes")));
        if m != 0 {
            return i + (m.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < bytes.len() && !special(bytes[i]) {
        i += 1;
    }
    i
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// Bit 7 of a byte of the result is set where that byte of `v` is zero. Only the lowest
/// flagged byte is exact (a borrow may flag bytes above it), which is all the callers use.
#[inline]
fn zero_bytes(v: u64) -> u64 {
    v.wrapping_sub(ONES) & !v & HIGH
}

/// Flags the bytes of `w` below 0x20 (lowest flag exact, as for [`zero_bytes`]).
#[inline]
fn control_bytes(w: u64) -> u64 {
    w.wrapping_sub(ONES * 0x20) & !w & HIGH
}

/// Flags the bytes [`write_str`] must look at: what JSON escapes and what Go also escapes.
#[inline]
fn go_specials(w: u64) -> u64 {
    let eq = |c: u8| zero_bytes(w ^ (ONES * u64::from(c)));
    eq(b'"') | eq(b'\\') | control_bytes(w) | eq(b'<') | eq(b'>') | eq(b'&') | eq(0xE2)
}

/// [`go_specials`] plus the lead byte of U+FFF0..U+FFFF (those of U+20xx are 0xE2 already).
#[inline]
fn sockjs_specials(w: u64) -> u64 {
    go_specials(w) | zero_bytes(w ^ (ONES * 0xEF))
}

/// `text` escaped as the contents of a JSON string (what [`write_str`] writes between the
/// quotes). `text` must be UTF-8; JSON produced by this crate always is.
pub fn escape_contents(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + text.len() / 4 + 2);
    write_contents(&mut out, std::str::from_utf8(text).unwrap_or_default());
    out
}

/// Why [`parse_string_list`] rejected its input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} at byte {at}")]
pub struct ListError {
    /// What is wrong.
    pub what: &'static str,
    /// Where.
    pub at: usize,
}

fn list_error(what: &'static str, at: usize) -> ListError {
    ListError { what, at }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// Parses a JSON array of strings (`["a","b"]`, whitespace allowed), the body of every SockJS
/// frame that carries messages. Accepts exactly what `serde_json::from_str::<Vec<String>>`
/// accepts and gives the same strings; it is written out because this runs for every frame
/// and serde's per-escape overhead dominates on dnode text, where every quote is escaped.
pub fn parse_string_list(text: &str) -> Result<Vec<String>, ListError> {
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'[') {
        return Err(list_error("expected `[`", i));
    }
    i = skip_ws(b, i + 1);
    let mut out = Vec::new();
    if b.get(i) == Some(&b']') {
        i += 1;
    } else {
        loop {
            if b.get(i) != Some(&b'"') {
                return Err(list_error("expected a string", i));
            }
            let (s, next) = parse_string_at(text, i + 1)?;
            out.push(s);
            i = skip_ws(b, next);
            match b.get(i) {
                Some(b',') => i = skip_ws(b, i + 1),
                Some(b']') => {
                    i += 1;
                    break;
                }
                _ => return Err(list_error("expected `,` or `]`", i)),
            }
        }
    }
    if skip_ws(b, i) != b.len() {
        return Err(list_error("trailing characters", i));
    }
    Ok(out)
}

/// Parses one JSON string literal that makes up all of `text` (whitespace around allowed).
pub fn parse_string(text: &str) -> Result<String, ListError> {
    let b = text.as_bytes();
    let i = skip_ws(b, 0);
    if b.get(i) != Some(&b'"') {
        return Err(list_error("expected a string", i));
    }
    let (s, next) = parse_string_at(text, i + 1)?;
    if skip_ws(b, next) != b.len() {
        return Err(list_error("trailing characters", next));
    }
    Ok(s)
}

/// Parses the body of a SockJS close frame, `[code,"reason"]` (whitespace allowed): a code that
/// fits a `u16`, written as a plain integer, and a string.
pub fn parse_close(text: &str) -> Result<(u16, String), ListError> {
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'[') {
        return Err(list_error("expected `[`", i));
    }
    i = skip_ws(b, i + 1);
    let digits = i;
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    // A JSON number has no leading zeros (`0` itself is one).
    if i - digits > 1 && b[digits] == b'0' {
        return Err(list_error("leading zero in a close code", digits));
    }
    let code = text[digits..i]
        .parse::<u16>()
        .map_err(|_| list_error("expected a close code", digits))?;
    i = skip_ws(b, i);
    if b.get(i) != Some(&b',') {
        return Err(list_error("expected `,`", i));
    }
    i = skip_ws(b, i + 1);
    if b.get(i) != Some(&b'"') {
        return Err(list_error("expected a string", i));
    }
    let (reason, next) = parse_string_at(text, i + 1)?;
    i = skip_ws(b, next);
    if b.get(i) != Some(&b']') {
        return Err(list_error("expected `]`", i));
    }
    if skip_ws(b, i + 1) != b.len() {
        return Err(list_error("trailing characters", i + 1));
    }
    Ok((code, reason))
}

/// Flags the bytes of `w` that end a run of plain string contents when decoding: `"`, `\\`
/// and control characters (the lowest flag is exact).
#[inline]
fn specials(w: u64) -> u64 {
    zero_bytes(w ^ (ONES * u64::from(b'"')))
        | zero_bytes(w ^ (ONES * u64::from(b'\\')))
        | control_bytes(w)
}

/// Decodes the string whose contents start at `start` (after the opening quote); returns it
/// and the index after the closing quote.
///
/// One pass: clean eight-byte chunks are stored whole (a token is one long clean run), the few
/// bytes before an escape are pushed one by one (runs are short in dnode text, where every
/// quote is escaped), and `\"` is decoded in line.
fn parse_string_at(text: &str, start: usize) -> Result<(String, usize), ListError> {
    let b = text.as_bytes();
    // Decoded text is never longer than its JSON; most strings are well under 1 KiB.
    let mut out = Vec::with_capacity((b.len() - start).min(1024));
    let mut i = start;
    loop {
        let run = i;
        i = scan_decode(b, i);
        out.extend_from_slice(&b[run..i]);
        match b.get(i) {
            None => return Err(list_error("unterminated string", i)),
            Some(b'"') => break,
            Some(b'\\') => {
                if b.get(i + 1) == Some(&b'"') {
                    out.push(b'"');
                    i += 2;
                } else {
                    i = unescape(b, i + 1, &mut out)?;
                }
            }
            Some(_) => return Err(list_error("control character in a string", i)),
        }
    }
    // The input is UTF-8 and escapes add whole characters, so this only re-checks it.
    let s = String::from_utf8(out).map_err(|_| list_error("invalid UTF-8", start))?;
    Ok((s, i + 1))
}

/// The index of the next `"`, `\\` or control character at or after `i` (or the end).
/// Runs in dnode text are short and are scanned eight bytes at a time; a run still clean
/// after four chunks (a token, a payload) is searched with SIMD (`memchr2`) and then checked
/// for control characters in one branch-free pass.
#[inline]
fn scan_decode(b: &[u8], mut i: usize) -> usize {
    for _ in 0..4 {
        let Some(chunk) = b.get(i..i + 8) else {
            while i < b.len() && !matches!(b[i], b'"' | b'\\' | 0..=0x1f) {
                i += 1;
            }
            return i;
        };
        let m = specials(u64::from_le_bytes(chunk.try_into().expect("eight bytes")));
        if m != 0 {
            return i + (m.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    let end = memchr::memchr2(b'"', b'\\', &b[i..]).map_or(b.len(), |k| i + k);
    let run = &b[i..end];
    if run.iter().fold(false, |control, c| control | (*c < 0x20)) {
        return i + run.iter().position(|c| *c < 0x20).unwrap_or(0);
    }
    end
}

/// Decodes the escape whose letter is at `i`, appending it; returns the index after it.
fn unescape(b: &[u8], i: usize, out: &mut Vec<u8>) -> Result<usize, ListError> {
    let simple = match b.get(i) {
        Some(b'"') => b'"',
        Some(b'\\') => b'\\',
        Some(b'/') => b'/',
        Some(b'b') => 0x08,
        Some(b'f') => 0x0c,
        Some(b'n') => b'\n',
        Some(b'r') => b'\r',
        Some(b't') => b'\t',
        Some(b'u') => {
            let first = hex4(b, i + 1)?;
            let mut next = i + 5;
            let c = match first {
                0xD800..=0xDBFF => {
                    if b.get(next) != Some(&b'\\') || b.get(next + 1) != Some(&b'u') {
                        return Err(list_error("lone leading surrogate", i));
                    }
                    let second = hex4(b, next + 2)?;
                    if !(0xDC00..=0xDFFF).contains(&second) {
                        return Err(list_error("invalid surrogate pair", i));
                    }
                    next += 6;
                    0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
                }
                0xDC00..=0xDFFF => return Err(list_error("lone trailing surrogate", i)),
                c => c,
            };
            let c = char::from_u32(c).ok_or_else(|| list_error("invalid escape", i))?;
            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
            return Ok(next);
        }
        _ => return Err(list_error("invalid escape", i)),
    };
    out.push(simple);
    Ok(i + 1)
}

fn hex4(b: &[u8], i: usize) -> Result<u32, ListError> {
    let digits = b
        .get(i..i + 4)
        .ok_or_else(|| list_error("short \\u escape", i))?;
    digits.iter().try_fold(0u32, |acc, d| {
        let v = (*d as char)
            .to_digit(16)
            .ok_or_else(|| list_error("bad hex digit in \\u escape", i))?;
        Ok(acc * 16 + v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_go() {
        let s =
            to_string(&serde_json::json!({"a": "<b>&\u{2028}\u{2029}é✓\u{1}\u{8}\u{c}\"\\/\n"}))
                .unwrap();
        assert_eq!(
            s,
            r#"{"a":"\u003cb\u003e\u0026\u2028\u2029é✓\u0001\u0008\u000c\"\\/\n"}"#
        );
    }

    #[test]
    fn floats_like_go() {
        let cases = [
            (16.0, "16"),
            (2.5, "2.5"),
            (-1.5e-7, "-1.5e-7"),
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (0.000001, "0.000001"),
            (-0.0, "-0"),
        ];
        for (v, want) in cases {
            assert_eq!(to_string(&v).unwrap(), want, "{v}");
        }
    }

    #[test]
    fn write_str_matches_the_formatter() {
        let cases = [
            "",
            "plain",
            "<b>&amp;</b>",
            "quote \" backslash \\ slash /",
            "\u{0}\u{1}\u{8}\t\n\u{b}\u{c}\r\u{1f} \u{7f}",
            "line\u{2028}para\u{2029}end",
            "\u{2027}\u{202a}€✓é 日本",
            "{\"method\":\"square\",\"arguments\":[{\"withArgs\":[4]}]}",
        ];
        for s in cases {
            let mut fast = Vec::new();
            write_str(&mut fast, s);
            let mut serde = Vec::new();
            write_into(&mut serde, s).unwrap();
            assert_eq!(
                String::from_utf8(fast).unwrap(),
                String::from_utf8(serde).unwrap(),
                "{s:?}"
            );
        }
    }

    /// A tiny deterministic generator, so the differential test needs no extra crate.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }
        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[(self.next() % items.len() as u64) as usize]
        }
    }

    #[test]
    fn string_lists_parse_like_serde_json() {
        let fixed = [
            r#"[]"#,
            r#" [ ] "#,
            r#"["a"]"#,
            r#"["a","b"]"#,
            r#" [ "a" , "b" ] "#,
            r#"["{\"method\":\"square\",\"arguments\":[4]}"]"#,
            r#"["\u003c\u2028\ud83d\ude00 é ✓ \/ \b\f\n\r\t"]"#,
            r#"["\ud83d"]"#,
            r#"["\ude00"]"#,
            r#"["\ud83d\u0041"]"#,
            r#"["\x"]"#,
            r#"["\u12"]"#,
            r#"["\u12G4"]"#,
            r#"["a\"]"#,
            r#"["a"#,
            r#"["a",]"#,
            r#"[,"a"]"#,
            r#"["a""b"]"#,
            r#"["a"] x"#,
            r#"[1]"#,
            r#"{"a":1}"#,
            "[\"tab\there\"]",
            "[\"nul\u{0}\"]",
            "",
            "[",
            r#""alone""#,
        ];
        let check = |text: &str| {
            let ours = parse_string_list(text);
            let serde = serde_json::from_str::<Vec<String>>(text);
            match (&ours, &serde) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{text:?}"),
                (Err(_), Err(_)) => {}
                _ => panic!("{text:?}: ours {ours:?}, serde_json {serde:?}"),
            }
        };
        for text in fixed {
            check(text);
        }
        let pieces = [
            "a", "Z", " ", "\\\"", "\\\\", "\\/", "\\n", "\\t", "\\u0041", "\\u00e9", "\\ud83d",
            "\\ude00", "\\u2028", "é", "✓", "😀", "\"", "\\", "\\q", "\\u00", ",", "]", "[", "\t",
        ];
        let mut rng = Lcg(7);
        for _ in 0..20_000 {
            let mut text = String::from("[\"");
            for _ in 0..rng.next() % 12 {
                text.push_str(rng.pick(&pieces));
            }
            text.push_str(rng.pick(&["\"]", "\",\"x\"]", "\"", "\"] ", "\"]]"]));
            check(&text);
        }
    }

    #[test]
    fn single_strings_parse_like_serde_json() {
        for text in [r#""a\"b""#, r#" "x" "#, r#""x" y"#, r#"5"#, r#""\ud800""#] {
            assert_eq!(
                parse_string(text).ok(),
                serde_json::from_str::<String>(text).ok(),
                "{text:?}"
            );
        }
    }

    #[test]
    fn values_are_written_as_the_formatter_writes_them() {
        let mut rng = Lcg(11);
        let strings = ["", "a", "<é>", "q\"\\", "\u{2028}\u{1}", "日本", "x&y"];
        let numbers = [
            serde_json::json!(0),
            serde_json::json!(-7),
            serde_json::json!(u64::MAX),
            serde_json::json!(i64::MIN),
            serde_json::json!(16.0),
            serde_json::json!(-1.5e-7),
            serde_json::json!(1e21),
            serde_json::json!(0.1),
        ];
        fn build(
            rng: &mut Lcg,
            depth: u32,
            s: &[&str],
            n: &[serde_json::Value],
        ) -> serde_json::Value {
            match rng.next() % if depth > 3 { 4 } else { 6 } {
                0 => serde_json::Value::Null,
                1 => serde_json::Value::Bool(rng.next().is_multiple_of(2)),
                2 => n[(rng.next() % n.len() as u64) as usize].clone(),
                3 => serde_json::Value::String(rng.pick(s).to_owned()),
                4 => (0..rng.next() % 4)
                    .map(|_| build(rng, depth + 1, s, n))
                    .collect(),
                _ => serde_json::Value::Object(
                    (0..rng.next() % 4)
                        .map(|i| (format!("{}{i}", rng.pick(s)), build(rng, depth + 1, s, n)))
                        .collect(),
                ),
            }
        }
        for _ in 0..2_000 {
            let v = build(&mut rng, 0, &strings, &numbers);
            let mut ours = Vec::new();
            write_value(&mut ours, &v);
            assert_eq!(String::from_utf8(ours).unwrap(), to_string(&v).unwrap());
        }
    }

    #[test]
    fn plain_strings_pass_through() {
        assert_eq!(to_string("hello").unwrap(), r#""hello""#);
        assert_eq!(to_string("€").unwrap(), "\"€\"");
    }

    /// The SockJS protocol's `escapable_by_server` set above U+00FF.
    fn sockjs_escapable(c: char) -> bool {
        matches!(c as u32, 0x200C..=0x200F | 0x2028..=0x202F | 0x2060..=0x206F | 0xFFF0..=0xFFFF)
    }

    #[test]
    fn sockjs_strings_escape_what_the_protocol_lists_and_round_trip() {
        let mut all = String::new();
        let mut want = String::from("\"");
        for c in (0x100..0x10000).filter_map(char::from_u32) {
            all.push(c);
            if sockjs_escapable(c) {
                want.push_str(&format!("\\u{:04x}", c as u32));
            } else {
                // Go's own escapes still apply (`<>&` are below U+0100).
                want.push(c);
            }
        }
        want.push('"');
        let mut out = Vec::new();
        write_sockjs_str(&mut out, &all);
        let got = String::from_utf8(out).unwrap();
        assert_eq!(got, want);
        assert_eq!(serde_json::from_str::<String>(&got).unwrap(), all);
        // Below U+0100 it is Go's escaping, and a string with none of those characters is
        // written as `write_str` writes it.
        for text in [
            "<a & b>",
            "plain ascii text that is long enough",
            "\u{7f}\u{1f}é\"\\",
        ] {
            let mut a = Vec::new();
            let mut b = Vec::new();
            write_sockjs_str(&mut a, text);
            write_str(&mut b, text);
            assert_eq!(a, b, "{text:?}");
        }
        // Long clean runs, and the characters right after them, take the same path.
        let long = format!("{}\u{ffff}{}\u{200d}", "x".repeat(100), "y".repeat(40));
        let mut out = Vec::new();
        write_sockjs_str(&mut out, &long);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("\"{}\\uffff{}\\u200d\"", "x".repeat(100), "y".repeat(40))
        );
    }
}
