use std::collections::HashSet;
use std::time::Duration;

use super::*;

fn ms(n: u64) -> Time {
    Time::from_millis(n)
}

fn drain(s: &mut ClientSession) -> Vec<Output> {
    std::iter::from_fn(|| s.poll_output()).collect()
}

/// No jitter, so delays are exact.
fn config(policy: Option<ReconnectPolicy>) -> SessionConfig {
    SessionConfig {
        reconnect: policy.map(|p| ReconnectPolicy { jitter: 0.0, ..p }),
        ..SessionConfig::default()
    }
}

fn open(s: &mut ClientSession, now: Time) {
    s.connect(now);
    assert_eq!(s.poll_output(), Some(Output::Dial));
    s.opened(now, true);
}

fn sends(outputs: &[Output]) -> Vec<CallId> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Send(c) => Some(*c),
            _ => None,
        })
        .collect()
}

fn fails(outputs: &[Output]) -> Vec<(CallId, ErrorKind, bool)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Fail { call, error, sent } => Some((*call, error.kind.clone(), *sent)),
            _ => None,
        })
        .collect()
}

fn expired() -> KiteError {
    KiteError::new(ErrorKind::Authentication, "token: token is expired")
}

#[test]
fn calls_made_before_connecting_go_out_in_order_once_open() {
    let mut s = ClientSession::new(config(Some(ReconnectPolicy::go())));
    let a = s.call(ms(0), "a", None);
    let b = s.call(ms(1), "b", None);
    assert_eq!(drain(&mut s), []);
    open(&mut s, ms(2));
    let out = drain(&mut s);
    assert_eq!(out[0], Output::Event(Event::Opened));
    assert_eq!(sends(&out), [a, b]);
    let c = s.call(ms(3), "c", None);
    assert_eq!(drain(&mut s), [Output::Send(c)]);
    assert_eq!(s.answered(ms(4), b, None), Answer::Deliver);
    assert_eq!(s.answered(ms(4), b, None), Answer::Unknown);
    assert_eq!(s.calls_in_flight(), 2);
}

#[test]
fn deadlines_count_from_the_call_and_say_whether_it_was_sent() {
    let mut s = ClientSession::new(config(Some(ReconnectPolicy::go())));
    let queued = s.call(ms(0), "square", Some(Duration::from_millis(100)));
    assert_eq!(s.poll_timeout(), Some(ms(100)));
    s.handle_timeout(ms(99));
    assert_eq!(drain(&mut s), []);
    s.handle_timeout(ms(100));
    let out = drain(&mut s);
    assert_eq!(fails(&out), [(queued, ErrorKind::Timeout, false)]);
    let Output::Fail { error, .. } = &out[0] else {
        unreachable!()
    };
    assert_eq!(error.message, "No response to \"square\" arrived in 100 ms");
    open(&mut s, ms(200));
    drain(&mut s);
    let sent = s.call(ms(200), "slow", Some(Duration::from_millis(50)));
    drain(&mut s);
    s.handle_timeout(ms(250));
    assert_eq!(fails(&drain(&mut s)), [(sent, ErrorKind::Timeout, true)]);
    // Its late answer is nobody's.
    assert_eq!(s.answered(ms(260), sent, None), Answer::Unknown);
    assert_eq!(s.poll_timeout(), Some(ms(200 + 45_000)));
}

#[test]
fn a_dropped_connection_fails_what_it_carried_and_dials_again_by_the_policy() {
    let mut s = ClientSession::new(config(Some(ReconnectPolicy::go())));
    open(&mut s, ms(0));
    let sent = s.call(ms(0), "a", None);
    drain(&mut s);
    s.closed(ms(10), 1006, "gone");
    let out = drain(&mut s);
    assert_eq!(
        out[0],
        Output::Event(Event::Closed {
            code: 1006,
            reason: "gone".into()
        })
    );
    assert_eq!(fails(&out), [(sent, ErrorKind::Disconnect, false)]);
    assert_eq!(
        s.state(),
        State::Waiting {
            until: ms(510),
            attempt: 1
        }
    );
    // A call made meanwhile waits for the next connection.
    let waiting = s.call(ms(20), "b", None);
    assert_eq!(s.poll_timeout(), Some(ms(510)));
    s.handle_timeout(ms(510));
    assert_eq!(drain(&mut s), [Output::Dial]);
    s.dial_failed(ms(600));
    assert_eq!(
        drain(&mut s),
        [Output::Event(Event::Reconnecting {
            attempt: 2,
            delay: Duration::from_millis(750)
        })]
    );
    s.handle_timeout(ms(1_350));
    assert_eq!(drain(&mut s), [Output::Dial]);
    s.opened(ms(1_400), true);
    assert_eq!(sends(&drain(&mut s)), [waiting]);
    // Open again: the count starts over.
    s.closed(ms(2_000), 1000, "bye");
    assert_eq!(
        s.state(),
        State::Waiting {
            until: ms(2_500),
            attempt: 1
        }
    );
}

#[test]
fn without_a_policy_a_drop_fails_every_call() {
    let mut s = ClientSession::new(config(None));
    open(&mut s, ms(0));
    let sent = s.call(ms(0), "a", None);
    drain(&mut s);
    s.closed(ms(1), 1000, "bye");
    assert_eq!(
        fails(&drain(&mut s)),
        [(sent, ErrorKind::Disconnect, false)]
    );
    assert_eq!(s.state(), State::Closed);
    let mut s = ClientSession::new(config(None));
    let queued = s.call(ms(0), "a", None);
    s.connect(ms(0));
    drain(&mut s);
    s.dial_failed(ms(1));
    assert_eq!(
        fails(&drain(&mut s)),
        [(queued, ErrorKind::Disconnect, false)]
    );
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn kite_js_policy_gives_up_and_later_calls_fail_at_once() {
    let policy = ReconnectPolicy {
        max_attempts: Some(2),
        ..ReconnectPolicy::kite_js()
    };
    let mut s = ClientSession::new(config(Some(policy)));
    let queued = s.call(ms(0), "a", None);
    s.connect(ms(0));
    let mut now = 0;
    for _ in 0..2 {
        drain(&mut s);
        s.dial_failed(ms(now));
        now = s.poll_timeout().unwrap().as_millis();
        s.handle_timeout(ms(now));
    }
    drain(&mut s);
    s.dial_failed(ms(now));
    let out = drain(&mut s);
    assert_eq!(out[0], Output::Event(Event::GaveUp { attempts: 2 }));
    assert_eq!(fails(&out), [(queued, ErrorKind::Disconnect, false)]);
    assert_eq!(s.state(), State::GaveUp);
    let late = s.call(ms(now), "b", None);
    let out = drain(&mut s);
    assert_eq!(fails(&out), [(late, ErrorKind::Disconnect, false)]);
    let Output::Fail { error, .. } = &out[0] else {
        unreachable!()
    };
    assert_eq!(error.message, "could not reconnect after 2 attempts");
    // connect() starts over.
    s.connect(ms(now));
    assert_eq!(drain(&mut s), [Output::Dial]);
}

#[test]
fn a_silent_server_is_closed_and_heartbeats_keep_it_alive() {
    let mut s = ClientSession::new(config(Some(ReconnectPolicy::go())));
    open(&mut s, ms(0));
    drain(&mut s);
    assert_eq!(s.poll_timeout(), Some(ms(45_000)));
    s.heard(ms(25_000));
    assert_eq!(s.poll_timeout(), Some(ms(70_000)));
    s.handle_timeout(ms(45_000));
    assert_eq!(drain(&mut s), []);
    s.handle_timeout(ms(70_000));
    let out = drain(&mut s);
    assert_eq!(
        out[0],
        Output::Close {
            code: 1006,
            reason: "no heartbeat from the server for 45000 ms".into()
        }
    );
    assert!(matches!(
        out[1],
        Output::Event(Event::Closed { code: 1006, .. })
    ));
    assert!(matches!(s.state(), State::Waiting { attempt: 1, .. }));
    // A raw websocket has no heartbeats to watch.
    let mut s = ClientSession::new(config(Some(ReconnectPolicy::go())));
    s.connect(ms(0));
    s.opened(ms(0), false);
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn a_token_is_renewed_before_it_expires() {
    let mut s = ClientSession::new(config(Some(ReconnectPolicy::go())));
    s.set_renewable(true);
    s.set_credentials(
        ms(1_000),
        Credentials::Token {
            expires_in: Some(Duration::from_secs(100)),
        },
    );
    assert_eq!(s.poll_timeout(), Some(ms(71_000)));
    s.handle_timeout(ms(71_000));
    assert_eq!(drain(&mut s), [Output::Event(Event::TokenExpired)]);
    assert_eq!(s.poll_timeout(), None);
    // Renewal failed: tried again in 10 s.
    s.token_failed(ms(72_000), true);
    assert_eq!(s.poll_timeout(), Some(ms(82_000)));
    s.set_credentials(
        ms(80_000),
        Credentials::Token {
            expires_in: Some(Duration::from_secs(10)),
        },
    );
    // Already within renew_before: renew now.
    assert_eq!(s.poll_timeout(), Some(ms(80_000)));
}

#[test]
fn calls_refused_with_an_expired_token_are_sent_once_more_first() {
    let mut s = ClientSession::new(config(Some(ReconnectPolicy::go())));
    s.set_renewable(true);
    s.set_credentials(ms(0), Credentials::Token { expires_in: None });
    open(&mut s, ms(0));
    let a = s.call(ms(0), "a", None);
    let b = s.call(ms(0), "b", None);
    drain(&mut s);
    assert_eq!(s.answered(ms(1), a, Some(&expired())), Answer::Retry);
    assert_eq!(s.answered(ms(1), b, Some(&expired())), Answer::Retry);
    // One renewal for the burst.
    assert_eq!(drain(&mut s), [Output::Event(Event::TokenExpired)]);
    s.set_credentials(ms(5), Credentials::Token { expires_in: None });
    assert_eq!(drain(&mut s), [Output::Send(a), Output::Send(b)]);
    // Once only.
    assert_eq!(s.answered(ms(6), a, Some(&expired())), Answer::Deliver);
    assert_eq!(s.answered(ms(6), b, None), Answer::Deliver);
    assert_eq!(s.calls_in_flight(), 0);
    // Refused, then cut off while waiting for the token: still first once a token comes.
    let d = s.call(ms(7), "d", None);
    drain(&mut s);
    assert_eq!(s.answered(ms(8), d, Some(&expired())), Answer::Retry);
    s.closed(ms(9), 1006, "gone");
    let e = s.call(ms(10), "e", None);
    s.set_credentials(ms(11), Credentials::Token { expires_in: None });
    s.handle_timeout(s.poll_timeout().unwrap());
    s.opened(ms(1_000), true);
    assert_eq!(sends(&drain(&mut s)), [d, e]);
}

#[test]
fn an_expired_token_is_delivered_when_nothing_can_renew_it_or_it_is_lasting() {
    let mut s = ClientSession::new(config(Some(ReconnectPolicy::go())));
    s.set_credentials(ms(0), Credentials::Token { expires_in: None });
    open(&mut s, ms(0));
    let a = s.call(ms(0), "a", None);
    assert_eq!(s.answered(ms(1), a, Some(&expired())), Answer::Deliver);
    s.set_renewable(true);
    s.set_credentials(ms(0), Credentials::Lasting);
    let b = s.call(ms(2), "b", None);
    assert_eq!(s.answered(ms(3), b, Some(&expired())), Answer::Deliver);
}

#[test]
fn calls_waiting_for_a_token_fail_with_their_refusal_when_none_comes() {
    let mut s = ClientSession::new(config(Some(ReconnectPolicy::go())));
    s.set_renewable(true);
    s.set_credentials(ms(0), Credentials::Token { expires_in: None });
    open(&mut s, ms(0));
    let a = s.call(ms(0), "a", None);
    drain(&mut s);
    s.answered(ms(100), a, Some(&expired()));
    drain(&mut s);
    assert_eq!(s.poll_timeout(), Some(ms(15_100)));
    s.heard(ms(15_100));
    s.handle_timeout(ms(15_100));
    let out = drain(&mut s);
    assert_eq!(fails(&out), [(a, ErrorKind::Authentication, false)]);
    // And when renewal fails, at once.
    let b = s.call(ms(16_000), "b", None);
    drain(&mut s);
    s.answered(ms(16_001), b, Some(&expired()));
    drain(&mut s);
    s.token_failed(ms(16_002), false);
    assert_eq!(
        fails(&drain(&mut s)),
        [(b, ErrorKind::Authentication, false)]
    );
}

#[test]
fn close_fails_everything_and_leaves_no_timer() {
    let mut s = ClientSession::new(config(Some(ReconnectPolicy::go())));
    s.set_credentials(
        ms(0),
        Credentials::Token {
            expires_in: Some(Duration::from_secs(3600)),
        },
    );
    open(&mut s, ms(0));
    let a = s.call(ms(0), "a", Some(Duration::from_secs(9)));
    drain(&mut s);
    s.close(ms(1), 1000, "closed");
    let out = drain(&mut s);
    assert_eq!(
        out[0],
        Output::Close {
            code: 1000,
            reason: "closed".into()
        }
    );
    assert_eq!(fails(&out), [(a, ErrorKind::Disconnect, false)]);
    assert_eq!(s.state(), State::Idle);
    assert_eq!(s.poll_timeout(), None);
    // No reconnection after a close, and events of the old transport are ignored.
    s.closed(ms(2), 1006, "late");
    assert_eq!(drain(&mut s), []);
}

/// Random operations: no panic, every call is settled at most once, and after `close` none is
/// left.
#[test]
fn random_operations_settle_every_call_at_most_once() {
    let mut seed = 0x1234_5678_9abc_def1_u64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for round in 0..200 {
        let config = SessionConfig {
            seed: round,
            ..SessionConfig::default()
        };
        // One round in four is a server's side of an accepted connection.
        let mut s = if round % 4 == 3 {
            ClientSession::accepted(config, ms(0), next(2) == 0)
        } else {
            ClientSession::new(config)
        };
        s.set_renewable(next(2) == 0);
        let mut now = 0u64;
        let mut settled = HashSet::new();
        let mut sent = HashSet::new();
        let mut made = Vec::new();
        for _ in 0..300 {
            now += next(20_000);
            let t = ms(now);
            match next(13) {
                0 => s.connect(t),
                1 => {
                    s.opened(t, next(2) == 0);
                }
                12 => {
                    s.attached(t, next(2) == 0);
                }
                2 => s.dial_failed(t),
                3 => s.closed(t, 1006, "x"),
                4 => s.heard(t),
                5 | 6 => made.push(s.call(t, "m", Some(Duration::from_millis(next(30_000))))),
                7 => {
                    if let Some(&c) = made.get(next(made.len().max(1) as u64) as usize) {
                        let e = if next(2) == 0 { Some(expired()) } else { None };
                        if s.answered(t, c, e.as_ref()) == Answer::Deliver {
                            assert!(settled.insert(c), "{c:?} delivered twice");
                        }
                    }
                }
                8 => s.set_credentials(
                    t,
                    Credentials::Token {
                        expires_in: Some(Duration::from_millis(next(100_000))),
                    },
                ),
                9 => s.token_failed(t, next(2) == 0),
                10 => {
                    if let Some(d) = s.poll_timeout() {
                        now = now.max(d.as_millis());
                        s.handle_timeout(ms(now));
                    }
                }
                _ => s.close(t, 1000, "closed"),
            }
            while let Some(o) = s.poll_output() {
                match o {
                    Output::Fail { call, .. } => {
                        assert!(settled.insert(call), "{call:?} failed after it was settled")
                    }
                    Output::Send(call) => {
                        assert!(
                            !settled.contains(&call),
                            "{call:?} sent after it was settled"
                        );
                        sent.insert(call);
                    }
                    _ => {}
                }
            }
        }
        s.close(ms(now), 1000, "closed");
        while let Some(o) = s.poll_output() {
            if let Output::Fail { call, .. } = o {
                assert!(settled.insert(call));
            }
        }
        assert_eq!(s.calls_in_flight(), 0);
        assert_eq!(s.poll_timeout(), None);
        assert_eq!(settled.len(), made.len(), "a call was never settled");
    }
}

#[test]
fn a_drop_with_no_reconnection_closes_the_session_until_connect() {
    let mut s = ClientSession::new(config(None));
    open(&mut s, ms(0));
    drain(&mut s);
    s.closed(ms(10), 1006, "gone");
    drain(&mut s);
    assert_eq!(s.state(), State::Closed);
    // Nothing will dial: a call fails at once instead of waiting forever.
    let late = s.call(ms(11), "square", None);
    assert_eq!(
        fails(&drain(&mut s)),
        [(late, ErrorKind::Disconnect, false)]
    );
    // Until the user connects again.
    s.connect(ms(12));
    assert_eq!(s.poll_output(), Some(Output::Dial));
    let queued = s.call(ms(12), "square", None);
    assert!(s.opened(ms(13), false));
    assert_eq!(sends(&drain(&mut s)), [queued]);
}

#[test]
fn after_the_users_close_calls_wait_for_connect() {
    let mut s = ClientSession::new(config(Some(ReconnectPolicy::go())));
    open(&mut s, ms(0));
    drain(&mut s);
    s.close(ms(1), 1000, "bye");
    drain(&mut s);
    assert_eq!(s.state(), State::Idle);
    let later = s.call(ms(2), "square", None);
    assert_eq!(drain(&mut s), []);
    open(&mut s, ms(3));
    assert_eq!(sends(&drain(&mut s)), [later]);
}

#[test]
fn an_accepted_session_never_dials_and_fails_calls_once_it_ended() {
    let mut s = ClientSession::accepted(config(Some(ReconnectPolicy::go())), ms(0), false);
    assert_eq!(s.state(), State::Open);
    let a = s.call(ms(0), "heartbeat", None);
    assert_eq!(drain(&mut s), [Output::Send(a)]);
    s.closed(ms(5), 1006, "gone");
    let out = drain(&mut s);
    assert!(!out.contains(&Output::Dial), "{out:?}");
    assert_eq!(fails(&out), [(a, ErrorKind::Disconnect, false)]);
    s.connect(ms(6));
    assert_eq!(drain(&mut s), []);
    let b = s.call(ms(7), "heartbeat", None);
    assert_eq!(fails(&drain(&mut s)), [(b, ErrorKind::Disconnect, false)]);
    // Closed by us: the same.
    let mut s = ClientSession::accepted(SessionConfig::default(), ms(0), false);
    s.close(ms(1), 3000, "Go away!");
    drain(&mut s);
    let c = s.call(ms(2), "heartbeat", None);
    assert_eq!(fails(&drain(&mut s)), [(c, ErrorKind::Disconnect, false)]);
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn a_transport_dialed_by_the_driver_overtakes_a_dial_under_way() {
    let mut s = ClientSession::new(config(Some(ReconnectPolicy::go())));
    let a = s.call(ms(0), "a", None);
    s.connect(ms(0));
    assert_eq!(s.poll_output(), Some(Output::Dial));
    assert!(s.attached(ms(1), false));
    let out = drain(&mut s);
    assert_eq!(out, [Output::Event(Event::Opened), Output::Send(a)]);
    // The dial that was under way opens too late: the driver closes it.
    assert!(!s.opened(ms(2), false));
    assert!(!s.attached(ms(3), false));
    assert_eq!(s.state(), State::Open);
}

#[test]
fn a_refusal_of_credentials_replaced_since_resends_without_asking_again() {
    let mut s = ClientSession::new(config(Some(ReconnectPolicy::go())));
    s.set_renewable(true);
    // Expired already: renewal is due at once.
    s.set_credentials(
        ms(0),
        Credentials::Token {
            expires_in: Some(Duration::ZERO),
        },
    );
    open(&mut s, ms(0));
    let a = s.call(ms(0), "a", None);
    drain(&mut s);
    s.handle_timeout(ms(0));
    assert_eq!(drain(&mut s), [Output::Event(Event::TokenExpired)]);
    // The new token comes before the peer's refusal of the old one.
    s.set_credentials(
        ms(1),
        Credentials::Token {
            expires_in: Some(Duration::from_secs(3600)),
        },
    );
    assert_eq!(drain(&mut s), []);
    assert_eq!(s.answered(ms(2), a, Some(&expired())), Answer::Retry);
    // Sent again with the new token; no second renewal.
    assert_eq!(drain(&mut s), [Output::Send(a)]);
    assert_eq!(s.answered(ms(3), a, None), Answer::Deliver);
}
