//! The client's URLs (kite_native::transport): a kite's base URL (from a user, or from a
//! Kontrol's `getKites` answer) through `parse_base_url`, and every URL the transports build
//! from it: the SockJS websocket URL, the xhr session and endpoint URLs, the raw websocket URL
//! and the `Origin` header. Each must parse to the URL it means: same host, port (written out
//! for websockets, as Go does), path plus the SockJS segments, query; the scheme switched only
//! as documented.
#![no_main]

use kite_native::fuzzing;
use kite_native::transport::{parse_base_url, sockjs_websocket_url};
use libfuzzer_sys::fuzz_target;
use url::Url;

fn join(path: &str, segments: &[&str]) -> String {
    let mut out = path.trim_end_matches('/').to_owned();
    for s in segments {
        out.push('/');
        out.push_str(s);
    }
    out
}

fn check(text: &str, server: &str, session: &str) {
    let Ok(base) = parse_base_url(text) else {
        assert!(sockjs_websocket_url(text, server, session).is_err());
        return;
    };
    assert!(
        matches!(base.scheme(), "http" | "https" | "ws" | "wss"),
        "{text:?}"
    );
    assert!(base.host_str().is_some_and(|h| !h.is_empty()), "{text:?}");
    let secure = matches!(base.scheme(), "https" | "wss");

    let ws = sockjs_websocket_url(text, server, session).expect("the base URL parsed");
    let parsed = Url::parse(&ws).unwrap_or_else(|e| panic!("{text:?} gave {ws:?}: {e}"));
    assert_eq!(parsed.scheme(), if secure { "wss" } else { "ws" }, "{ws}");
    assert_eq!(parsed.host(), base.host(), "{text:?} gave {ws:?}");
    assert_eq!(
        parsed.port_or_known_default(),
        base.port_or_known_default(),
        "{ws}"
    );
    assert_eq!(
        parsed.path(),
        join(base.path(), &[server, session, "websocket"]),
        "{text:?} gave {ws:?}"
    );
    assert_eq!(parsed.query(), base.query(), "{text:?} gave {ws:?}");
    assert_eq!(parsed.fragment(), None);

    let xhr = fuzzing::xhr_session_url(&base, server, session);
    assert_eq!(xhr.scheme(), if secure { "https" } else { "http" }, "{xhr}");
    assert_eq!(xhr.host(), base.host());
    assert_eq!(xhr.port_or_known_default(), base.port_or_known_default());
    assert_eq!(
        xhr.path(),
        join(base.path(), &[server, session]),
        "{text:?}"
    );
    assert_eq!(xhr.query(), base.query());
    assert_eq!(xhr.fragment(), None);
    assert_eq!(Url::parse(xhr.as_str()).as_ref(), Ok(&xhr));
    for name in ["xhr", "xhr_send", "xhr_streaming"] {
        let e = fuzzing::endpoint(&xhr, name);
        assert_eq!(e.path(), join(xhr.path(), &[name]));
        assert_eq!(
            (e.scheme(), e.host(), e.port(), e.query()),
            (xhr.scheme(), xhr.host(), xhr.port(), xhr.query())
        );
        assert_eq!(Url::parse(e.as_str()).as_ref(), Ok(&e));
    }

    let origin = fuzzing::origin_of(&base);
    let o = Url::parse(&origin).unwrap_or_else(|e| panic!("origin {origin:?} of {text:?}: {e}"));
    assert_eq!(
        (o.scheme(), o.host(), o.port()),
        (base.scheme(), base.host(), base.port()),
        "{origin}"
    );
    assert!(
        origin.parse::<axum::http::HeaderValue>().is_ok(),
        "{origin:?}"
    );
}

fn check_raw(text: &str) {
    let parsed = parse_base_url(text.trim());
    let raw = fuzzing::raw_websocket_url(text);
    let Ok(base) = parsed else {
        assert!(raw.is_err(), "{text:?}: {raw:?}");
        return;
    };
    let raw = raw.unwrap_or_else(|e| panic!("{text:?} parses but: {e}"));
    let mut want = base.clone();
    let scheme = match base.scheme() {
        "https" | "wss" => "wss",
        _ => "ws",
    };
    want.set_scheme(scheme).expect("special schemes switch");
    let got = Url::parse(&raw).unwrap_or_else(|e| panic!("{text:?} gave {raw:?}: {e}"));
    assert_eq!(got, want, "{text:?} gave {raw:?}");
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // Server and session ids as the client makes them (3 digits, 20 hex digits).
    let n = data
        .iter()
        .fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(*b)));
    let server = (100 + n % 900).to_string();
    let session = format!("{:020x}", u128::from(n) * 0x9e37_79b9);
    check(&text, &server, &session);
    check_raw(&text);
});
