//! SockJS framing (protocol 0.3.x), shared by native and wasm transports.
//!
//! Server → client frames: `o` (open), `h` (heartbeat), `a[...]` (a batch of messages, each a JSON
//! string), `c[code,"reason"]` (close) and the legacy `m"..."` (one message; servers never send it,
//! clients accept it). Client → server frames are JSON arrays of strings (`["msg1","msg2"]`), sent
//! as one websocket text message or as one `xhr_send` body.
//!
//! ```
//! use kite_core::sockjs::{self, Frame};
//!
//! let frame = Frame::decode("a[\"{\\\"method\\\":0}\"]").unwrap();
//! assert_eq!(frame, Frame::Messages(vec!["{\"method\":0}".to_owned()]));
//! assert_eq!(sockjs::decode_client_frame("[\"hi\"]").unwrap(), vec!["hi".to_owned()]);
//! ```
//!
//! [`server`] is a SockJS server built on this framing, as a sans-IO state machine.

use crate::json;

pub mod server;

/// Close code and reason Kite sends when it ends a session (`c[3000,"Go away!"]`).
pub const GO_AWAY: (u16, &str) = (3000, "Go away!");
/// Close code and reason a second concurrent receiver of one session gets.
pub const ANOTHER_CONNECTION_OPEN: (u16, &str) = (2010, "Another connection still open");
/// Close code and reason for a message larger than the configured limit.
pub const MESSAGE_TOO_BIG: (u16, &str) = (1009, "Message too big");
/// Close code and reason for a client frame that is not a JSON array of strings. As in
/// sockjs-node, a websocket session ends with a websocket close of this code and reason, and no
/// SockJS `c` frame.
pub const BROKEN_FRAME: (u16, &str) = (3000, "Broken framing.");
/// Close code and reason of a session whose receiving request was cut off by the network (the
/// client cannot know what it missed, so the session ends).
pub const CONNECTION_INTERRUPTED: (u16, &str) = (1002, "Connection interrupted");

/// One server → client SockJS frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `o`: the session is open.
    Open,
    /// `h`: heartbeat.
    Heartbeat,
    /// `a[...]`: one or more messages.
    Messages(Vec<String>),
    /// `m"..."`: a single message (legacy; accepted, never sent).
    Message(String),
    /// `c[code,"reason"]`: the session is closed.
    Close {
        /// Close code (`3000`, `2010`, ...).
        code: u16,
        /// Human readable reason.
        reason: String,
    },
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame was empty.
    #[error("empty SockJS frame")]
    Empty,
    /// The first byte is not one of `o h a m c`.
    #[error("unknown SockJS frame type '{0}'")]
    UnknownType(char),
    /// The JSON body of the frame is malformed or of the wrong shape.
    #[error("broken SockJS frame: {0}")]
    Broken(String),
}

/// A server → client frame split into its type and its JSON body, not parsed: for drivers that
/// parse JSON themselves (a browser's `JSON.parse`). [`Frame::decode`] is this plus parsing.
///
/// `B` is the body: a `&str` from [`RawFrame::split`], or a driver's own string (a JavaScript
/// string, say) through [`RawFrame::from_parts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawFrame<B> {
    /// `o`.
    Open,
    /// `h`.
    Heartbeat,
    /// `a[...]`: the body should be a JSON array of strings, each a message.
    Messages(B),
    /// `m"..."`: the body should be one JSON string.
    Message(B),
    /// `c[code,"reason"]`: the body should be that array.
    Close(B),
}

impl<B> RawFrame<B> {
    /// The frame whose first character is `kind`, followed by `body`.
    pub fn from_parts(kind: char, body: B) -> Result<RawFrame<B>, FrameError> {
        Ok(match kind {
            'o' => RawFrame::Open,
            'h' => RawFrame::Heartbeat,
            'a' => RawFrame::Messages(body),
            'm' => RawFrame::Message(body),
            'c' => RawFrame::Close(body),
            other => return Err(FrameError::UnknownType(other)),
        })
    }
}

impl<'a> RawFrame<&'a str> {
    /// Splits a server → client frame (one websocket message, or one line of an XHR body,
    /// with or without its trailing newline).
    pub fn split(text: &'a str) -> Result<RawFrame<&'a str>, FrameError> {
        let text = text.strip_suffix('\n').unwrap_or(text);
        let mut chars = text.chars();
        let kind = chars.next().ok_or(FrameError::Empty)?;
        RawFrame::from_parts(kind, chars.as_str())
    }
}

impl Frame {
    /// Decodes a server → client frame (one websocket message, or one line of an XHR body
    /// without its trailing newline).
    pub fn decode(text: &str) -> Result<Frame, FrameError> {
        let broken = |e: json::ListError| FrameError::Broken(e.to_string());
        match RawFrame::split(text)? {
            RawFrame::Open => Ok(Frame::Open),
            RawFrame::Heartbeat => Ok(Frame::Heartbeat),
            RawFrame::Messages(body) => json::parse_string_list(body)
                .map(Frame::Messages)
                .map_err(broken),
            RawFrame::Message(body) => json::parse_string(body).map(Frame::Message).map_err(broken),
            RawFrame::Close(body) => json::parse_close(body)
                .map(|(code, reason)| Frame::Close { code, reason })
                .map_err(broken),
        }
    }

    /// Encodes this frame, without any trailing newline.
    pub fn encode(&self) -> String {
        let mut out = Vec::with_capacity(64);
        self.encode_into(&mut out);
        String::from_utf8(out).expect("frames are UTF-8")
    }

    /// Appends the encoded frame to `out`, without any trailing newline.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Frame::Open => out.push(b'o'),
            Frame::Heartbeat => out.push(b'h'),
            Frame::Messages(msgs) => encode_messages_into(out, msgs.iter().map(String::as_str)),
            Frame::Message(msg) => {
                out.push(b'm');
                json::write_str(out, msg);
            }
            Frame::Close { code, reason } => encode_close_into(out, *code, reason),
        }
    }
}

/// Appends an `a[...]` frame holding `msgs` to `out`.
pub fn encode_messages_into<'a>(out: &mut Vec<u8>, msgs: impl IntoIterator<Item = &'a str>) {
    out.extend_from_slice(b"a[");
    for (i, msg) in msgs.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json::write_sockjs_str(out, msg);
    }
    out.push(b']');
}

/// Encodes an `a[...]` frame holding `msgs`.
pub fn encode_messages<'a>(msgs: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = Vec::with_capacity(64);
    encode_messages_into(&mut out, msgs);
    String::from_utf8(out).expect("frames are UTF-8")
}

/// Appends a `c[code,"reason"]` frame to `out`.
pub fn encode_close_into(out: &mut Vec<u8>, code: u16, reason: &str) {
    out.extend_from_slice(b"c[");
    out.extend_from_slice(code.to_string().as_bytes());
    out.push(b',');
    json::write_str(out, reason);
    out.push(b']');
}

/// Encodes a `c[code,"reason"]` frame.
pub fn encode_close(code: u16, reason: &str) -> String {
    let mut out = Vec::with_capacity(32);
    encode_close_into(&mut out, code, reason);
    String::from_utf8(out).expect("frames are UTF-8")
}

/// Encodes a client → server frame: a JSON array of strings.
pub fn encode_client_frame<'a>(msgs: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = Vec::with_capacity(64);
    out.push(b'[');
    for (i, msg) in msgs.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json::write_str(&mut out, msg);
    }
    out.push(b']');
    String::from_utf8(out).expect("frames are UTF-8")
}

/// Decodes a client → server frame.
///
/// Accepts a JSON array of strings (the standard form) and, like sockjs-node, a single JSON string
/// as one message. An empty or whitespace-only frame decodes to no messages (the SockJS spec says
/// such frames are ignored). Anything else is [`FrameError::Broken`]: the server should close the
/// session with [`BROKEN_FRAME`].
pub fn decode_client_frame(text: &str) -> Result<Vec<String>, FrameError> {
    let trimmed = text.trim_ascii();
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    let broken = |e: json::ListError| FrameError::Broken(e.to_string());
    if trimmed.starts_with('"') {
        return json::parse_string(trimmed).map(|s| vec![s]).map_err(broken);
    }
    json::parse_string_list(trimmed).map_err(broken)
}

/// The body that opens an `xhr_streaming` response: 2048 `h` bytes and a newline, so that
/// browsers start delivering the stream at once.
pub fn xhr_streaming_prelude() -> String {
    let mut s = "h".repeat(2048);
    s.push('\n');
    s
}

/// An eventsource event carrying one frame: `data: <frame>\r\n\r\n`, with `%`, CR, LF and NUL
/// percent-encoded as sockjs-node does (sockjs-client runs `decodeURI` on every event, so a bare
/// `%` in a message would break it). Frames never hold raw newlines (messages are JSON
/// strings), so one `data:` line always suffices.
pub fn eventsource_event(frame: &str) -> String {
    let mut out = String::with_capacity(frame.len() + 12);
    out.push_str("data: ");
    for c in frame.chars() {
        match c {
            '%' => out.push_str("%25"),
            '\r' => out.push_str("%0D"),
            '\n' => out.push_str("%0A"),
            '\0' => out.push_str("%00"),
            c => out.push(c),
        }
    }
    out.push_str("\r\n\r\n");
    out
}

/// The first bytes of an eventsource response (a newline Opera needed).
pub const EVENTSOURCE_PRELUDE: &str = "\r\n";

/// Whether `name` may be used as a JSONP or htmlfile callback: non-empty, only
/// `[a-zA-Z0-9_.-]`, so the page it is written into cannot run anything else.
pub fn valid_callback(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A JSONP polling answer: `/**/callback("<frame as a JSON string>");\r\n`. `callback` must
/// pass [`valid_callback`].
pub fn jsonp_answer(callback: &str, frame: &str) -> String {
    let mut out = Vec::with_capacity(frame.len() + callback.len() + 16);
    out.extend_from_slice(b"/**/");
    out.extend_from_slice(callback.as_bytes());
    out.push(b'(');
    json::write_sockjs_str(&mut out, frame);
    out.extend_from_slice(b");\r\n");
    String::from_utf8(out).expect("frames are UTF-8")
}

/// The head of an htmlfile response: a page that hands each frame to `parent.<callback>`,
/// padded past 1 KiB so that browsers start rendering at once. `callback` must pass
/// [`valid_callback`].
pub fn htmlfile_head(callback: &str) -> String {
    let mut head = format!(
        "<!doctype html>\n<html><head>\n  <meta http-equiv=\"X-UA-Compatible\" content=\"IE=edge\" />\n  <meta http-equiv=\"Content-Type\" content=\"text/html; charset=UTF-8\" />\n</head><body><h2>Don't panic!</h2>\n  <script>\n    document.domain = document.domain;\n    var c = parent.{callback};\n    c.start();\n    function p(d) {{c.message(d);}};\n    window.onload = function() {{c.stop();}};\n  </script>"
    );
    head.push_str(&" ".repeat(1024usize.saturating_sub(head.len()) + 14));
    head.push_str("\r\n\r\n");
    head
}

/// One htmlfile chunk carrying a frame: `<script>\np("<frame>");\n</script>\r\n`. The frame is a
/// JSON string, with `<`, `>` and `&` escaped, so it cannot close the script element.
pub fn htmlfile_chunk(frame: &str) -> String {
    let mut out = Vec::with_capacity(frame.len() + 32);
    out.extend_from_slice(b"<script>\np(");
    json::write_sockjs_str(&mut out, frame);
    out.extend_from_slice(b");\n</script>\r\n");
    String::from_utf8(out).expect("frames are UTF-8")
}

/// The iframe page some browser transports load from the server's origin; it runs the SockJS
/// client script found at `sockjs_url`.
pub fn iframe_page(sockjs_url: &str) -> String {
    // The URL sits in an attribute: escape what could end it or start markup.
    let mut url = String::with_capacity(sockjs_url.len());
    for c in sockjs_url.chars() {
        match c {
            '&' => url.push_str("&amp;"),
            '"' => url.push_str("&quot;"),
            '<' => url.push_str("&lt;"),
            '>' => url.push_str("&gt;"),
            c => url.push(c),
        }
    }
    format!(
        "<!DOCTYPE html>\n<html>\n<head>\n  <meta http-equiv=\"X-UA-Compatible\" content=\"IE=edge\" />\n  <meta http-equiv=\"Content-Type\" content=\"text/html; charset=UTF-8\" />\n  <script src=\"{url}\"></script>\n  <script>\n    document.domain = document.domain;\n    SockJS.bootstrap_iframe();\n  </script>\n</head>\n<body>\n  <h2>Don't panic!</h2>\n  <p>This is a SockJS hidden iframe. It's used for cross domain magic.</p>\n</body>\n</html>"
    )
}

/// The default script of the iframe page (sockjs-client 1.6.1 from a CDN, as sockjs-node
/// serves); servers let users configure their own.
pub const DEFAULT_SOCKJS_URL: &str =
    "https://cdn.jsdelivr.net/npm/sockjs-client@1.6.1/dist/sockjs.min.js";

/// The `/info` response body.
pub fn info_body(websocket: bool, cookie_needed: bool, entropy: u32) -> String {
    format!(
        "{{\"websocket\":{websocket},\"cookie_needed\":{cookie_needed},\"origins\":[\"*:*\"],\"entropy\":{entropy}}}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_server_frames() {
        for f in [
            Frame::Open,
            Frame::Heartbeat,
            Frame::Messages(vec!["{\"a\":\"<x>\"}".into(), "two".into()]),
            Frame::Message("m".into()),
            Frame::Close {
                code: 3000,
                reason: "Go away!".into(),
            },
        ] {
            assert_eq!(Frame::decode(&f.encode()).unwrap(), f);
        }
    }

    #[test]
    fn close_frames_read_as_serde_reads_them() {
        for body in [
            r#"[3000,"Go away!"]"#,
            r#" [ 1002 , "Broken \"framing\" \u00e9" ] "#,
            r#"[2010,"Another connection still open"]"#,
            r#"[70000,"too big"]"#,
            r#"[-1,"x"]"#,
            r#"[1.5,"x"]"#,
            r#"[3000]"#,
            r#"[3000,"x",1]"#,
            r#"[3000,"x"]x"#,
            r#"{"code":3000}"#,
            r#"[3000,5]"#,
            // Found by the json_strings and sockjs_frames fuzz targets: leading zeros were
            // read as a code.
            r#"[03000,"x"]"#,
            r#"[00,"x"]"#,
            r#"[0,"x"]"#,
            "",
        ] {
            let serde = serde_json::from_str::<(u16, String)>(body).ok();
            assert_eq!(json::parse_close(body).ok(), serde, "{body}");
        }
    }

    #[test]
    fn encodes_like_go_sockjs() {
        assert_eq!(encode_close(3000, "Go away!"), "c[3000,\"Go away!\"]");
        assert_eq!(
            encode_messages(["{\"method\":0,\"arguments\":[\"<\"]}"]),
            r#"a["{\"method\":0,\"arguments\":[\"\u003c\"]}"]"#
        );
    }

    #[test]
    fn decodes_client_frames() {
        assert_eq!(
            decode_client_frame(r#"["a","b"]"#).unwrap(),
            vec!["a".to_owned(), "b".to_owned()]
        );
        assert_eq!(decode_client_frame(r#""a""#).unwrap(), vec!["a".to_owned()]);
        assert!(decode_client_frame("").unwrap().is_empty());
        assert!(decode_client_frame("[\"a").is_err());
        assert!(decode_client_frame("{\"a\":1}").is_err());
        assert!(decode_client_frame("[1]").is_err());
    }

    #[test]
    fn rejects_bad_server_frames() {
        assert_eq!(Frame::decode(""), Err(FrameError::Empty));
        assert!(matches!(
            Frame::decode("x"),
            Err(FrameError::UnknownType('x'))
        ));
        assert!(matches!(Frame::decode("a[1"), Err(FrameError::Broken(_))));
        assert_eq!(Frame::decode("h\n"), Ok(Frame::Heartbeat));
    }

    #[test]
    fn transport_wrappers() {
        assert_eq!(eventsource_event("o"), "data: o\r\n\r\n");
        assert_eq!(
            eventsource_event("a[\"100% \u{e9}\"]"),
            "data: a[\"100%25 \u{e9}\"]\r\n\r\n"
        );
        assert_eq!(
            jsonp_answer("callback", "a[\"x\"]"),
            "/**/callback(\"a[\\\"x\\\"]\");\r\n"
        );
        assert_eq!(
            htmlfile_chunk("a[\"x\"]"),
            "<script>\np(\"a[\\\"x\\\"]\");\n</script>\r\n"
        );
        // `</script>` inside a message cannot end the element.
        assert!(!htmlfile_chunk("a[\"</script>\"]")[8..].contains("</script>\n<"));
        let head = htmlfile_head("cb");
        assert!(head.len() > 1024);
        assert!(head.contains("var c = parent.cb;"));
        for ok in ["callback", "a.b-c_9", "x"] {
            assert!(valid_callback(ok), "{ok}");
        }
        for bad in ["", " ", "*", "abc(", "a;b", "é"] {
            assert!(!valid_callback(bad), "{bad}");
        }
        let page = iframe_page("/s.js?a=1&b=\"<x>\"");
        assert!(page.contains("<script src=\"/s.js?a=1&amp;b=&quot;&lt;x&gt;&quot;\"></script>"));
        assert!(page.starts_with("<!DOCTYPE html>"));
    }
}
