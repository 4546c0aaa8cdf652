//! Reading a Go Kontrol registry out of etcd v2, for `kontrol import`.
//!
//! Go Kontrol keeps its registry in etcd's v2 keys API: a kite at
//! `/kites/<username>/<environment>/<name>/<version>/<region>/<hostname>/<id>` whose value is
//! `{"url": ..., "key_id": ...}` (and, beside it, `/kites/<id>` with the same value, Go's id
//! index). A dump is what `GET /v2/keys/kites?recursive=true` answers (`curl -s
//! http://127.0.0.1:2379/v2/keys/kites?recursive=true > dump.json`, on an etcd 3 serving the
//! v2 API with `--enable-v2`): `{"action": "get", "node": {"key": "/kites", "dir": true,
//! "nodes": [...]}}`.
//!
//! [`parse_etcd_v2`] turns that into [`Registration`]s: one per kite key, the id index and
//! anything else skipped, each kite checked as Kontrol checks a registering kite. They are
//! written to a storage with [`Storage::upsert`], so ownership holds as for any registration.
//!
//! [`Storage::upsert`]: crate::storage::Storage::upsert

use std::time::Duration;

use kite_native::core::Kite;
use serde::Deserialize;

use crate::storage::Registration;

/// The largest dump read (bytes).
pub const MAX_DUMP_BYTES: usize = 512 * 1024 * 1024;

/// Why a dump cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Not the JSON of an etcd v2 `GET`.
    #[error("not an etcd v2 dump: {0}")]
    Format(String),
    /// Larger than [`MAX_DUMP_BYTES`].
    #[error("the dump is {0} bytes, more than the {MAX_DUMP_BYTES} read")]
    TooLarge(usize),
}

/// What a dump holds.
#[derive(Debug, Default)]
pub struct Imported {
    /// The kites, each to be registered.
    pub registrations: Vec<Registration>,
    /// Keys that were not kites, or kites that could not be read, with why.
    pub skipped: Vec<(String, String)>,
}

/// An etcd v2 answer.
#[derive(Deserialize)]
struct Answer {
    node: Node,
}

/// An etcd v2 node: a directory with nodes, or a key with a value.
#[derive(Deserialize)]
struct Node {
    key: String,
    #[serde(default)]
    dir: bool,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    nodes: Vec<Node>,
}

/// Go Kontrol's `RegisterValue`.
#[derive(Deserialize)]
struct Value {
    url: String,
    #[serde(default)]
    key_id: String,
}

/// The kites of the etcd v2 dump `json` under `/kites`, each registered for `ttl` from now.
pub fn parse_etcd_v2(json: &str, ttl: Duration) -> Result<Imported, ImportError> {
    if json.len() > MAX_DUMP_BYTES {
        return Err(ImportError::TooLarge(json.len()));
    }
    let answer: Answer =
        serde_json::from_str(json).map_err(|e| ImportError::Format(e.to_string()))?;
    let mut out = Imported::default();
    // serde_json stops at 128 levels of nesting; the tree is walked with a stack, not
    // recursion.
    let mut stack = vec![answer.node];
    while let Some(node) = stack.pop() {
        if node.dir {
            stack.extend(node.nodes);
            continue;
        }
        match kite_of(&node, ttl) {
            Ok(Some(r)) => out.registrations.push(r),
            Ok(None) => {}
            Err(why) => out.skipped.push((node.key, why)),
        }
    }
    out.registrations.sort_by(|a, b| a.kite.id.cmp(&b.kite.id));
    Ok(out)
}

/// The registration a key holds; `None` for keys that are not kites (Go's id index
/// `/kites/<id>`, its user directories' markers).
fn kite_of(node: &Node, ttl: Duration) -> Result<Option<Registration>, String> {
    let Some(path) = node.key.strip_prefix("/kites/") else {
        return Ok(None);
    };
    let segments: Vec<&str> = path.split('/').collect();
    if segments.len() != 7 {
        return Ok(None);
    }
    let fields: Vec<String> = segments
        .iter()
        .map(|s| unescape(s).ok_or_else(|| format!("bad escape in {s:?}")))
        .collect::<Result<_, _>>()?;
    let kite = Kite {
        username: fields[0].clone(),
        environment: fields[1].clone(),
        name: fields[2].clone(),
        version: fields[3].clone(),
        region: fields[4].clone(),
        hostname: fields[5].clone(),
        id: fields[6].clone(),
    };
    kite.validate().map_err(|e| format!("invalid kite: {e}"))?;
    let value: Value = serde_json::from_str(node.value.as_deref().unwrap_or_default())
        .map_err(|e| format!("value is not Go's {{url, key_id}}: {e}"))?;
    kite_native::transport::parse_base_url(value.url.trim())
        .map_err(|e| format!("invalid URL {:?}: {e}", value.url))?;
    Ok(Some(Registration::new(
        kite,
        value.url.trim(),
        &value.key_id,
        ttl,
    )))
}

/// A key segment as etcd v2 shows it: percent-escapes decoded (keys with `/` or `%` in a field
/// arrive escaped from clients that escape them).
fn unescape(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kites_are_read_and_everything_else_skipped() {
        let dump = r#"{"action":"get","node":{"key":"/kites","dir":true,"nodes":[
            {"key":"/kites/alice","dir":true,"nodes":[
              {"key":"/kites/alice/prod","dir":true,"nodes":[
                {"key":"/kites/alice/prod/math","dir":true,"nodes":[
                  {"key":"/kites/alice/prod/math/1.0.0","dir":true,"nodes":[
                    {"key":"/kites/alice/prod/math/1.0.0/eu","dir":true,"nodes":[
                      {"key":"/kites/alice/prod/math/1.0.0/eu/h1","dir":true,"nodes":[
                        {"key":"/kites/alice/prod/math/1.0.0/eu/h1/k1",
                         "value":"{\"url\":\"http://10.0.0.1:6000/kite\",\"key_id\":\"kp1\"}",
                         "expiration":"2026-12-03T13:00:00Z","ttl":42},
                        {"key":"/kites/alice/prod/math/1.0.0/eu/h1/k2","value":"not json"},
                        {"key":"/kites/alice/prod/math/1.0.0/eu/h1/k3",
                         "value":"{\"url\":\"ftp://x\",\"key_id\":\"kp1\"}"}
                      ]},
                      {"key":"/kites/alice/prod/math/1.0.0/eu/rack%2E7","dir":true,"nodes":[
                        {"key":"/kites/alice/prod/math/1.0.0/eu/rack%2E7/k4",
                         "value":"{\"url\":\"http://10.0.0.4:6000/kite\",\"key_id\":\"\"}"}
                      ]}
                    ]}
                  ]}
                ]}
              ]}
            ]},
            {"key":"/kites/k1","value":"{\"url\":\"http://10.0.0.1:6000/kite\",\"key_id\":\"kp1\"}"}
        ]}}"#;
        let got = parse_etcd_v2(dump, Duration::from_secs(90)).unwrap();
        let kites: Vec<String> = got
            .registrations
            .iter()
            .map(|r| r.kite.to_string())
            .collect();
        assert_eq!(
            kites,
            [
                "/alice/prod/math/1.0.0/eu/h1/k1",
                "/alice/prod/math/1.0.0/eu/rack.7/k4"
            ]
        );
        assert_eq!(got.registrations[0].url, "http://10.0.0.1:6000/kite");
        assert_eq!(got.registrations[0].key_id, "kp1");
        assert_eq!(got.registrations[1].kite.hostname, "rack.7");
        let mut skipped: Vec<&str> = got.skipped.iter().map(|(k, _)| k.as_str()).collect();
        skipped.sort_unstable();
        assert_eq!(
            skipped,
            [
                "/kites/alice/prod/math/1.0.0/eu/h1/k2",
                "/kites/alice/prod/math/1.0.0/eu/h1/k3"
            ]
        );
    }

    #[test]
    fn what_is_not_a_dump_is_an_error() {
        for bad in ["", "[]", "{}", r#"{"node":7}"#, r#"{"errorCode":100}"#] {
            assert!(parse_etcd_v2(bad, Duration::from_secs(1)).is_err(), "{bad}");
        }
        // Nested directories are walked without recursion; nesting past serde_json's limit is
        // an error, not a stack overflow.
        let nested = |levels: usize| {
            let mut deep = String::from(r#"{"node":"#);
            for _ in 0..levels {
                deep.push_str(r#"{"key":"/kites/x","dir":true,"nodes":["#);
            }
            deep.push_str(
                r#"{"key":"/kites/a/b/c/1.0.0/r/h/i","value":"{\"url\":\"http://h/kite\"}"}"#,
            );
            for _ in 0..levels {
                deep.push_str("]}");
            }
            deep.push('}');
            deep
        };
        let got = parse_etcd_v2(&nested(50), Duration::from_secs(1)).unwrap();
        assert_eq!(got.registrations.len(), 1);
        assert!(parse_etcd_v2(&nested(10_000), Duration::from_secs(1)).is_err());
    }
}
