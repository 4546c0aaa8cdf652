//! Kite identity: the seven fields that name every kite, their string form and validation.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The identity of a kite: `/username/environment/name/version/region/hostname/id`.
///
/// Serializes with Go's field order (`name, username, id, environment, region, version,
/// hostname`) and always emits all seven keys, as `protocol.Kite` does. Missing keys
/// deserialize as empty strings, so partial identities from other peers are accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct Kite {
    /// The kite's name (`math`, `kontrol`, ...).
    pub name: String,
    /// The owner of the kite; on a server, replaced by the authenticated username.
    pub username: String,
    /// A unique id (a UUIDv4 per kite process).
    pub id: String,
    /// The environment (`production`, `unknown`, ...).
    pub environment: String,
    /// The region (`eu`, `unknown`, ...).
    pub region: String,
    /// The version, three dot-separated parts (`1.0.0`).
    pub version: String,
    /// The host the kite runs on.
    pub hostname: String,
}

/// Why an identity is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The string form does not start with `/` or is empty (Go: `invalid kite string`).
    #[error("invalid kite string")]
    InvalidString,
    /// A field is empty.
    #[error("Empty Kite field: {0}")]
    EmptyField(&'static str),
    /// A field contains `/`.
    #[error("Field \"{0}\" must not contain '/'")]
    SlashInField(&'static str),
    /// The version does not have three dot-separated parts.
    #[error("version must have three dot-separated parts, got {0:?}")]
    BadVersion(String),
}

/// The JSON names of the seven fields, from the most general to the most specific.
pub const KEY_ORDER: [&str; 7] = [
    "username",
    "environment",
    "name",
    "version",
    "region",
    "hostname",
    "id",
];

impl Kite {
    /// Creates an identity with `name` and `version` and every other field empty.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Kite {
            name: name.into(),
            version: version.into(),
            ..Kite::default()
        }
    }

    /// The seven values in [`KEY_ORDER`].
    pub fn values(&self) -> [&str; 7] {
        [
            &self.username,
            &self.environment,
            &self.name,
            &self.version,
            &self.region,
            &self.hostname,
            &self.id,
        ]
    }

    /// Checks Kontrol's strict rule: every field non-empty and free of `/`.
    pub fn validate(&self) -> Result<(), IdentityError> {
        for (key, value) in KEY_ORDER.iter().zip(self.values()) {
            if value.is_empty() {
                return Err(IdentityError::EmptyField(key));
            }
            if value.contains('/') {
                return Err(IdentityError::SlashInField(key));
            }
        }
        Ok(())
    }

    /// A query that matches exactly this kite (all seven fields set).
    pub fn query(&self) -> KontrolQuery {
        KontrolQuery {
            username: self.username.clone(),
            environment: self.environment.clone(),
            name: self.name.clone(),
            version: self.version.clone(),
            region: self.region.clone(),
            hostname: self.hostname.clone(),
            id: self.id.clone(),
        }
    }
}

/// Checks that a version has three dot-separated, non-empty parts (Go's `kite.New` rule).
pub fn validate_version(version: &str) -> Result<(), IdentityError> {
    let parts: Vec<&str> = version.split('.').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(IdentityError::BadVersion(version.to_owned()));
    }
    Ok(())
}

impl fmt::Display for Kite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for value in self.values() {
            write!(f, "/{value}")?;
        }
        Ok(())
    }
}

impl FromStr for Kite {
    type Err = IdentityError;

    /// Parses `/u/e/n/v/r/h/id` like Go's `KiteFromString`: missing trailing fields become
    /// empty, and the last field keeps any further slashes. Use [`Kite::validate`] to require
    /// all seven.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.strip_prefix('/').ok_or(IdentityError::InvalidString)?;
        let mut parts = rest.splitn(7, '/').map(str::to_owned);
        let mut next = || parts.next().unwrap_or_default();
        Ok(Kite {
            username: next(),
            environment: next(),
            name: next(),
            version: next(),
            region: next(),
            hostname: next(),
            id: next(),
        })
    }
}

/// A Kontrol query: the seven identity fields, where an empty field matches anything.
///
/// Serializes in Go's order (`username, environment, name, version, region, hostname, id`) with
/// every key present. `version` may also hold a constraint such as `>= 1.0, < 2`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct KontrolQuery {
    /// Owner of the kites.
    pub username: String,
    /// Environment.
    pub environment: String,
    /// Kite name.
    pub name: String,
    /// Version or version constraint.
    pub version: String,
    /// Region.
    pub region: String,
    /// Hostname.
    pub hostname: String,
    /// Kite id.
    pub id: String,
}

impl KontrolQuery {
    /// The seven values in [`KEY_ORDER`].
    pub fn values(&self) -> [&str; 7] {
        [
            &self.username,
            &self.environment,
            &self.name,
            &self.version,
            &self.region,
            &self.hostname,
            &self.id,
        ]
    }

    /// `(json name, value)` for each non-empty field, general to specific.
    pub fn fields(&self) -> impl Iterator<Item = (&'static str, &str)> {
        KEY_ORDER
            .into_iter()
            .zip(self.values())
            .filter(|(_, v)| !v.is_empty())
    }

    /// Whether every field is empty.
    pub fn is_empty(&self) -> bool {
        self.values().iter().all(|v| v.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Kite {
        Kite {
            name: "exp".into(),
            username: "bob".into(),
            id: "213bb625-193b-4e8c-8d9d-f424a20bcd54".into(),
            environment: "unknown".into(),
            region: "unknown".into(),
            version: "0.0.1".into(),
            hostname: "vm".into(),
        }
    }

    #[test]
    fn serializes_in_go_order() {
        assert_eq!(
            crate::json::to_string(&sample()).unwrap(),
            r#"{"name":"exp","username":"bob","id":"213bb625-193b-4e8c-8d9d-f424a20bcd54","environment":"unknown","region":"unknown","version":"0.0.1","hostname":"vm"}"#
        );
    }

    #[test]
    fn string_form_round_trips() {
        let k = sample();
        let s = k.to_string();
        assert_eq!(
            s,
            "/bob/unknown/exp/0.0.1/unknown/vm/213bb625-193b-4e8c-8d9d-f424a20bcd54"
        );
        assert_eq!(s.parse::<Kite>().unwrap(), k);
    }

    #[test]
    fn parses_like_go() {
        assert_eq!("".parse::<Kite>(), Err(IdentityError::InvalidString));
        assert_eq!("bob".parse::<Kite>(), Err(IdentityError::InvalidString));
        let short: Kite = "/bob/prod".parse().unwrap();
        assert_eq!(short.environment, "prod");
        assert_eq!(short.id, "");
        let long: Kite = "/a/b/c/d/e/f/g/h".parse().unwrap();
        assert_eq!(long.id, "g/h");
        assert_eq!(long.validate(), Err(IdentityError::SlashInField("id")));
    }

    #[test]
    fn validates_fields() {
        assert!(sample().validate().is_ok());
        let mut k = sample();
        k.region.clear();
        assert_eq!(k.validate(), Err(IdentityError::EmptyField("region")));
        assert!(validate_version("1.0.0").is_ok());
        assert!(validate_version("1.0").is_err());
        assert!(validate_version("1..0").is_err());
    }

    #[test]
    fn query_fields_and_order() {
        let q = KontrolQuery {
            username: "bob".into(),
            name: "math".into(),
            ..Default::default()
        };
        assert_eq!(
            q.fields().collect::<Vec<_>>(),
            vec![("username", "bob"), ("name", "math")]
        );
        assert_eq!(
            crate::json::to_string(&q).unwrap(),
            r#"{"username":"bob","environment":"","name":"math","version":"","region":"","hostname":"","id":""}"#
        );
        let partial: Kite = serde_json::from_str(r#"{"name":"x"}"#).unwrap();
        assert_eq!(partial.name, "x");
    }
}
