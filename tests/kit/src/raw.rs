//! A hand-written dnode peer on one SockJS websocket, for tests of what a hostile or broken
//! peer can do to a server: it sends whatever kite identity it likes in each call, and never
//! answers `kite.heartbeat` (feature `kites`).

use std::collections::HashMap;
use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::within;

/// A kite identity as JSON, as a peer writes it in its messages.
pub fn identity(username: &str, name: &str, id: &str) -> Value {
    json!({"username": username, "environment": "test", "name": name, "version": "1.0.0",
           "region": "r", "hostname": "h", "id": id})
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A hand-written dnode peer on one SockJS websocket: it sends whatever kite identity it likes
/// in each call and never answers Kontrol's `kite.heartbeat`.
pub struct RawPeer {
    ws: Ws,
    next: u64,
    /// Answers by callback id (`{"error": ..., "result": ...}`).
    answers: HashMap<u64, Value>,
    /// Calls Kontrol made to our callbacks, by callback id.
    pub called: HashMap<u64, usize>,
    /// `kite.heartbeat` requests Kontrol sent.
    pub heartbeats: usize,
}

impl std::fmt::Debug for RawPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawPeer")
            .field("next", &self.next)
            .field("heartbeats", &self.heartbeats)
            .finish_non_exhaustive()
    }
}

impl RawPeer {
    /// Connects to the SockJS websocket of the kite at `addr` and reads its open frame.
    pub async fn connect(addr: SocketAddr) -> RawPeer {
        let url = format!(
            "ws://{addr}/kite/0/{}/websocket",
            uuid::Uuid::new_v4().simple()
        );
        let (mut ws, _) = within("connect", tokio_tungstenite::connect_async(url))
            .await
            .unwrap();
        match within("open frame", ws.next()).await {
            Some(Ok(Message::Text(t))) if t.as_str() == "o" => {}
            other => panic!("no open frame: {other:?}"),
        }
        RawPeer {
            ws,
            next: 0,
            answers: HashMap::new(),
            called: HashMap::new(),
            heartbeats: 0,
        }
    }

    /// A new callback id.
    pub fn id(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// Sends a call of `method` as `kite` with kite key `key`; `extra` callbacks are paths in
    /// `withArgs`. Returns the response callback's id.
    pub async fn send(
        &mut self,
        method: &str,
        kite: &Value,
        key: &str,
        args: Value,
        extra: &[(u64, Value)],
    ) -> u64 {
        let response = self.id();
        let mut callbacks = serde_json::Map::new();
        callbacks.insert(response.to_string(), json!([0, "responseCallback"]));
        for (id, path) in extra {
            callbacks.insert(id.to_string(), path.clone());
        }
        let message = json!({
            "method": method,
            "arguments": [{
                "kite": kite,
                "authentication": {"type": "kiteKey", "key": key},
                "withArgs": args,
                "responseCallback": "[Function]",
            }],
            "callbacks": callbacks,
            "links": [],
        });
        let frame = serde_json::to_string(&[message.to_string()]).unwrap();
        self.ws.send(Message::text(frame)).await.unwrap();
        response
    }

    /// `register` of `kite` at a URL of its own.
    pub async fn register(&mut self, kite: &Value, key: &str) -> u64 {
        let url = format!("http://127.0.0.1:9/{}", kite["id"].as_str().unwrap());
        self.send("register", kite, key, json!([{ "url": url }]), &[])
            .await
    }

    /// `getKites` of `query` with a `watchCallback`: (response id, watch callback id).
    pub async fn watch(&mut self, kite: &Value, key: &str, query: Value) -> (u64, u64) {
        let watch = self.id();
        let args = json!([{ "query": query, "watchCallback": "[Function]" }]);
        let path = json!([0, "withArgs", 0, "watchCallback"]);
        let response = self
            .send("getKites", kite, key, args, &[(watch, path)])
            .await;
        (response, watch)
    }

    /// Reads frames until the answer to callback `id` is in.
    pub async fn answer(&mut self, id: u64) -> Value {
        while !self.answers.contains_key(&id) {
            let frame = match within("a frame from Kontrol", self.ws.next()).await {
                Some(Ok(Message::Text(t))) => t.to_string(),
                Some(Ok(_)) => continue,
                other => panic!("connection ended: {other:?}"),
            };
            let Some(batch) = frame.strip_prefix('a') else {
                continue;
            };
            for m in serde_json::from_str::<Vec<String>>(batch).unwrap() {
                let m: Value = serde_json::from_str(&m).unwrap();
                match &m["method"] {
                    Value::Number(n) => {
                        let n = n.as_u64().unwrap();
                        if self.answers.contains_key(&n) || n > self.next {
                            panic!("unexpected call {m}");
                        }
                        // A watch callback is called with `{"result": event}`; an answer with
                        // `{"error", "result"}` — ours are response callbacks, called once.
                        let args = m["arguments"][0].clone();
                        if args.get("error").is_some() {
                            self.answers.insert(n, args);
                        } else {
                            *self.called.entry(n).or_default() += 1;
                        }
                    }
                    Value::String(s) if s == "kite.heartbeat" => self.heartbeats += 1,
                    _ => {}
                }
            }
        }
        self.answers[&id].clone()
    }

    /// Closes the websocket.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}
