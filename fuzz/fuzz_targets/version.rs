//! Version constraints of Kontrol queries (kontrol::version), hashicorp/go-version's grammar.
//!
//! The input is lines: a constraint, then versions. Checked: nothing panics; a version prints
//! back as its trimmed text and equals itself reparsed; the order is a total order (reflexive,
//! antisymmetric, transitive, consistent with `==`); a constraint is the conjunction of its
//! comma-separated conditions; each operator agrees with the order (`= v`, `>= v`, `<= v`,
//! `~> v` hold for `v` itself; `!= v`, `> v`, `< v` do not; `~> c` implies `>= c`).
#![no_main]

use std::cmp::Ordering;

use kontrol::version::{Constraints, Version};
use libfuzzer_sys::fuzz_target;

fn constraint(text: &str) -> Option<Constraints> {
    text.parse().ok()
}

fn version_laws(text: &str, v: &Version) {
    assert_eq!(v.to_string(), text.trim());
    let again: Version = v.to_string().parse().expect("a printed version parses");
    assert_eq!(v.cmp(&again), Ordering::Equal);
    assert_eq!(v.cmp(v), Ordering::Equal);
    assert!(v.eq(&again) && again.eq(v));
    let s = v.to_string();
    for (op, holds) in [
        ("=", true),
        ("", true),
        (">=", true),
        ("<=", true),
        ("~>", true),
        ("!=", false),
        (">", false),
        ("<", false),
    ] {
        if let Some(c) = constraint(&format!("{op} {s}")) {
            assert_eq!(c.check(v), holds, "{op} {s}");
        } else {
            panic!("{op} {s:?} does not parse as a constraint though {s:?} is a version");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let first = lines.next().unwrap_or_default();
    let versions: Vec<(String, Version)> = std::iter::once(first)
        .chain(lines)
        .filter_map(|l| l.parse::<Version>().ok().map(|v| (l.to_owned(), v)))
        .collect();
    for (text, v) in &versions {
        version_laws(text, v);
    }
    // Order laws between every pair and triple (few lines, so this stays small).
    for (_, a) in versions.iter().take(8) {
        for (_, b) in versions.iter().take(8) {
            assert_eq!(a.cmp(b), b.cmp(a).reverse());
            assert_eq!(a == b, a.cmp(b) == Ordering::Equal);
            for (_, c) in versions.iter().take(8) {
                if a <= b && b <= c {
                    assert!(a <= c, "{a} <= {b} <= {c}");
                }
            }
        }
    }
    let Some(c) = constraint(first) else {
        return;
    };
    let parts: Vec<Constraints> = first
        .split(',')
        .map(|p| p.parse().expect("each condition of a constraint parses"))
        .collect();
    for (_, v) in &versions {
        let holds = c.check(v);
        assert_eq!(holds, parts.iter().all(|p| p.check(v)), "{first} {v}");
        for part in first.split(',') {
            let part = part.trim();
            if let Some(rest) = part.strip_prefix("~>") {
                let ge: Constraints = format!(">= {rest}").parse().unwrap();
                if part.parse::<Constraints>().unwrap().check(v) {
                    assert!(ge.check(v), "{part} holds for {v} but >= does not");
                }
            }
        }
    }
});
