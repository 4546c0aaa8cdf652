//! Credentials: the JWT claims of kite keys and tokens, and the rules a kite applies to them
//! that need no cryptography (times, audience). Signature checks belong to the drivers
//! (jsonwebtoken in kite-native), which call these with the verified claims and their clock.

use serde::{Deserialize, Serialize};

use crate::identity::Kite;

/// The claims of a kite key or token, as Go kite writes them (jwt-go v3 `StandardClaims` plus
/// `kontrolKey` and `kontrolURL`): `aud` is a string, times are Unix seconds, empty claims are
/// left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Claims {
    /// Audience: the kite path prefix this token may call (`/user/env/name`), or `/`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub aud: String,
    /// Expiry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// Token id.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub jti: String,
    /// Issued at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Issuer: the Kontrol's username.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub iss: String,
    /// Not before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Subject: the username the credential authenticates.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub sub: String,
    /// Kite keys: the Kontrol public key (PEM) that signed the key.
    #[serde(rename = "kontrolKey", skip_serializing_if = "String::is_empty")]
    pub kontrol_key: String,
    /// Kite keys: the Kontrol URL.
    #[serde(rename = "kontrolURL", skip_serializing_if = "String::is_empty")]
    pub kontrol_url: String,
}

/// Checks `exp`, `iat` and `nbf` against `now` (Unix seconds), each allowed `leeway` seconds
/// of clock skew. The messages are Go's (jwt-go), which clients look for: an expired token
/// says `token is expired by <duration>`.
pub fn check_times(claims: &Claims, now: i64, leeway: i64) -> Result<(), String> {
    if let Some(exp) = claims.exp
        && now > exp.saturating_add(leeway)
    {
        return Err(format!(
            "token is expired by {}",
            go_duration(now.saturating_sub(exp))
        ));
    }
    if let Some(iat) = claims.iat
        && iat > now.saturating_add(leeway)
    {
        return Err("Token used before issued".into());
    }
    if let Some(nbf) = claims.nbf
        && nbf > now.saturating_add(leeway)
    {
        return Err("token is not valid yet".into());
    }
    Ok(())
}

/// Whole seconds the way Go's `time.Duration` prints them: `45s`, `1m30s`, `2h0m5s`.
fn go_duration(secs: i64) -> String {
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// Checks that a token's audience lets it call `local`, as Go kite does: the audience is a
/// kite path prefix (starting with `/`, as Go's `KiteFromString` requires); its username must equal ours, its environment and name must equal ours
/// unless empty; the other fields are not checked. The root audience `/` is accepted only when
/// `allow_root` is set (Go accepts it everywhere, so any token from the same Kontrol could call
/// any kite).
pub fn check_audience(aud: &str, local: &Kite, allow_root: bool) -> Result<(), String> {
    match aud {
        "" => return Err("token has no audience".into()),
        "/" if allow_root => return Ok(()),
        "/" => return Err("root audience (/) is not accepted".into()),
        _ => {}
    }
    let Some(path) = aud.strip_prefix('/') else {
        return Err(format!("invalid audience: {aud}"));
    };
    let fields: Vec<&str> = path.split('/').collect();
    if fields.len() > 7 {
        return Err(format!("invalid audience: {aud}"));
    }
    let field = |i: usize| fields.get(i).copied().unwrap_or("");
    if field(0) != local.username {
        return Err(format!(
            "audience: username {:?} not allowed ({aud})",
            field(0)
        ));
    }
    if !field(1).is_empty() && field(1) != local.environment {
        return Err(format!(
            "audience: environment {:?} not allowed ({aud})",
            field(1)
        ));
    }
    if !field(2).is_empty() && field(2) != local.name {
        return Err(format!("audience: kite {:?} not allowed ({aud})", field(2)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Kite {
        Kite {
            username: "devrim".into(),
            environment: "production".into(),
            name: "math".into(),
            version: "1.0.0".into(),
            ..Kite::default()
        }
    }

    #[test]
    fn claims_round_trip_in_go_layout() {
        let c = Claims {
            aud: "/devrim/production/math".into(),
            exp: Some(100),
            iss: "koding".into(),
            sub: "devrim".into(),
            ..Claims::default()
        };
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(
            text,
            r#"{"aud":"/devrim/production/math","exp":100,"iss":"koding","sub":"devrim"}"#
        );
        assert_eq!(serde_json::from_str::<Claims>(&text).unwrap(), c);
        let key: Claims =
            serde_json::from_str(r#"{"kontrolKey":"PEM","kontrolURL":"http://k","jti":"j"}"#)
                .unwrap();
        assert_eq!(
            (key.kontrol_key.as_str(), key.kontrol_url.as_str()),
            ("PEM", "http://k")
        );
    }

    #[test]
    fn times_with_leeway_and_go_wording() {
        let c = |exp, iat, nbf| Claims {
            exp,
            iat,
            nbf,
            ..Claims::default()
        };
        assert!(check_times(&c(Some(100), Some(50), Some(50)), 100, 0).is_ok());
        assert!(check_times(&c(Some(100), None, None), 104, 5).is_ok());
        assert_eq!(
            check_times(&c(Some(100), None, None), 190, 0).unwrap_err(),
            "token is expired by 1m30s"
        );
        assert_eq!(
            check_times(&c(Some(0), None, None), 7205, 0).unwrap_err(),
            "token is expired by 2h0m5s"
        );
        assert_eq!(
            check_times(&c(None, Some(200), None), 100, 5).unwrap_err(),
            "Token used before issued"
        );
        assert_eq!(
            check_times(&c(None, None, Some(200)), 100, 5).unwrap_err(),
            "token is not valid yet"
        );
        assert!(check_times(&c(None, None, Some(103)), 100, 5).is_ok());
    }

    #[test]
    fn audience_rule() {
        let ok = [
            "/devrim",
            "/devrim/production",
            "/devrim//math",
            "/devrim/production/math/9.9.9",
        ];
        for aud in ok {
            assert!(check_audience(aud, &me(), false).is_ok(), "{aud}");
        }
        let bad = [
            "",
            "/",
            "/other",
            "/devrim/staging",
            "/devrim/production/other",
            "//production/math",
            "/a/b/c/d/e/f/g/h",
            // Found by the credentials fuzz target: an audience without its leading slash
            // was read as if it had one; Go refuses it (not a kite path).
            "devrim",
            "devrim/production/math",
        ];
        for aud in bad {
            assert!(check_audience(aud, &me(), false).is_err(), "{aud}");
        }
        assert!(check_audience("/", &me(), true).is_ok());
        assert_eq!(
            check_audience("/other/production/math", &me(), false).unwrap_err(),
            "audience: username \"other\" not allowed (/other/production/math)"
        );
    }
}
