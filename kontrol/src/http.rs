//! Kontrol's plain HTTP registration, for kites that do not keep a connection to it (Go's
//! `RegisterHTTP`): `POST /register` with the kite, its URL and its kite key, then
//! `GET /heartbeat?id=<kite id>` at the interval the answer names; `registeragain` asks the kite
//! to register again (its registration lapsed, or this Kontrol restarted).
//!
//! The same ownership and budgets as `register` over dnode apply ([`crate::server`]): a kite id
//! another user registered (and that has not expired) is refused with 403 and Go's
//! `{"err":"..."}` body, a register past a budget with 429, and nothing is stored.
//!
//! A heartbeat carries no credentials in Go's protocol, so it is bound to the registration this
//! Kontrol accepted over HTTP: it refreshes the kite id only if that id was registered here over
//! HTTP, is still live, and the heartbeat comes from the same remote IP address (the port may
//! change between connections); the refresh is done for the registration's owner, so it can
//! never extend another user's. Any other heartbeat is answered `registeragain` (harmless for a
//! real kite, which registers again) and refreshes nothing. (Go Kontrol refreshes whatever id a
//! heartbeat names, from anyone.) Peers behind one address (a NAT, or one host) can still keep
//! each other's HTTP registrations alive, never change them. When the router is served without
//! connect info (no peer address), every HTTP registration and heartbeat counts as coming from
//! the same unknown address.

use std::net::IpAddr;

use axum::extract::{ConnectInfo, FromRequestParts, Query};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use kite_native::core::Kite as KiteIdentity;
use kite_native::core::kontrol::RegisterResult;
use kite_native::sockjs::PeerAddr;
use serde::Deserialize;

use crate::ledger::{Refusal, Via};
use crate::server::{Kontrol, key_identity, owned_message};
use crate::storage::{Registration, StorageError, now_ms};

/// The remote IP address of an HTTP request, when the server was started with connect info
/// (`into_make_service_with_connect_info::<PeerAddr>()`, as [`kite_native::Kite::run`] does).
struct Peer(Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        let ext = &parts.extensions;
        Ok(Peer(
            ext.get::<ConnectInfo<PeerAddr>>()
                .map(|c| c.0.0.ip())
                .or_else(|| {
                    ext.get::<ConnectInfo<std::net::SocketAddr>>()
                        .map(|c| c.0.ip())
                }),
        ))
    }
}

/// `POST /register`'s body.
#[derive(Debug, Deserialize)]
struct RegisterBody {
    #[serde(default)]
    url: String,
    kite: Option<KiteIdentity>,
    auth: Option<AuthBody>,
}

#[derive(Debug, Deserialize)]
struct AuthBody {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    key: String,
}

/// Go's `http.Error` with a JSON body: `{"err":"..."}` and a newline.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = serde_json::json!({ "err": message.into() }).to_string() + "\n";
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

impl Kontrol {
    /// Mounts `POST /register` and `GET /heartbeat` on the Kontrol kite.
    pub(crate) fn install_http(&self) {
        let k = self.clone();
        self.kite().route(
            "/register",
            axum::routing::post(move |Peer(peer): Peer, body: String| {
                let k = k.clone();
                async move { k.register_http(peer, &body).await }
            }),
        );
        let k = self.clone();
        self.kite().route(
            "/heartbeat",
            axum::routing::get(
                move |Peer(peer): Peer,
                      Query(q): Query<std::collections::HashMap<String, String>>| {
                    let k = k.clone();
                    async move {
                        k.heartbeat_http(peer, q.get("id").map(String::as_str))
                            .await
                    }
                },
            ),
        );
    }

    async fn register_http(&self, peer: Option<IpAddr>, body: &str) -> Response {
        let body: RegisterBody = match serde_json::from_str(body) {
            Ok(b) => b,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("wrong register input: '{e}'"),
                );
            }
        };
        let Some(auth) = body.auth else {
            return error(StatusCode::BAD_REQUEST, "auth is missing");
        };
        if auth.kind != "kiteKey" {
            return error(
                StatusCode::BAD_REQUEST,
                format!("unexpected authentication type: {}", auth.kind),
            );
        }
        let Some(mut kite) = body.kite else {
            return error(StatusCode::BAD_REQUEST, "kite is missing");
        };
        let url = body.url.trim().to_owned();
        if url.is_empty() {
            return error(StatusCode::BAD_REQUEST, "empty URL");
        }
        if let Err(e) = kite_native::transport::parse_base_url(&url) {
            return error(
                StatusCode::BAD_REQUEST,
                format!("invalid register URL: {e}"),
            );
        }
        match self
            .inner()
            .verify_kite_key(&auth.key, self.kite().kite_key_verifier())
            .await
        {
            Ok(username) => kite.username = username,
            Err(e) => return error(StatusCode::UNAUTHORIZED, e),
        }
        if let Err(e) = kite.validate() {
            return error(StatusCode::BAD_REQUEST, format!("invalid kite: {e}"));
        }
        let o = self.options();
        let ledger = &self.inner().ledger;
        let via = Via::Http(peer);
        let key = key_identity(&kite.username, &auth.key);
        let reservation = match ledger.reserve(&kite, &key, via, now_ms()) {
            Ok(r) => r,
            Err(Refusal::Owned) => return error(StatusCode::FORBIDDEN, owned_message(&kite.id)),
            Err(Refusal::Limit(m)) => return error(StatusCode::TOO_MANY_REQUESTS, m),
        };
        // A kite key of a deleted or retired pair is re-keyed, as over dnode.
        let (kite_key, public_key, key_id) = match self.inner().key_for_register(&auth.key) {
            Ok(k) => k,
            Err(e) => {
                ledger.release(reservation);
                return error(StatusCode::INTERNAL_SERVER_ERROR, e.message);
            }
        };
        let registration = Registration::new(kite.clone(), &url, &key_id, self.inner().lifetime());
        match self.storage().upsert(&registration).await {
            Ok(()) => {}
            Err(StorageError::OwnedByAnother { .. }) => {
                ledger.release(reservation);
                return error(StatusCode::FORBIDDEN, owned_message(&kite.id));
            }
            Err(StorageError::Rejected(why)) => {
                ledger.release(reservation);
                return error(StatusCode::BAD_REQUEST, format!("register: {why}"));
            }
            Err(e) => {
                ledger.release(reservation);
                tracing::warn!(error = %e, "HTTP register");
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error - register",
                );
            }
        }
        let committed = ledger.commit(
            reservation,
            kite.clone(),
            via,
            now_ms(),
            registration.expires_at_ms,
        );
        if let Some(old) = committed.replaced {
            self.inner()
                .announce(crate::storage::events::Action::Deregister, &old, "", "");
        }
        tracing::info!(kite = %kite, %url, "registered over HTTP");
        let result = RegisterResult {
            url,
            heartbeat_interval: o.heartbeat_interval.as_secs().max(1),
            kite_key,
            public_key,
        };
        let body = serde_json::to_string(&result).unwrap_or_default() + "\n";
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    }

    async fn heartbeat_http(&self, peer: Option<IpAddr>, id: Option<&str>) -> Response {
        let Some(id) = id.filter(|i| !i.is_empty()) else {
            return error(StatusCode::BAD_REQUEST, "query id is empty");
        };
        if self.inner().heartbeat(id, Via::Http(peer)).await {
            "pong".into_response()
        } else {
            "registeragain".into_response()
        }
    }
}
