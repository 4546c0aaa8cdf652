//! The protocol's records as [`Tree`]s: identity, credentials, the error object and Kontrol's
//! answers, read with the same leniency as their serde forms and written in Go's key order.

use super::Tree;
use crate::envelope::Auth;
use crate::error::{ErrorKind, KiteError};
use crate::identity::Kite;
use crate::kontrol::{GetKitesResult, KiteWithToken, WatchEvent};

/// A string member: `Ok(None)` when absent, `Err` when present and not a string.
fn text<T: Tree>(node: &T, key: &str) -> Result<Option<String>, String> {
    match node.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_str()
            .map(Some)
            .ok_or_else(|| format!("{key} is not a string")),
    }
}

impl Kite {
    /// Reads an identity. Missing fields are empty; anything malformed (not an object, a
    /// field that is not a string) gives the empty identity, as the serde form does.
    pub fn from_tree<T: Tree>(node: &T) -> Kite {
        let read = || -> Result<Kite, String> {
            if !node.is_object() {
                return Err("not an object".into());
            }
            let field = |key: &str| text(node, key).map(Option::unwrap_or_default);
            Ok(Kite {
                name: field("name")?,
                username: field("username")?,
                id: field("id")?,
                environment: field("environment")?,
                region: field("region")?,
                version: field("version")?,
                hostname: field("hostname")?,
            })
        };
        read().unwrap_or_default()
    }

    /// The identity as an object, in the serde form's key order.
    pub fn to_tree<T: Tree>(&self) -> T {
        T::object(vec![
            ("name", T::string(&self.name)),
            ("username", T::string(&self.username)),
            ("id", T::string(&self.id)),
            ("environment", T::string(&self.environment)),
            ("region", T::string(&self.region)),
            ("version", T::string(&self.version)),
            ("hostname", T::string(&self.hostname)),
        ])
    }
}

impl Auth {
    /// Reads credentials: an object with string `type` and `key`.
    pub fn from_tree<T: Tree>(node: &T) -> Result<Auth, String> {
        if !node.is_object() {
            return Err("expected an object {type, key}".into());
        }
        let kind = text(node, "type")?.ok_or("missing field `type`")?;
        let key = text(node, "key")?.ok_or("missing field `key`")?;
        Ok(Auth { kind, key })
    }

    /// `{"type", "key"}`.
    pub fn to_tree<T: Tree>(&self) -> T {
        T::object(vec![
            ("type", T::string(&self.kind)),
            ("key", T::string(&self.key)),
        ])
    }
}

impl KiteError {
    /// Reads an error object: `type` (default `genericError`), `message`, `code` (a number or
    /// other value is kept as its JSON text) and `id`, each optional.
    pub fn from_tree<T: Tree>(node: &T) -> Result<KiteError, String> {
        if !node.is_object() {
            return Err("expected an error object".into());
        }
        let kind = text(node, "type")?.map_or(ErrorKind::Generic, |t| ErrorKind::from_name(&t));
        let code = match node.get("code") {
            None => String::new(),
            Some(c) if c.is_null() => String::new(),
            Some(c) => c.as_str().unwrap_or_else(|| c.to_json()),
        };
        Ok(KiteError {
            kind,
            message: text(node, "message")?.unwrap_or_default(),
            code,
            id: text(node, "id")?.unwrap_or_default(),
        })
    }

    /// `{"type", "message", "code", "id"}`, all present, as Go sends it.
    pub fn to_tree<T: Tree>(&self) -> T {
        T::object(vec![
            ("type", T::string(self.kind.as_str())),
            ("message", T::string(&self.message)),
            ("code", T::string(&self.code)),
            ("id", T::string(&self.id)),
        ])
    }
}

impl KiteWithToken {
    /// Reads one kite of a `getKites` answer: `kite` and `url` required, `keyId` and `token`
    /// optional.
    pub fn from_tree<T: Tree>(node: &T) -> Result<KiteWithToken, String> {
        if !node.is_object() {
            return Err("a kite found is not an object".into());
        }
        let kite = node.get("kite").ok_or("missing field `kite`")?;
        Ok(KiteWithToken {
            kite: Kite::from_tree(&kite),
            url: text(node, "url")?.ok_or("missing field `url`")?,
            key_id: text(node, "keyId")?.unwrap_or_default(),
            token: text(node, "token")?.unwrap_or_default(),
        })
    }
}

impl GetKitesResult {
    /// Reads a `getKites` answer: `{"kites": [...], "watcherID"?}` (a missing list is empty).
    pub fn from_tree<T: Tree>(node: &T) -> Result<GetKitesResult, String> {
        if !node.is_object() {
            return Err("expected an object {kites}".into());
        }
        // Optional information: anything but a string is no id.
        let watcher_id = node.get("watcherID").and_then(|v| v.as_str());
        let Some(list) = node.get("kites").filter(|k| !k.is_null()) else {
            return Ok(GetKitesResult {
                watcher_id,
                ..GetKitesResult::default()
            });
        };
        let len = list.list_len().ok_or("kites is not a list")?;
        let kites = (0..len)
            .map(|i| {
                list.item(i)
                    .ok_or_else(String::new)
                    .and_then(|k| KiteWithToken::from_tree(&k))
            })
            .collect::<Result<_, _>>()?;
        Ok(GetKitesResult { kites, watcher_id })
    }
}

impl WatchEvent {
    /// Reads what a `getKites` watcher is told: `action` and `kite` required, `url` and
    /// `token` optional.
    pub fn from_tree<T: Tree>(node: &T) -> Result<WatchEvent, String> {
        if !node.is_object() {
            return Err("a watch event is not an object".into());
        }
        let kite = node.get("kite").ok_or("missing field `kite`")?;
        Ok(WatchEvent {
            action: text(node, "action")?.ok_or("missing field `action`")?,
            kite: Kite::from_tree(&kite),
            url: text(node, "url")?.unwrap_or_default(),
            token: text(node, "token")?.unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    //! Each reader agrees with the serde form of its record.

    use serde::de::DeserializeOwned;
    use serde_json::{Value, json};

    use super::*;

    /// `read` accepts exactly what serde accepts, and gives the same record.
    fn agree<R: DeserializeOwned + PartialEq + std::fmt::Debug>(
        read: impl Fn(&Value) -> Result<R, String>,
        cases: &[Value],
    ) {
        for case in cases {
            let serde = serde_json::from_value::<R>(case.clone()).ok();
            assert_eq!(read(case).ok(), serde, "{case}");
        }
    }

    #[test]
    fn records_read_as_serde_reads_them() {
        let kite = json!({"name": "math", "username": "devrim", "id": "42", "environment": "e",
            "region": "r", "version": "1.0.0", "hostname": "h"});
        // An unreadable identity is the empty one, as requests read it with serde.
        for case in [
            kite.clone(),
            json!({"name": "x"}),
            json!({"name": 3}),
            json!([1]),
            json!({}),
        ] {
            let serde: Kite = serde_json::from_value(case.clone()).unwrap_or_default();
            assert_eq!(Kite::from_tree(&case), serde, "{case}");
        }
        agree(
            Auth::from_tree,
            &[
                json!({"type": "token", "key": "k"}),
                json!({"type": "token"}),
                json!({"type": 1, "key": "k"}),
                json!("kiteKey"),
                json!({"type": "t", "key": "k", "extra": true}),
            ],
        );
        agree(
            KiteError::from_tree,
            &[
                json!({"type": "myType", "message": "m", "code": 42}),
                json!({"message": "m"}),
                json!({"type": "authenticationError", "message": "m", "code": "", "id": "1"}),
                json!({"message": 5}),
                json!({"code": null}),
                json!({"code": {"a": [1]}}),
            ],
        );
        // serde's derive also reads a struct from a list (`["x"]` as type `x`); an error is an
        // object, and the tree reader says so.
        assert!(KiteError::from_tree(&json!(["x"])).is_err());
        let found = json!({"kite": kite, "url": "http://h/kite", "keyId": "k1", "token": "t"});
        agree(
            GetKitesResult::from_tree,
            &[
                json!({"kites": [found.clone()]}),
                json!({"kites": []}),
                json!({}),
                json!({"kites": [{"kite": kite}]}),
                json!({"kites": "no"}),
            ],
        );
        agree(
            WatchEvent::from_tree,
            &[
                json!({"action": "REGISTER", "kite": kite, "url": "u", "token": "t"}),
                json!({"action": "DEREGISTER", "kite": kite}),
                json!({"kite": kite}),
            ],
        );
    }

    #[test]
    fn records_write_as_serde_writes_them() {
        let kite = Kite {
            name: "math".into(),
            username: "devrim".into(),
            id: "42".into(),
            environment: "<e>".into(),
            region: "r".into(),
            version: "1.0.0".into(),
            hostname: "h".into(),
        };
        let as_tree: Value = kite.to_tree();
        assert_eq!(as_tree.to_string(), serde_json::to_string(&kite).unwrap());
        let auth = Auth::new("token", "t");
        let as_tree: Value = auth.to_tree();
        assert_eq!(as_tree.to_string(), serde_json::to_string(&auth).unwrap());
        let e = KiteError::new(ErrorKind::Other("x".into()), "m")
            .with_code("c")
            .with_id("i");
        let as_tree: Value = e.to_tree();
        assert_eq!(as_tree.to_string(), serde_json::to_string(&e).unwrap());
    }
}
