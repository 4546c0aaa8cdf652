//! Versions and version constraints as Kontrol queries use them (hashicorp/go-version's
//! grammar, which Go Kontrol uses): `1.2.3`, `v1.2`, `1.0.0-beta.1+build`; constraints are
//! comma-separated conditions that must all hold, with the operators `=`, `!=`, `>`, `<`, `>=`,
//! `<=` and `~>` (pessimistic: `~> 1.1` means `>= 1.1, < 2.0`; `~> 1.1.3` means
//! `>= 1.1.3, < 1.2.0`).
//!
//! ```
//! use kontrol::version::{Constraints, Version};
//!
//! let c: Constraints = ">= 1.0, < 2".parse().unwrap();
//! assert!(c.check(&"1.4.2".parse::<Version>().unwrap()));
//! assert!(!c.check(&"2.0.0".parse::<Version>().unwrap()));
//! ```

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// Why a version or constraint could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// Not a version.
    #[error("Malformed version: {0}")]
    Version(String),
    /// Not a constraint.
    #[error("Malformed constraint: {0}")]
    Constraint(String),
}

/// A version: numeric segments (missing ones count as 0), an optional pre-release (which
/// sorts before the release) and build metadata (ignored when comparing).
#[derive(Debug, Clone)]
pub struct Version {
    segments: Vec<u64>,
    /// How many segments were written (for `~>`).
    written: usize,
    pre: String,
    original: String,
}

impl FromStr for Version {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || VersionError::Version(s.to_owned());
        let t = s.trim();
        let t = t.strip_prefix('v').unwrap_or(t);
        let (t, build) = t.split_once('+').unwrap_or((t, ""));
        let (core, pre) = t.split_once('-').unwrap_or((t, ""));
        if core.is_empty()
            || (t.contains('-') && pre.is_empty())
            || (s.contains('+') && build.is_empty())
        {
            return Err(bad());
        }
        let segments = core
            .split('.')
            .map(|p| {
                if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                    Err(bad())
                } else {
                    p.parse::<u64>().map_err(|_| bad())
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Pre-release and build metadata: dot-separated `[0-9A-Za-z-]` identifiers.
        if [pre, build]
            .iter()
            .flat_map(|x| x.split('.'))
            .any(|p| !p.is_empty() && !p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        {
            return Err(bad());
        }
        let written = segments.len();
        let mut segments = segments;
        while segments.len() < 3 {
            segments.push(0);
        }
        Ok(Version {
            segments,
            written,
            pre: pre.to_owned(),
            original: s.trim().to_owned(),
        })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.original)
    }
}

/// Compares pre-release strings dot by dot: numbers numerically and below identifiers.
fn compare_pre(a: &str, b: &str) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Greater,
        (false, true) => return Ordering::Less,
        (false, false) => {}
    }
    let mut x = a.split('.');
    let mut y = b.split('.');
    loop {
        match (x.next(), y.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(p), Some(q)) => {
                let ord = match (p.parse::<u64>(), q.parse::<u64>()) {
                    (Ok(m), Ok(n)) => m.cmp(&n),
                    (Ok(_), Err(_)) => Ordering::Less,
                    (Err(_), Ok(_)) => Ordering::Greater,
                    (Err(_), Err(_)) => p.cmp(q),
                };
                if ord != Ordering::Equal {
                    return ord;
                }
            }
        }
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let n = self.segments.len().max(other.segments.len());
        for i in 0..n {
            let a = self.segments.get(i).copied().unwrap_or(0);
            let b = other.segments.get(i).copied().unwrap_or(0);
            match a.cmp(&b) {
                Ordering::Equal => {}
                ord => return ord,
            }
        }
        compare_pre(&self.pre, &other.pre)
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Pessimistic,
}

/// One condition of a constraint.
#[derive(Debug, Clone)]
struct Condition {
    op: Op,
    version: Version,
}

impl Condition {
    fn check(&self, v: &Version) -> bool {
        let c = &self.version;
        match self.op {
            Op::Eq => v == c,
            Op::Ne => v != c,
            Op::Gt => v > c,
            Op::Lt => v < c,
            Op::Ge => v >= c,
            Op::Le => v <= c,
            Op::Pessimistic => {
                if v < c {
                    return false;
                }
                // A version with fewer segments than the constraint cannot meet it (Go's
                // go-version says so too); every written segment but the last stays the same.
                if c.segments.len() > v.segments.len() {
                    return false;
                }
                let fixed = c.written.saturating_sub(1).max(1);
                v.segments[..fixed] == c.segments[..fixed]
            }
        }
    }
}

/// Conditions that must all hold (`>= 1.0, < 2`).
#[derive(Debug, Clone)]
pub struct Constraints {
    conditions: Vec<Condition>,
    original: String,
}

impl FromStr for Constraints {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || VersionError::Constraint(s.to_owned());
        let conditions = s
            .split(',')
            .map(|part| {
                let part = part.trim();
                let (op, rest) = [
                    ("~>", Op::Pessimistic),
                    (">=", Op::Ge),
                    ("<=", Op::Le),
                    ("!=", Op::Ne),
                    (">", Op::Gt),
                    ("<", Op::Lt),
                    ("=", Op::Eq),
                ]
                .into_iter()
                .find_map(|(p, op)| part.strip_prefix(p).map(|rest| (op, rest)))
                .unwrap_or((Op::Eq, part));
                let version = rest.trim().parse::<Version>().map_err(|_| bad())?;
                Ok(Condition { op, version })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Constraints {
            conditions,
            original: s.trim().to_owned(),
        })
    }
}

impl fmt::Display for Constraints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.original)
    }
}

impl Constraints {
    /// Whether `v` meets every condition.
    pub fn check(&self, v: &Version) -> bool {
        self.conditions.iter().all(|c| c.check(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    #[test]
    fn versions_parse_and_order() {
        assert!(v("1.2.3") < v("1.10.0"));
        assert_eq!(v("1.2"), v("1.2.0"));
        assert_eq!(v("v1.2.3+build.7"), v("1.2.3"));
        assert!(v("1.0.0-beta") < v("1.0.0"));
        assert!(v("1.0.0-alpha.2") < v("1.0.0-alpha.10"));
        assert!(v("1.0.0-2") < v("1.0.0-alpha"));
        // The last three were found by the version fuzz target: build metadata was not
        // checked, so a "version" could hold a comma and not be usable in a constraint.
        for bad in [
            "",
            "a",
            "1..2",
            "1.x",
            "1.0-",
            "-1",
            "1.0.0-é",
            "1.0.0+",
            "1.0.0+a b",
            "1+x, 2",
        ] {
            assert!(bad.parse::<Version>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn constraints_check_like_go_version() {
        let cases = [
            (">= 1.0, < 2", "1.4.2", true),
            (">= 1.0, < 2", "2.0.0", false),
            ("~> 1.1", "1.2.3", true),
            ("~> 1.1", "2.0", false),
            ("~> 1.1", "1.0.9", false),
            ("~> 1.1.3", "1.1.9", true),
            ("~> 1.1.3", "1.2.0", false),
            ("!= 1.0.0", "1.0.0", false),
            ("!= 1.0.0", "1.0.1", true),
            ("= 1.0", "1.0.0", true),
            ("1.0", "1.0.0", true),
            (">= 1.5.5", "1.5.5", true),
            (">1.5.5", "1.5.5", false),
            ("<= 0.9", "0.9.0", true),
            // Found by the version fuzz target: a constraint with more segments than the
            // version indexed past the version's segments (a panic in getKites).
            ("~> 1.0.0.0", "2", false),
            ("~> 1.0.0.0.0", "1.0.0", false),
            ("~> 1.0.0.0", "1.0.0.1", true),
            ("~> 1.2.3.4", "1.2.3.9.9", true),
        ];
        for (c, ver, want) in cases {
            let c: Constraints = c.parse().unwrap();
            assert_eq!(c.check(&v(ver)), want, "{c} {ver}");
        }
        for bad in [">= x", "~>", ">= 1.0,", "=> 1.0"] {
            assert!(bad.parse::<Constraints>().is_err(), "{bad:?}");
        }
    }
}
