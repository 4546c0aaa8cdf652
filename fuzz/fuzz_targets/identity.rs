//! Kite identity strings, `KontrolQuery` and Kontrol's query matcher (kite_core::identity,
//! kontrol::query).
//!
//! The input is lines: a query (`/user/env/name/version/region/host/id`, or a JSON object when
//! it starts with `{`) followed by kites (`/user/...` strings or JSON objects). Checked: the
//! string form parses as Go's `KiteFromString` does and prints back; JSON forms round trip;
//! `validate` is the strict rule; `Matcher::new` refuses exactly the queries the rule refuses;
//! `matches` is the rule; every kite a query matches starts with `Matcher::prefix` (storages
//! look kites up by it, so a match outside it would be lost); and a token minted for a kite a
//! query found (`kontrol::query::audience`) lets its holder call that kite and is never the root
//! audience.
#![no_main]

use kite_core::auth::check_audience;
use kite_core::identity::{IdentityError, KEY_ORDER};
use kite_core::{Kite, KontrolQuery};
use kontrol::query::{Matcher, QueryError, audience};
use kontrol::version::{Constraints, Version};
use libfuzzer_sys::fuzz_target;

/// `/a/b/c` with slashes added up to seven fields.
fn padded(text: &str) -> String {
    let fields = text.matches('/').count();
    format!("{text}{}", "/".repeat(7usize.saturating_sub(fields)))
}

fn kite_string(text: &str) -> Option<Kite> {
    let parsed = text.parse::<Kite>();
    if !text.starts_with('/') {
        assert_eq!(parsed, Err(IdentityError::InvalidString), "{text:?}");
        return None;
    }
    let kite = parsed.expect("a string starting with / parses");
    let printed = kite.to_string();
    assert_eq!(printed, padded(text), "{text:?} printed back");
    assert_eq!(printed.parse::<Kite>().as_ref(), Ok(&kite));
    Some(kite)
}

fn kite_json(text: &str) -> Option<Kite> {
    let kite: Kite = serde_json::from_str(text).ok()?;
    let json = kite_core::json::to_string(&kite).unwrap();
    assert_eq!(serde_json::from_str::<Kite>(&json).unwrap(), kite);
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&json).unwrap();
    assert_eq!(
        object.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "name",
            "username",
            "id",
            "environment",
            "region",
            "version",
            "hostname"
        ]
    );
    Some(kite)
}

fn validate(kite: &Kite) {
    let strict = kite
        .values()
        .iter()
        .all(|v| !v.is_empty() && !v.contains('/'));
    assert_eq!(kite.validate().is_ok(), strict, "{kite:?}");
    if strict {
        assert_eq!(kite.to_string().parse::<Kite>().as_ref(), Ok(kite));
    }
}

fn query_of(line: &str) -> Option<KontrolQuery> {
    if line.starts_with('{') {
        let q: KontrolQuery = serde_json::from_str(line).ok()?;
        let json = kite_core::json::to_string(&q).unwrap();
        assert_eq!(serde_json::from_str::<KontrolQuery>(&json).unwrap(), q);
        let object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&json).unwrap();
        assert_eq!(
            object.keys().map(String::as_str).collect::<Vec<_>>(),
            KEY_ORDER
        );
        Some(q)
    } else {
        Some(kite_string(line)?.query())
    }
}

/// The version rule, from kontrol::version's public API.
fn version_matches(want: &str, have: &str) -> bool {
    let want_trimmed = want.trim();
    if want_trimmed.is_empty() {
        true
    } else if want_trimmed.parse::<Version>().is_ok() {
        want == have
    } else {
        let c: Constraints = want_trimmed.parse().expect("Matcher::new checked it");
        have.parse::<Version>().is_ok_and(|v| c.check(&v))
    }
}

fn check_query(q: &KontrolQuery, kites: &[Kite]) {
    let values = q.values();
    let id_only = values[..6].iter().all(|v| v.is_empty());
    let matcher = match Matcher::new(q) {
        Ok(m) => m,
        Err(QueryError::Empty) => return assert!(q.is_empty(), "{q:?}"),
        Err(QueryError::NoUsername) => {
            return assert!(!id_only && q.username.is_empty(), "{q:?}");
        }
        Err(QueryError::Version(_)) => {
            let v = q.version.trim();
            assert!(!v.is_empty() && v.parse::<Version>().is_err(), "{q:?}");
            assert!(v.parse::<Constraints>().is_err(), "{q:?}");
            return;
        }
    };
    assert!(!q.is_empty() && (id_only || !q.username.is_empty()));
    assert_eq!(matcher.id(), id_only.then_some(q.id.as_str()));
    let prefix = matcher.prefix();
    assert!(prefix.len() <= 7 && prefix.iter().all(|p| !p.is_empty()));
    assert_eq!(prefix[..], values[..prefix.len()], "{q:?}");
    for kite in kites {
        let have = kite.values();
        let model = if id_only {
            kite.id == q.id
        } else {
            (0..7).all(|i| match i {
                3 => version_matches(&q.version, &kite.version),
                _ => values[i].is_empty() || values[i] == have[i],
            })
        };
        let matched = matcher.matches(kite);
        assert_eq!(matched, model, "{q:?} {kite:?}");
        if !matched {
            continue;
        }
        assert_eq!(
            prefix[..],
            have[..prefix.len()],
            "a match outside the prefix: {q:?} {kite:?}"
        );
        // Registered kites are valid; a token for one the query found lets its holder call it.
        if kite.validate().is_ok() && !values.iter().any(|v| v.contains('/')) {
            let aud = audience(q, kite);
            assert_ne!(aud, "/", "{q:?} {kite:?}");
            assert_eq!(
                check_audience(&aud, kite, false),
                Ok(()),
                "{aud} {q:?} {kite:?}"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let query_line = lines.next().unwrap_or_default();
    let kites: Vec<Kite> = lines
        .filter_map(|line| {
            if line.starts_with('{') {
                kite_json(line)
            } else {
                kite_string(line)
            }
        })
        .collect();
    for kite in &kites {
        validate(kite);
    }
    if let Some(q) = query_of(query_line) {
        check_query(&q, &kites);
    }
});
