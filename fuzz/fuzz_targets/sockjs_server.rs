//! kite-core's sans-IO SockJS server (`sockjs::server::Server`) driven by the input: each byte
//! picks a call (a poll, a stream, an `xhr_send` with well-formed or arbitrary bodies, any
//! request at all, the application's sends and closes, a client going away, time passing, a
//! websocket upgrade, its texts and its end), and the following bytes its arguments.
//! `kite_core::fuzzing::sockjs_server` checks every output against a model of the peers and
//! the application: one answer per request, frames that decode, what reaches a peer always a
//! prefix of what was sent to it and all of it for sessions still open, the application's
//! messages exactly the peer's, one `Closed` per session, no timer left due, and nothing held
//! once every client has gone and time has passed.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kite_core::fuzzing::sockjs_server(data);
});
