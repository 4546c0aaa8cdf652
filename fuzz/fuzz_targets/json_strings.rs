//! kite-core's hand-written JSON string decoder and escaper (kite_core::json), differentially
//! against serde_json.
//!
//! The first byte picks the function, the rest is its input (as UTF-8, invalid bytes replaced):
//! `L` parse_string_list, `P` parse_string, `X` parse_close (each must accept exactly what
//! serde_json accepts for `Vec<String>`, `String`, `(u16, String)` and decode the same
//! strings), `E` the escapers (write_str, write_sockjs_str, write_contents, escape_contents:
//! what they write parses back to the input with serde_json, is what serde_json with Go's
//! formatter writes, and leaves none of the characters Go or SockJS escape raw). Any other
//! first byte runs every decoder on the rest.
#![no_main]

use kite_core::json;
use libfuzzer_sys::fuzz_target;

fn same<T: PartialEq + std::fmt::Debug, E1: std::fmt::Debug, E2: std::fmt::Debug>(
    what: &str,
    text: &str,
    ours: Result<T, E1>,
    serde: Result<T, E2>,
) {
    match (&ours, &serde) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "{what} {text:?}: decoded differently"),
        (Err(_), Err(_)) => {}
        _ => panic!("{what} {text:?}: ours {ours:?}, serde_json {serde:?}"),
    }
}

fn list(text: &str) {
    same(
        "parse_string_list",
        text,
        json::parse_string_list(text),
        serde_json::from_str::<Vec<String>>(text),
    );
}

fn string(text: &str) {
    same(
        "parse_string",
        text,
        json::parse_string(text),
        serde_json::from_str::<String>(text),
    );
}

fn close(text: &str) {
    same(
        "parse_close",
        text,
        json::parse_close(text),
        serde_json::from_str::<(u16, String)>(text),
    );
}

/// Characters Go's encoding/json escapes beyond JSON's own (`<`, `>`, `&`, U+2028, U+2029).
fn go_escapes(c: char) -> bool {
    matches!(c, '<' | '>' | '&' | '\u{2028}' | '\u{2029}')
}

/// The SockJS protocol's `escapable_by_server` characters above U+00FF.
fn sockjs_escapes(c: char) -> bool {
    matches!(c as u32, 0x200C..=0x200F | 0x2028..=0x202F | 0x2060..=0x206F | 0xFFF0..=0xFFFF)
}

fn escapes(raw: &[u8], text: &str) {
    let mut quoted = Vec::new();
    json::write_str(&mut quoted, text);
    let quoted = String::from_utf8(quoted).expect("write_str writes UTF-8");
    assert_eq!(
        serde_json::from_str::<String>(&quoted).expect("write_str writes a JSON string"),
        text,
        "write_str {text:?} does not parse back"
    );
    assert_eq!(
        quoted,
        json::to_string(text).unwrap(),
        "write_str {text:?} differs from serde_json with Go's formatter"
    );
    let inner = &quoted[1..quoted.len() - 1];
    assert!(
        !inner.chars().any(|c| go_escapes(c) || c < ' '),
        "write_str {text:?} left a character raw: {quoted:?}"
    );
    // Our decoder reads it back too.
    assert_eq!(json::parse_string(&quoted).as_deref(), Ok(text));

    let mut contents = Vec::new();
    json::write_contents(&mut contents, text);
    assert_eq!(contents, inner.as_bytes(), "write_contents {text:?}");
    if std::str::from_utf8(raw).is_ok() {
        assert_eq!(
            json::escape_contents(raw),
            inner.as_bytes(),
            "escape_contents"
        );
    } else {
        // Documented to take UTF-8 only; it must not panic on anything else.
        let _ = json::escape_contents(raw);
    }

    let mut sockjs = Vec::new();
    json::write_sockjs_str(&mut sockjs, text);
    let sockjs = String::from_utf8(sockjs).expect("write_sockjs_str writes UTF-8");
    assert_eq!(
        serde_json::from_str::<String>(&sockjs).expect("write_sockjs_str writes a JSON string"),
        text,
        "write_sockjs_str {text:?} does not parse back"
    );
    assert!(
        !sockjs[1..sockjs.len() - 1]
            .chars()
            .any(|c| go_escapes(c) || sockjs_escapes(c) || c < ' '),
        "write_sockjs_str {text:?} left a character raw: {sockjs:?}"
    );
    if !text.chars().any(sockjs_escapes) {
        assert_eq!(sockjs, quoted, "write_sockjs_str differs from write_str");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = kite_fuzz::mode(data) else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match mode {
        b'L' => list(&text),
        b'P' => string(&text),
        b'X' => close(&text),
        b'E' => escapes(rest, &text),
        _ => {
            list(&text);
            string(&text);
            close(&text);
        }
    }
});
