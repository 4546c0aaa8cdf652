//! Kontrol's plain HTTP registration, for kites that do not keep a connection to it (Go's
//! `RegisterHTTP`): `POST /register` with the kite, its URL and its kite key, then
//! `GET /heartbeat?id=<kite id>` at the interval the answer names; `registeragain` asks the kite
//! to register again (its registration lapsed, or this Kontrol restarted).

use std::sync::Arc;

use axum::extract::Query;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use kite_native::core::Kite as KiteIdentity;
use kite_native::core::kontrol::RegisterResult;
use serde::Deserialize;

use crate::server::Kontrol;
use crate::storage::{Registration, expires_in};

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
            axum::routing::post(move |body: String| {
                let k = k.clone();
                async move { k.register_http(&body).await }
            }),
        );
        let k = self.clone();
        self.kite().route(
            "/heartbeat",
            axum::routing::get(
                move |Query(q): Query<std::collections::HashMap<String, String>>| {
                    let k = k.clone();
                    async move { k.heartbeat_http(q.get("id").map(String::as_str)).await }
                },
            ),
        );
    }

    async fn register_http(&self, body: &str) -> Response {
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
        let Some(verifier) = self.kite().kite_key_verifier() else {
            return error(StatusCode::INTERNAL_SERVER_ERROR, "no key to verify with");
        };
        match verifier.verify(&auth.key) {
            Ok(username) => kite.username = username,
            Err(e) => return error(StatusCode::UNAUTHORIZED, e),
        }
        if let Err(e) = kite.validate() {
            return error(StatusCode::BAD_REQUEST, format!("invalid kite: {e}"));
        }
        let o = self.options();
        let registration = Registration::new(kite.clone(), &url, &o.key_id, o.registration_ttl);
        if let Err(e) = self.storage().upsert(&registration).await {
            tracing::warn!(error = %e, "HTTP register");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error - register",
            );
        }
        self.seen_over_http(&kite.id);
        tracing::info!(kite = %kite, %url, "registered over HTTP");
        let result = RegisterResult {
            url,
            heartbeat_interval: o.heartbeat_interval.as_secs().max(1),
            kite_key: String::new(),
            public_key: String::new(),
        };
        let body = serde_json::to_string(&result).unwrap_or_default() + "\n";
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    }

    async fn heartbeat_http(&self, id: Option<&str>) -> Response {
        let Some(id) = id.filter(|i| !i.is_empty()) else {
            return error(StatusCode::BAD_REQUEST, "query id is empty");
        };
        let o = self.options();
        let live = self.http_seen_within(id, o.registration_ttl);
        let refreshed = live
            && matches!(
                self.storage()
                    .refresh(id, expires_in(o.registration_ttl))
                    .await,
                Ok(true)
            );
        if refreshed {
            self.seen_over_http(id);
            "pong".into_response()
        } else {
            "registeragain".into_response()
        }
    }
}

/// Shared with the server module: when each HTTP-registered kite was last heard of.
pub(crate) type HttpSeen = Arc<std::sync::Mutex<std::collections::HashMap<String, u64>>>;
