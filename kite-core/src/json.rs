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

/// Appends `s` as a JSON string literal (quoted, Go escaping) to `out`.
///
/// This is the hot path of every SockJS frame (each dnode message is a JSON string inside the
/// frame), so it scans with a table instead of going through serde; the output is the same as
/// [`to_string`] of the string.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let class = ESCAPE[b as usize];
        if class == 0 {
            i += 1;
            continue;
        }
        if class == b'L' {
            // U+2028 is E2 80 A8, U+2029 is E2 80 A9; other characters starting E2 pass.
            if bytes.get(i + 1) == Some(&0x80) && matches!(bytes.get(i + 2), Some(0xA8 | 0xA9)) {
                out.extend_from_slice(&bytes[start..i]);
                out.extend_from_slice(if bytes[i + 2] == 0xA8 {
                    b"\\u2028"
                } else {
                    b"\\u2029"
                });
                i += 3;
                start = i;
            } else {
                i += 1;
            }
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        match class {
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
        i += 1;
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
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

    #[test]
    fn plain_strings_pass_through() {
        assert_eq!(to_string("hello").unwrap(), r#""hello""#);
        assert_eq!(to_string("€").unwrap(), "\"€\"");
    }
}
