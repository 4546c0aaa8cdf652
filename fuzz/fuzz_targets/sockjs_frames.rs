//! SockJS frames in both directions (kite_core::sockjs).
//!
//! The first byte picks what the rest is: `S` a server → client frame (a websocket message or
//! an XHR line): `Frame::decode` and `RawFrame::split` must decide as a serde_json reading of
//! the SockJS grammar does, and what decodes must encode and decode back to itself. `C` a
//! client → server frame: `decode_client_frame` against serde_json likewise, and the messages
//! must round trip through `encode_client_frame`. Anything else: the rest is turned into
//! messages, a close code and reason and a callback name, which every encoder (message, close,
//! client, eventsource, JSONP, htmlfile and iframe wrappers) must write so that they decode to
//! the same values and cannot break out of their wrapper.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use kite_core::sockjs::{self, Frame, FrameError, RawFrame};
use libfuzzer_sys::fuzz_target;

/// The server frame as a serde_json reading of the SockJS grammar gives it.
fn reference_server(text: &str) -> Result<Frame, FrameError> {
    let text = text.strip_suffix('\n').unwrap_or(text);
    let mut chars = text.chars();
    let kind = chars.next().ok_or(FrameError::Empty)?;
    let body = chars.as_str();
    let broken = |e: serde_json::Error| FrameError::Broken(e.to_string());
    Ok(match kind {
        'o' => Frame::Open,
        'h' => Frame::Heartbeat,
        'a' => Frame::Messages(serde_json::from_str(body).map_err(broken)?),
        'm' => Frame::Message(serde_json::from_str(body).map_err(broken)?),
        'c' => {
            let (code, reason) = serde_json::from_str::<(u16, String)>(body).map_err(broken)?;
            Frame::Close { code, reason }
        }
        other => return Err(FrameError::UnknownType(other)),
    })
}

fn server(text: &str) {
    let ours = Frame::decode(text);
    let reference = reference_server(text);
    match (&ours, &reference) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "{text:?}"),
        (Err(FrameError::Broken(_)), Err(FrameError::Broken(_))) => {}
        (Err(a), Err(b)) => assert_eq!(a, b, "{text:?}"),
        _ => panic!("{text:?}: ours {ours:?}, reference {reference:?}"),
    }
    // split agrees with decode on the kind.
    match (RawFrame::split(text), &ours) {
        (Err(a), Err(b)) => assert_eq!(&a, b),
        (Ok(RawFrame::Open), Ok(Frame::Open)) | (Ok(RawFrame::Heartbeat), Ok(Frame::Heartbeat)) => {
        }
        (Ok(RawFrame::Messages(_)), Ok(Frame::Messages(_)) | Err(FrameError::Broken(_))) => {}
        (Ok(RawFrame::Message(_)), Ok(Frame::Message(_)) | Err(FrameError::Broken(_))) => {}
        (Ok(RawFrame::Close(_)), Ok(Frame::Close { .. }) | Err(FrameError::Broken(_))) => {}
        (split, decoded) => panic!("{text:?}: split {split:?}, decode {decoded:?}"),
    }
    if let Ok(frame) = ours {
        let encoded = frame.encode();
        assert_eq!(Frame::decode(&encoded).as_ref(), Ok(&frame), "{encoded:?}");
        assert_eq!(Frame::decode(&format!("{encoded}\n")), Ok(frame));
    }
}

/// The client frame as serde_json reads it (after the ASCII whitespace the server trims).
fn reference_client(text: &str) -> Result<Vec<String>, serde_json::Error> {
    let t = text.trim_ascii();
    if t.is_empty() {
        Ok(Vec::new())
    } else if t.starts_with('"') {
        serde_json::from_str::<String>(t).map(|s| vec![s])
    } else {
        serde_json::from_str(t)
    }
}

fn client(text: &str) {
    let ours = sockjs::decode_client_frame(text);
    let reference = reference_client(text);
    match (&ours, &reference) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "{text:?}"),
        (Err(FrameError::Broken(_)), Err(_)) => {}
        _ => panic!("{text:?}: ours {ours:?}, serde_json {reference:?}"),
    }
    if let Ok(msgs) = ours {
        let encoded = sockjs::encode_client_frame(msgs.iter().map(String::as_str));
        assert_eq!(sockjs::decode_client_frame(&encoded), Ok(msgs));
    }
}

#[derive(Debug, Arbitrary)]
struct Encode {
    msgs: Vec<String>,
    code: u16,
    reason: String,
    callback: String,
    url: String,
}

/// Undoes eventsource_event's percent-encoding of `%`, CR, LF and NUL.
fn eventsource_decode(s: &str) -> String {
    s.replace("%0D", "\r")
        .replace("%0A", "\n")
        .replace("%00", "\0")
        .replace("%25", "%")
}

fn encode(e: Encode) {
    let msgs: Vec<&str> = e.msgs.iter().map(String::as_str).collect();
    let frame = sockjs::encode_messages(msgs.iter().copied());
    assert_eq!(Frame::decode(&frame), Ok(Frame::Messages(e.msgs.clone())));
    assert_eq!(
        serde_json::from_str::<Vec<String>>(&frame[1..]).unwrap(),
        e.msgs
    );
    let mut into = Vec::new();
    Frame::Messages(e.msgs.clone()).encode_into(&mut into);
    assert_eq!(into, frame.as_bytes());

    let close = sockjs::encode_close(e.code, &e.reason);
    assert_eq!(
        Frame::decode(&close),
        Ok(Frame::Close {
            code: e.code,
            reason: e.reason.clone()
        })
    );
    let single = Frame::Message(e.reason.clone()).encode();
    assert_eq!(Frame::decode(&single), Ok(Frame::Message(e.reason.clone())));

    let client = sockjs::encode_client_frame(msgs.iter().copied());
    assert_eq!(sockjs::decode_client_frame(&client), Ok(e.msgs.clone()));

    for f in [frame.as_str(), close.as_str(), e.reason.as_str()] {
        // Eventsource: one `data:` line whose text decodes to the frame.
        let event = sockjs::eventsource_event(f);
        let data = event
            .strip_prefix("data: ")
            .and_then(|s| s.strip_suffix("\r\n\r\n"))
            .expect("an event");
        assert!(!data.contains(['\r', '\n', '\0']), "{event:?}");
        assert_eq!(eventsource_decode(data), f);

        // htmlfile: the frame is a JSON string that cannot end the script element.
        let chunk = sockjs::htmlfile_chunk(f);
        let inner = chunk
            .strip_prefix("<script>\np(")
            .and_then(|s| s.strip_suffix(");\n</script>\r\n"))
            .expect("a chunk");
        assert!(!inner.contains(['<', '>', '&']), "{chunk:?}");
        assert_eq!(serde_json::from_str::<String>(inner).unwrap(), f);
    }

    let valid = !e.callback.is_empty()
        && e.callback
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    assert_eq!(
        sockjs::valid_callback(&e.callback),
        valid,
        "{:?}",
        e.callback
    );
    if valid {
        let answer = sockjs::jsonp_answer(&e.callback, &frame);
        let inner = answer
            .strip_prefix(&format!("/**/{}(", e.callback))
            .and_then(|s| s.strip_suffix(");\r\n"))
            .expect("a JSONP answer");
        assert!(!inner.contains(['\u{2028}', '\u{2029}']), "{answer:?}");
        assert_eq!(serde_json::from_str::<String>(inner).unwrap(), frame);
        let head = sockjs::htmlfile_head(&e.callback);
        assert!(head.len() > 1024 && head.contains(&format!("var c = parent.{};", e.callback)));
    }

    // The iframe page: the script URL stays inside its attribute.
    let page = sockjs::iframe_page(&e.url);
    let attr = page
        .split_once("<script src=\"")
        .and_then(|(_, rest)| rest.split_once("\"></script>"))
        .map(|(attr, _)| attr)
        .expect("a script element");
    assert!(!attr.contains(['"', '<', '>']), "{attr:?}");
    let unescaped = attr
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    assert_eq!(unescaped, e.url);
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = kite_fuzz::mode(data) else {
        return;
    };
    match mode {
        b'S' => server(&String::from_utf8_lossy(rest)),
        b'C' => client(&String::from_utf8_lossy(rest)),
        _ => {
            if let Ok(e) = Encode::arbitrary_take_rest(Unstructured::new(rest)) {
                encode(e);
            }
        }
    }
});
