//! Which kites a `getKites` query finds: one rule for every storage.
//!
//! A query names kites from the general to the specific, in the order of the seven fields
//! (`username, environment, name, version, region, hostname, id`); an empty field matches
//! anything. The rule:
//!
//! - A query with only `id` finds the kite with that id.
//! - Otherwise `username` is required, and every other field that is set must equal the kite's;
//!   an empty field in between is a wildcard (`/alice//math` finds `math` kites of alice in
//!   every environment). Go Kontrol's etcd backend refused such gaps while its PostgreSQL
//!   backend accepted them, and Go's own clients send them (`math-client` asks for username and
//!   name only), so ours accepts them, the same on every storage. Storages look candidates up by
//!   the exact fields that are set ([`Matcher::exact`]: SQL `WHERE` and indexes, the embedded
//!   store's and etcd's field indexes) or by the leading ones (etcd's key prefix,
//!   [`Matcher::prefix`], when that is the tightest) and check the rest.
//! - `version` may be a constraint (`>= 1.0, < 2`, `~> 1.1`, `!= 1.3.0`); a plain version must
//!   equal the kite's version string.
//!
//! ```
//! use kite_native::core::{Kite, KontrolQuery};
//! use kontrol::query::Matcher;
//!
//! let q = KontrolQuery { environment: "prod".into(), ..Default::default() };
//! assert!(Matcher::new(&q).is_err()); // no username
//! let q = KontrolQuery {
//!     username: "alice".into(),
//!     environment: "prod".into(),
//!     name: "math".into(),
//!     version: "~> 1.1".into(),
//!     ..Default::default()
//! };
//! let m = Matcher::new(&q).unwrap();
//! let kite: Kite = "/alice/prod/math/1.2.3/eu/host1/8a2f".parse().unwrap();
//! assert!(m.matches(&kite));
//! ```

use kite_native::core::{Kite, KontrolQuery};

use crate::version::{Constraints, Version, VersionError};

/// Why a query cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// Every field is empty.
    #[error("all query fields are empty")]
    Empty,
    /// No `username` (and not an id-only query).
    #[error("Empty username field")]
    NoUsername,
    /// `version` is neither a version nor a constraint.
    #[error(transparent)]
    Version(#[from] VersionError),
}

/// How a query constrains the version.
#[derive(Debug, Clone)]
enum VersionRule {
    Any,
    Exact(String),
    Constraint(Constraints),
}

/// A checked query, ready to test kites against.
#[derive(Debug, Clone)]
pub struct Matcher {
    query: KontrolQuery,
    id_only: bool,
    version: VersionRule,
}

impl Matcher {
    /// Checks `query` against the rule above.
    pub fn new(query: &KontrolQuery) -> Result<Matcher, QueryError> {
        if query.is_empty() {
            return Err(QueryError::Empty);
        }
        let values = query.values();
        let id_only = values[..6].iter().all(|v| v.is_empty());
        if !id_only && query.username.is_empty() {
            return Err(QueryError::NoUsername);
        }
        let version = match query.version.trim() {
            "" => VersionRule::Any,
            v if v.parse::<Version>().is_ok() => VersionRule::Exact(query.version.clone()),
            v => VersionRule::Constraint(v.parse()?),
        };
        Ok(Matcher {
            query: query.clone(),
            id_only,
            version,
        })
    }

    /// The query for the kite `id` alone (what `getKites` with only an id asks).
    pub fn by_id(id: &str) -> Matcher {
        Matcher {
            query: KontrolQuery {
                id: id.to_owned(),
                ..KontrolQuery::default()
            },
            id_only: true,
            version: VersionRule::Any,
        }
    }

    /// The query.
    pub fn query(&self) -> &KontrolQuery {
        &self.query
    }

    /// The id, for a query that names only an id.
    pub fn id(&self) -> Option<&str> {
        self.id_only.then_some(self.query.id.as_str())
    }

    /// The leading exact fields (`username`, `environment`, `name`, a plain `version`, ...),
    /// for storages that look kites up by key prefix; the rest is checked by
    /// [`Matcher::matches`].
    pub fn prefix(&self) -> Vec<&str> {
        if self.id_only {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (i, v) in self.query.values().into_iter().enumerate() {
            // A version of blanks is no rule at all, and a constraint is checked kite by kite:
            // neither may narrow the lookup.
            if v.is_empty() || (i == 3 && !matches!(self.version, VersionRule::Exact(_))) {
                break;
            }
            out.push(v);
        }
        out
    }

    /// Every field the query sets to one exact value, by position in the seven
    /// (`username, environment, name, version, region, hostname, id`): what a storage can look
    /// kites up by (SQL `WHERE`, an index). A version constraint or a version of blanks is not
    /// one (it is checked by [`Matcher::matches`]); an id-only query has only the id.
    ///
    /// ```
    /// use kite_native::core::KontrolQuery;
    /// use kontrol::query::Matcher;
    ///
    /// let q = KontrolQuery { username: "alice".into(), name: "math".into(), ..Default::default() };
    /// let m = Matcher::new(&q).unwrap();
    /// assert_eq!(m.exact(), [Some("alice"), None, Some("math"), None, None, None, None]);
    /// ```
    pub fn exact(&self) -> [Option<&str>; 7] {
        let mut out = [None; 7];
        for (i, v) in self.query.values().into_iter().enumerate() {
            let exact = !v.is_empty() && (i != 3 || matches!(self.version, VersionRule::Exact(_)));
            if exact {
                out[i] = Some(v);
            }
        }
        out
    }

    /// Whether `kite` is one the query asks for.
    pub fn matches(&self, kite: &Kite) -> bool {
        if self.id_only {
            return kite.id == self.query.id;
        }
        let q = &self.query;
        let field = |want: &str, have: &str| want.is_empty() || want == have;
        field(&q.username, &kite.username)
            && field(&q.environment, &kite.environment)
            && field(&q.name, &kite.name)
            && match &self.version {
                VersionRule::Any => true,
                VersionRule::Exact(v) => *v == kite.version,
                VersionRule::Constraint(c) => kite.version.parse().is_ok_and(|v| c.check(&v)),
            }
            && field(&q.region, &kite.region)
            && field(&q.hostname, &kite.hostname)
            && field(&q.id, &kite.id)
    }
}

/// The audience of a token Kontrol mints for `kite`, found by `query` (Go's rule):
/// `/username/environment/name` if the query names the kite, `/username/environment` if it
/// names the environment, else `/username`; an empty field stays empty (a wildcard), as in
/// Go's `/alice//math`. An id-only query gets the kite's own `/username/environment/name`,
/// never Go's root audience `/` (which lets the token call any kite).
pub fn audience(query: &KontrolQuery, kite: &Kite) -> String {
    if query.values()[..6].iter().all(|v| v.is_empty()) {
        return format!("/{}/{}/{}", kite.username, kite.environment, kite.name);
    }
    if !query.name.is_empty() {
        format!("/{}/{}/{}", query.username, query.environment, query.name)
    } else if !query.environment.is_empty() {
        format!("/{}/{}", query.username, query.environment)
    } else {
        format!("/{}", query.username)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The query written as a kite path; empty fields are wildcards.
    fn q(path: &str) -> KontrolQuery {
        if path.is_empty() {
            return KontrolQuery::default();
        }
        kite(path).query()
    }

    fn kite(path: &str) -> Kite {
        path.parse().unwrap()
    }

    #[test]
    fn the_prefix_rule() {
        assert_eq!(Matcher::new(&q("")).unwrap_err(), QueryError::Empty);
        // Gaps are wildcards (Go clients ask for username and name only).
        let m = Matcher::new(&q("/alice//math")).unwrap();
        assert!(m.matches(&kite("/alice/prod/math/1.0.0/eu/h/k1")));
        assert!(m.matches(&kite("/alice/dev/math/2.0.0/us/h/k2")));
        assert!(!m.matches(&kite("/alice/dev/db/2.0.0/us/h/k3")));
        assert_eq!(m.prefix(), ["alice"]);
        let no_user = KontrolQuery {
            environment: "prod".into(),
            ..Default::default()
        };
        assert_eq!(Matcher::new(&no_user).unwrap_err(), QueryError::NoUsername);
        let id_only = KontrolQuery {
            id: "k1".into(),
            ..Default::default()
        };
        let m = Matcher::new(&id_only).unwrap();
        assert_eq!(m.id(), Some("k1"));
        assert!(m.matches(&kite("/a/b/c/1.0.0/r/h/k1")));
        assert!(!m.matches(&kite("/a/b/c/1.0.0/r/h/k2")));
        assert!(Matcher::new(&q("/alice/prod/math/>= x")).is_err());
    }

    #[test]
    fn matching_fields_and_versions() {
        let k = kite("/alice/prod/math/1.2.3/eu/host1/id1");
        for (query, want) in [
            ("/alice", true),
            ("/bob", false),
            ("/alice/prod", true),
            ("/alice/prod/math", true),
            ("/alice/prod/db", false),
            ("/alice/prod/math/1.2.3", true),
            ("/alice/prod/math/1.2", false),
            ("/alice/prod/math/~> 1.1", true),
            ("/alice/prod/math/>= 2", false),
            ("/alice/prod/math/>= 1.0, < 2/eu", true),
            ("/alice/prod/math/>= 1.0, < 2/us", false),
            ("/alice/prod/math/1.2.3/eu/host1/id1", true),
            ("/alice/prod/math/1.2.3/eu/host1/id2", false),
        ] {
            let m = Matcher::new(&q(query)).unwrap();
            assert_eq!(m.matches(&k), want, "{query}");
        }
        // A kite whose version is not a version never meets a constraint.
        let odd = kite("/alice/prod/math/latest/eu/host1/id1");
        assert!(
            !Matcher::new(&q("/alice/prod/math/>= 0"))
                .unwrap()
                .matches(&odd)
        );
        assert!(Matcher::new(&q("/alice/prod/math/latest")).is_err());
    }

    #[test]
    fn prefixes_for_storages() {
        let m = Matcher::new(&q("/alice/prod/math/~> 1.1/eu")).unwrap();
        assert_eq!(m.prefix(), ["alice", "prod", "math"]);
        let m = Matcher::new(&q("/alice/prod/math/1.0.0/eu")).unwrap();
        assert_eq!(m.prefix(), ["alice", "prod", "math", "1.0.0", "eu"]);
        // A version of blanks matches every version, so the lookup must not ask for " "
        // (found by the identity fuzz target: such a query lost every kite on prefix storages).
        let m = Matcher::new(&q("/alice/prod/math/ /eu")).unwrap();
        assert_eq!(m.prefix(), ["alice", "prod", "math"]);
        assert_eq!(
            m.exact(),
            [
                Some("alice"),
                Some("prod"),
                Some("math"),
                None,
                Some("eu"),
                None,
                None
            ]
        );
        // Every exact field, gaps or not; never a constraint.
        let m = Matcher::new(&q("/alice//math/~> 1.1//h1")).unwrap();
        assert_eq!(
            m.exact(),
            [
                Some("alice"),
                None,
                Some("math"),
                None,
                None,
                Some("h1"),
                None
            ]
        );
        let m = Matcher::new(&KontrolQuery {
            id: "k1".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(m.exact(), [None, None, None, None, None, None, Some("k1")]);
        assert!(m.matches(&kite("/alice/prod/math/0.2/eu/h/k1")));
    }

    #[test]
    fn audiences_never_root() {
        let k = kite("/alice/prod/math/1.2.3/eu/host1/id1");
        assert_eq!(audience(&q("/alice"), &k), "/alice");
        assert_eq!(audience(&q("/alice/prod"), &k), "/alice/prod");
        assert_eq!(
            audience(&q("/alice/prod/math/1.2.3/eu"), &k),
            "/alice/prod/math"
        );
        // Go's audience for its client's username+name query.
        assert_eq!(audience(&q("/alice//math"), &k), "/alice//math");
        let id_only = KontrolQuery {
            id: "id1".into(),
            ..Default::default()
        };
        assert_eq!(audience(&id_only, &k), "/alice/prod/math");
    }
}
