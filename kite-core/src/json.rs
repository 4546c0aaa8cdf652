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

/// Appends `s` as a JSON string literal (quoted, Go escaping) to `out`.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    // Serializing a str cannot fail.
    let _ = write_into(out, s);
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
    fn plain_strings_pass_through() {
        assert_eq!(to_string("hello").unwrap(), r#""hello""#);
        assert_eq!(to_string("€").unwrap(), "\"€\"");
    }
}
