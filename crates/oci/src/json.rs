//! Canonical JSON: object keys sorted at every depth, no insignificant whitespace.
//!
//! Digests cover bytes, so every document we write must serialize the same way on every run.
//! Sorting is done here, while writing, instead of relying on `serde_json::Value`'s map order,
//! which flips to insertion order as soon as any crate in the build enables `preserve_order`.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::error::{OciError, Result};

/// Largest JSON document (manifest, config, index) we accept from anywhere.
pub const MAX_JSON_SIZE: u64 = 8 << 20;

pub fn to_canonical_vec<T: Serialize>(value: &T, what: &str) -> Result<Vec<u8>> {
    let value = serde_json::to_value(value).map_err(|source| OciError::Json {
        what: what.to_string(),
        source,
    })?;
    let mut out = Vec::new();
    write_value(&value, &mut out);
    Ok(out)
}

fn write_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(k, out);
                out.push(b':');
                write_value(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(v, out);
            }
            out.push(b']');
        }
        Value::String(s) => write_string(s, out),
        // Numbers, booleans and null have one serde_json spelling each.
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    // serde_json's string escaping is deterministic; reuse it.
    out.extend_from_slice(Value::String(s.to_string()).to_string().as_bytes());
}

/// Parse a JSON document after checking its size.
pub fn parse_bounded<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    if bytes.len() as u64 > MAX_JSON_SIZE {
        return Err(OciError::TooLarge {
            what: what.to_string(),
            size: bytes.len() as u64,
            limit: MAX_JSON_SIZE,
        });
    }
    serde_json::from_slice(bytes).map_err(|source| OciError::Json {
        what: what.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn sorts_keys_at_every_depth() {
        let mut labels = HashMap::new();
        for i in 0..20 {
            labels.insert(format!("k{i:02}"), i);
        }
        let doc = serde_json::json!({"z": 1, "a": {"y": [ {"b": 1, "a": "é\"\n"} ], "x": null}, "labels": labels});
        let bytes = to_canonical_vec(&doc, "test").unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with(
            r#"{"a":{"x":null,"y":[{"a":"é\"\n","b":1}]},"labels":{"k00":0,"k01":1,"#
        ));
        assert!(text.ends_with(r#""k19":19},"z":1}"#));
    }
}
