//! [`sockjs_server`]: bytes turned into calls of a [`Server`], with a model of its peers and
//! application that checks what it says (the `sockjs_server` fuzz target and the randomized unit
//! test share it).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::session::Time;
use crate::sockjs::server::{
    HttpRequest, Output, ResponseId, SendError, Server, ServerConfig, SessionId, SocketId,
};
use crate::sockjs::{self, Frame};

/// Reads the input a byte at a time; zeros once it is used up.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    fn pick<'s, T>(&mut self, items: &'s [T]) -> &'s T {
        &items[usize::from(self.byte()) % items.len()]
    }

    /// Up to `max` raw bytes.
    fn take(&mut self, max: usize) -> &[u8] {
        let n = (usize::from(self.byte()) % (max + 1)).min(self.0.len());
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        taken
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

const KEYS: [&str; 4] = ["a", "b", "c", "d"];
const PEERS: [&str; 2] = ["p0", "p1"];
const PIECES: [&str; 6] = ["m", "<", "\"", "\u{2028}", "é", "0123456789"];

#[derive(Debug, Default)]
struct ResponseModel {
    /// The session its frames are for (receiving requests of a session that exists).
    session: Option<SessionId>,
    answered: bool,
    ended: bool,
    streaming: bool,
    /// Its client went away (`response_gone`).
    gone: bool,
    /// Chunks seen: the first of a stream is the prelude.
    chunks: usize,
}

#[derive(Debug, Default)]
struct SessionModel {
    /// Messages the application sent (`send` took them), in order.
    sent: Vec<String>,
    /// Messages that reached the peer, in order.
    delivered: Vec<String>,
    closed: bool,
    http_key: Option<String>,
    socket: Option<SocketId>,
}

#[derive(Debug, Default)]
struct SocketModel {
    framed: bool,
    open: bool,
    session: Option<SessionId>,
    /// The server closed it (`SocketClose`): nothing may follow.
    closing: bool,
}

struct Model {
    server: Server,
    now: u64,
    responses: BTreeMap<ResponseId, ResponseModel>,
    sessions: BTreeMap<SessionId, SessionModel>,
    keys: BTreeMap<String, SessionId>,
    sockets: BTreeMap<SocketId, SocketModel>,
    counter: u64,
}

impl Model {
    fn time(&self) -> Time {
        Time::from_millis(self.now)
    }

    /// A peer's frame for `sid`: messages are appended to what it got.
    fn frame(&mut self, sid: Option<SessionId>, text: &str) {
        let frame = Frame::decode(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        let Some(sid) = sid else {
            return;
        };
        let s = self
            .sessions
            .get_mut(&sid)
            .expect("frames for a known session");
        if let Frame::Messages(m) = frame {
            assert!(!m.is_empty());
            s.delivered.extend(m);
            assert!(
                s.sent.starts_with(&s.delivered),
                "delivered {:?} is not a prefix of sent {:?}",
                s.delivered,
                s.sent
            );
        }
    }

    /// HTTP body bytes of `response`: whole frames, each followed by a newline.
    fn body(&mut self, response: ResponseId, body: &[u8]) {
        let r = self.responses.get_mut(&response).expect("a known response");
        let first = r.chunks == 0;
        r.chunks += 1;
        let (sid, streaming) = (r.session, r.streaming);
        if sid.is_none() && !streaming {
            return;
        }
        let text = std::str::from_utf8(body).expect("UTF-8 bodies");
        if streaming && first {
            if text.starts_with("Too many") {
                return;
            }
            assert_eq!(text, sockjs::xhr_streaming_prelude());
            return;
        }
        if streaming {
            assert_eq!(text.matches('\n').count(), 1, "one frame a chunk: {text:?}");
        }
        for line in text.split_terminator('\n') {
            self.frame(sid, line);
        }
    }

    /// Takes every output, checking each against the model. A session `Opened` now is for the
    /// request just made: on session string `key`, whose receiving `response` reads its frames,
    /// or on `socket`.
    fn outputs(
        &mut self,
        key: Option<&str>,
        response: Option<ResponseId>,
        socket: Option<SocketId>,
    ) {
        let all = self.take();
        self.check_all(all, key, response, socket);
    }

    fn take(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.server.poll_output()).collect()
    }

    /// [`Model::outputs`] of outputs taken already.
    fn check_all(
        &mut self,
        all: Vec<Output>,
        key: Option<&str>,
        response: Option<ResponseId>,
        socket: Option<SocketId>,
    ) {
        // Sessions first: the first frame (`o`) comes before `Opened`.
        for out in &all {
            if let Output::Opened { session, .. } = *out {
                assert!(!self.sessions.contains_key(&session), "opened twice");
                assert!(key.is_some() != socket.is_some(), "Opened out of the blue");
                let mut m = SessionModel::default();
                if let Some(key) = key {
                    m.http_key = Some(key.to_owned());
                    self.keys.insert(key.to_owned(), session);
                }
                if let Some(socket) = socket {
                    m.socket = Some(socket);
                    self.sockets.get_mut(&socket).expect("a socket").session = Some(session);
                }
                self.sessions.insert(session, m);
            }
        }
        if let (Some(key), Some(response)) = (key, response) {
            let sid = self.keys.get(key).copied();
            self.responses
                .get_mut(&response)
                .expect("a response")
                .session = sid;
        }
        for out in all {
            self.check(out);
        }
        if let Some(t) = self.server.poll_timeout() {
            assert!(t > self.time(), "a timer due now was not handled");
        }
    }

    fn check(&mut self, out: Output) {
        match out {
            Output::Respond {
                response,
                status,
                body,
                end,
                ..
            } => {
                let r = self.responses.get_mut(&response).expect("a known response");
                assert!(!r.answered, "answered twice");
                r.answered = true;
                r.ended = end;
                if status != 200 {
                    r.session = None;
                    r.streaming = false;
                } else if r.streaming {
                    assert!(!end, "a stream starts open");
                } else if r.session.is_some() {
                    assert!(end, "a poll is one frame");
                }
                self.body(response, &body);
            }
            Output::Write { response, body } => {
                let r = &self.responses[&response];
                assert!(r.answered && !r.ended, "Write outside a response");
                self.body(response, &body);
            }
            Output::End { response } => {
                let r = self.responses.get_mut(&response).expect("a known response");
                assert!(r.answered && !r.ended, "End outside a response");
                r.ended = true;
            }
            Output::SocketSend { socket, text } => {
                let s = &self.sockets[&socket];
                assert!(s.open && !s.closing, "SocketSend on a socket not open");
                if s.framed {
                    let sid = s.session;
                    self.frame(sid, &text);
                } else if let Some(sid) = s.session {
                    let m = self.sessions.get_mut(&sid).expect("a session");
                    m.delivered.push(text);
                    assert!(m.sent.starts_with(&m.delivered));
                }
            }
            Output::SocketClose { socket, code, .. } => {
                let s = self.sockets.get_mut(&socket).expect("a known socket");
                assert!(s.open && !s.closing);
                assert!(matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999));
                s.closing = true;
            }
            Output::Opened { session, .. } => {
                assert!(self.sessions.contains_key(&session));
            }
            Output::Messages { session, messages } => {
                assert!(!messages.is_empty());
                assert!(!self.sessions[&session].closed, "messages after Closed");
            }
            Output::Closed { session, .. } => {
                let s = self.sessions.get_mut(&session).expect("a known session");
                assert!(!s.closed, "closed twice");
                s.closed = true;
            }
        }
    }

    fn message(&mut self, bytes: &mut Bytes<'_>) -> String {
        self.counter += 1;
        let mut m = format!("{}", self.counter);
        for _ in 0..bytes.byte() % 4 {
            let piece = bytes.pick(&PIECES[..]);
            m.push_str(piece);
        }
        m
    }

    /// A request on `/<server>/<key>/<endpoint>`; what it got at once.
    fn session_request(
        &mut self,
        bytes: &mut Bytes<'_>,
        endpoint: &str,
        body: &[u8],
    ) -> Vec<Output> {
        let key = *bytes.pick(&KEYS);
        let server = bytes.pick(&["1", "22"]);
        let peer = *bytes.pick(&PEERS);
        let path = format!("/{server}/{key}/{endpoint}");
        self.request(key, peer, &path, endpoint, body)
    }

    fn request(
        &mut self,
        key: &str,
        peer: &str,
        path: &str,
        endpoint: &str,
        body: &[u8],
    ) -> Vec<Output> {
        let response = self.server.http(
            self.time(),
            HttpRequest {
                peer,
                method: "POST",
                path,
                body,
                ..HttpRequest::default()
            },
        );
        self.responses.insert(
            response,
            ResponseModel {
                streaming: endpoint == "xhr_streaming",
                ..ResponseModel::default()
            },
        );
        let receiving = endpoint != "xhr_send";
        let all = self.take();
        let copy = all.clone();
        self.check_all(all, Some(key), receiving.then_some(response), None);
        copy
    }
}

/// The messages of `Messages` outputs in `outs`.
fn incoming(outs: &[Output]) -> Vec<String> {
    outs.iter()
        .flat_map(|o| match o {
            Output::Messages { messages, .. } => messages.clone(),
            _ => Vec::new(),
        })
        .collect()
}

fn status(outs: &[Output]) -> Option<u16> {
    outs.iter().find_map(|o| match o {
        Output::Respond { status, .. } => Some(*status),
        _ => None,
    })
}

/// The configuration the harness runs: small budgets, so that every limit is reached.
pub fn sockjs_server_config() -> ServerConfig {
    ServerConfig {
        heartbeat: Duration::from_millis(1_000),
        disconnect_delay: Duration::from_millis(3_000),
        websocket: true,
        cookie_needed: false,
        max_sessions: 4,
        max_sessions_per_peer: 3,
        max_websockets: 3,
        max_websockets_per_peer: 2,
        max_queued_bytes: 64,
        max_message_bytes: 24,
        response_limit: 60,
    }
}

/// Turns `data` into calls of a [`Server`] (requests with any path and body, websocket texts,
/// sends and closes by the application, clients that go away, time passing), checks every
/// output against a model of the peers, and panics when the server breaks a rule:
///
/// * every response is answered once (`Respond`), its `Write`s and `End` come in between its
///   start and its end, a poll is one frame, a stream's chunks one frame each after the
///   prelude, every frame decodes;
/// * what reaches a session's peer is always a prefix of what the application sent to it (no
///   loss, duplicate or reordering) and, at the end, all of it for every session still open;
/// * what the application gets from an `xhr_send` is the body's messages, exactly;
/// * one `Opened` and at most one `Closed` per session, nothing after `Closed`, no output on a
///   websocket after its `SocketClose`; no timer left due after `handle_timeout`;
/// * once every client has gone and time has passed, nothing is held: no session, websocket,
///   queued byte, open response or timer, and every session has had its `Closed`.
pub fn sockjs_server(data: &[u8]) {
    let mut bytes = Bytes(data);
    let seed = u64::from(bytes.byte());
    let mut m = Model {
        server: Server::new(sockjs_server_config(), seed),
        now: 0,
        responses: BTreeMap::new(),
        sessions: BTreeMap::new(),
        keys: BTreeMap::new(),
        sockets: BTreeMap::new(),
        counter: 0,
    };
    while !bytes.is_empty() {
        match bytes.byte() % 13 {
            0 => {
                m.session_request(&mut bytes, "xhr", b"");
            }
            1 => {
                m.session_request(&mut bytes, "xhr_streaming", b"");
            }
            2 | 3 => {
                // A well-formed body of messages, or any bytes.
                let body = if bytes.byte() % 2 == 0 {
                    let msgs: Vec<String> = (0..bytes.byte() % 4)
                        .map(|_| m.message(&mut bytes))
                        .collect();
                    sockjs::encode_client_frame(msgs.iter().map(String::as_str)).into_bytes()
                } else {
                    bytes.take(40).to_vec()
                };
                let outs = m.session_request(&mut bytes, "xhr_send", &body);
                let got = incoming(&outs);
                if !got.is_empty() {
                    assert_eq!(status(&outs), Some(204));
                    let sent = std::str::from_utf8(&body)
                        .ok()
                        .and_then(|t| sockjs::decode_client_frame(t).ok());
                    assert_eq!(Some(got), sent, "messages are the body's");
                }
            }
            4 => {
                // Any request at all (no `%`: the model does not decode paths).
                let method = *bytes.pick(&["GET", "POST", "OPTIONS", "PUT"]);
                let path = String::from_utf8_lossy(bytes.take(24)).replace('%', "_");
                let body = bytes.take(16).to_vec();
                let response = m.server.http(
                    m.time(),
                    HttpRequest {
                        peer: "p2",
                        method,
                        path: &path,
                        origin: Some("http://o"),
                        body: &body,
                        ..HttpRequest::default()
                    },
                );
                // A receiving request is `POST /<server>/<session>/xhr[_streaming][?query]`.
                let bare = path.split('?').next().unwrap_or_default();
                let segments: Vec<&str> = bare.split('/').collect();
                let receiving = match segments[..] {
                    ["", _, key, endpoint @ ("xhr" | "xhr_streaming")] if method == "POST" => {
                        Some((key.to_owned(), endpoint == "xhr_streaming"))
                    }
                    _ => None,
                };
                m.responses.insert(
                    response,
                    ResponseModel {
                        streaming: receiving.as_ref().is_some_and(|(_, streaming)| *streaming),
                        ..ResponseModel::default()
                    },
                );
                let all = m.take();
                if let Some((key, _)) = receiving {
                    m.check_all(all, Some(&key), Some(response), None);
                } else {
                    // Not a receiving request: nothing opens.
                    assert!(
                        !all.iter().any(|o| matches!(o, Output::Opened { .. })),
                        "{path:?}"
                    );
                    m.check_all(all, None, None, None);
                }
            }
            5 | 6 => {
                // The application sends.
                let sids: Vec<SessionId> = m.sessions.keys().copied().collect();
                if sids.is_empty() {
                    continue;
                }
                let sid = *bytes.pick(&sids);
                let msg = m.message(&mut bytes);
                let closed = m.sessions[&sid].closed;
                let result = m.server.send(m.time(), sid, &msg);
                let all = m.take();
                match result {
                    Ok(()) => {
                        assert!(!closed, "send took a message for a closed session");
                        m.sessions.get_mut(&sid).expect("a session").sent.push(msg);
                    }
                    // Refused while open only by the queue budget, which closes it now.
                    Err(e) if !closed => {
                        assert_eq!(e, SendError::QueueOverflow);
                        assert!(all.iter().any(|o| matches!(
                            o,
                            Output::Closed { session, code: 1008, .. } if *session == sid
                        )));
                    }
                    Err(e) => assert_eq!(e, SendError::Closed),
                }
                m.check_all(all, None, None, None);
            }
            7 => {
                let sids: Vec<SessionId> = m.sessions.keys().copied().collect();
                if sids.is_empty() {
                    continue;
                }
                let sid = *bytes.pick(&sids);
                let code = *bytes.pick(&[3000u16, 1000, 2010, 4999, 0]);
                m.server.close(m.time(), sid, code, "Go away!");
                m.outputs(None, None, None);
            }
            8 => {
                // A client goes away.
                let open: Vec<ResponseId> = m
                    .responses
                    .iter()
                    .filter(|(_, r)| !r.ended)
                    .map(|(id, _)| *id)
                    .collect();
                if open.is_empty() {
                    continue;
                }
                let r = *bytes.pick(&open);
                m.server.response_gone(m.time(), r);
                let model = m.responses.get_mut(&r).expect("a response");
                model.ended = true;
                model.gone = true;
                m.outputs(None, None, None);
            }
            9 => {
                // Time passes.
                m.now += u64::from(bytes.byte()) * 20;
                m.server.handle_timeout(m.time());
                m.outputs(None, None, None);
            }
            10 => {
                // A websocket upgrade, completed (mostly).
                let framed = bytes.byte() % 3 != 0;
                let path = if framed {
                    format!("/1/{}/websocket", bytes.pick(&KEYS))
                } else {
                    "/websocket".to_owned()
                };
                let peer = *bytes.pick(&PEERS);
                if let Ok(socket) = m.server.websocket(m.time(), peer, &path) {
                    m.sockets.insert(
                        socket,
                        SocketModel {
                            framed,
                            ..SocketModel::default()
                        },
                    );
                    if bytes.byte() % 4 != 0 {
                        m.server.websocket_open(m.time(), socket);
                        m.sockets.get_mut(&socket).expect("a socket").open = true;
                        m.outputs(None, None, Some(socket));
                    }
                }
                m.outputs(None, None, None);
            }
            11 => {
                // A websocket message: a frame of messages, or any text.
                let sockets: Vec<SocketId> = m.sockets.keys().copied().collect();
                if sockets.is_empty() {
                    continue;
                }
                let socket = *bytes.pick(&sockets);
                let framed = m.sockets[&socket].framed;
                let text = if bytes.byte() % 2 == 0 {
                    let msgs: Vec<String> = (0..bytes.byte() % 3)
                        .map(|_| m.message(&mut bytes))
                        .collect();
                    if framed {
                        sockjs::encode_client_frame(msgs.iter().map(String::as_str))
                    } else {
                        msgs.concat()
                    }
                } else {
                    String::from_utf8_lossy(bytes.take(30)).into_owned()
                };
                m.server.websocket_text(m.time(), socket, &text);
                let all = m.take();
                let got = incoming(&all);
                if !got.is_empty() {
                    let expected = if framed {
                        sockjs::decode_client_frame(&text).ok()
                    } else {
                        Some(vec![text.clone()])
                    };
                    assert_eq!(Some(got), expected);
                }
                m.check_all(all, None, None, None);
            }
            _ => {
                let sockets: Vec<SocketId> = m.sockets.keys().copied().collect();
                if sockets.is_empty() {
                    continue;
                }
                let socket = *bytes.pick(&sockets);
                m.server.websocket_closed(m.time(), socket);
                m.sockets.remove(&socket);
                m.outputs(None, None, None);
            }
        }
    }
    finish(&mut m);
}

/// Every live session gets all it was sent; then every client goes and time passes.
fn finish(m: &mut Model) {
    let live: Vec<SessionId> = m
        .sessions
        .iter()
        .filter(|(_, s)| !s.closed)
        .map(|(id, _)| *id)
        .collect();
    for sid in live {
        let key = m.sessions[&sid].http_key.clone();
        if let Some(key) = key {
            for _ in 0..64 {
                let s = &m.sessions[&sid];
                if s.closed || s.delivered.len() == s.sent.len() {
                    break;
                }
                // Nothing is attached while messages wait: a poll takes them at once.
                let outs = m.request(&key, "p0", &format!("/1/{key}/xhr"), "xhr", b"");
                assert_eq!(status(&outs), Some(200), "a poll of a live session");
            }
        }
        let s = &m.sessions[&sid];
        if !s.closed {
            assert_eq!(s.delivered, s.sent, "everything sent reached the peer");
        }
    }
    // Within a heartbeat (and the handover wait) every request has its answer: held polls `h`,
    // waiting ones `c[2010,...]`.
    // Timers fire when due, one at a time, as a driver's would: a waiter handed the session
    // when its receiver's heartbeat comes holds from that moment, not from a later jump.
    let config = sockjs_server_config();
    let deadline = m.time() + config.heartbeat + crate::sockjs::server::HANDOVER;
    while let Some(t) = m.server.poll_timeout().filter(|t| *t <= deadline) {
        m.now = t.as_millis();
        m.server.handle_timeout(t);
        m.outputs(None, None, None);
    }
    m.now = deadline.as_millis();
    assert!(
        m.responses.values().all(|r| r.answered || r.gone),
        "a request left unanswered"
    );
    let sockets: Vec<SocketId> = m.sockets.keys().copied().collect();
    for socket in sockets {
        m.server.websocket_closed(m.time(), socket);
    }
    m.sockets.clear();
    m.outputs(None, None, None);
    let open: Vec<ResponseId> = m
        .responses
        .iter()
        .filter(|(_, r)| !r.ended)
        .map(|(id, _)| *id)
        .collect();
    for r in open {
        m.server.response_gone(m.time(), r);
        let model = m.responses.get_mut(&r).expect("a response");
        model.ended = true;
        model.gone = true;
    }
    m.outputs(None, None, None);
    for _ in 0..16 {
        let Some(t) = m.server.poll_timeout() else {
            break;
        };
        m.now = t.as_millis();
        m.server.handle_timeout(t);
        m.outputs(None, None, None);
    }
    assert_eq!(m.server.poll_timeout(), None);
    assert_eq!(m.server.sessions(), 0);
    assert_eq!(m.server.websockets(), 0);
    assert_eq!(m.server.queued_bytes(), 0);
    assert_eq!(m.server.open_responses(), 0);
    assert!(
        m.responses.values().all(|r| r.ended),
        "every response ended"
    );
    assert!(
        m.sessions.values().all(|s| s.closed),
        "every session closed"
    );
}

#[cfg(test)]
mod tests {
    /// Inputs the fuzzer once failed on, replayed on every test run.
    const REGRESSIONS: &[&str] = &[
        // CI 2026-12-02: crash-ad7b9dd4422bcf724d40ce1d7f9efb61914e708e
        "Agr2AAIFAAEJAAABAQsA9gACBQABCWQwCwABBQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAFsbeAcAAQAACQAAAQELAPYAAgUAAQlkMAsAAQUAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAABbG3gHAAEAAAEqMSoqKioAAAAAAAABCy8A",
    ];

    #[test]
    fn past_crashes_stay_fixed() {
        use base64::Engine as _;
        for input in REGRESSIONS {
            let data = base64::engine::general_purpose::STANDARD
                .decode(input)
                .expect("base64");
            super::sockjs_server(&data);
        }
    }
}
