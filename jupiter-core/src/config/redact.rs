//! The effective configuration as JSON for `/config`, with secrets redacted.

use serde_json::{Map, Value as Json, json};

use super::tree::{Node, Value, normalize};

pub(crate) const REDACTED: &str = "<redacted>";

/// Key words that mark a value as secret, matched against the normalized key.
const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "credential",
    "private-key",
    "api-key",
    "apikey",
    "access-key",
    "auth",
];

pub(crate) fn is_secret_key(key: &str) -> bool {
    let key = normalize(key);
    SECRET_WORDS.iter().any(|w| key.contains(w))
}

/// `scheme://user:password@host` → `scheme://user:<redacted>@host`; `None` when there is no
/// password in `text`.
pub fn redact_url(text: &str) -> Option<String> {
    let scheme_end = text.find("://")? + 3;
    let rest = &text[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let at = rest[..authority_end].rfind('@')?;
    let userinfo = &rest[..at];
    let user = userinfo.split(':').next().unwrap_or("");
    let redacted = if userinfo.contains(':') || user.is_empty() {
        format!("{user}:{REDACTED}")
    } else {
        REDACTED.to_owned()
    };
    Some(format!("{}{redacted}{}", &text[..scheme_end], &rest[at..]))
}

pub(crate) fn to_json(node: &Node, sources: bool) -> Json {
    convert(node, false, sources)
}

fn convert(node: &Node, secret: bool, sources: bool) -> Json {
    let value = match &node.value {
        Value::Table(t) => {
            let map: Map<String, Json> = t
                .iter()
                .map(|(k, v)| {
                    let key = if v.loose_key { normalize(k) } else { k.clone() };
                    (key, convert(v, secret || is_secret_key(k), sources))
                })
                .collect();
            return Json::Object(map);
        }
        Value::Array(items) => {
            return Json::Array(items.iter().map(|n| convert(n, secret, sources)).collect());
        }
        _ if secret => Json::String(REDACTED.to_owned()),
        Value::String { s, .. } => Json::String(redact_url(s).unwrap_or_else(|| s.clone())),
        Value::Integer(i) => json!(i),
        Value::Float(x) => json!(x),
        Value::Boolean(b) => json!(b),
        Value::Datetime(d) => json!(d),
    };
    if sources {
        json!({ "value": value, "from": node.origin.to_string() })
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys() {
        for k in [
            "password",
            "redis-password",
            "AUTH_TOKEN",
            "client_secret",
            "api-key",
        ] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in ["pool-size", "addr", "key-prefix", "timeout"] {
            assert!(!is_secret_key(k), "{k}");
        }
    }

    #[test]
    fn urls_lose_their_passwords() {
        assert_eq!(
            redact_url("redis://u:p@h:1/0").as_deref(),
            Some("redis://u:<redacted>@h:1/0")
        );
        assert_eq!(
            redact_url("redis://:p@h").as_deref(),
            Some("redis://:<redacted>@h")
        );
        assert_eq!(
            redact_url("https://tok@h/x@y").as_deref(),
            Some("https://<redacted>@h/x@y")
        );
        assert_eq!(redact_url("redis://h:1"), None);
        assert_eq!(redact_url("plain"), None);
    }
}
