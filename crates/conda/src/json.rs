//! Canonical JSON for `conda-meta` records: object keys sorted at every depth, no
//! insignificant whitespace, whatever `serde_json::Value`'s map order is in this build (it
//! follows insertion order when any crate enables `preserve_order`). The same bytes as
//! `nbrt_oci::json::to_canonical_vec`, which this crate does not depend on (the static
//! `nbrt-conda` stays small).

use serde::Serialize;
use serde_json::Value;

use crate::error::{conda, Result};

pub fn to_canonical_vec<T: Serialize>(value: &T, what: &str) -> Result<Vec<u8>> {
    let value = serde_json::to_value(value).map_err(|e| conda(format!("{what}: {e}")))?;
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
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(Value::String(s.to_string()).to_string().as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_keys_at_every_depth() {
        let doc = serde_json::json!({"z": 1, "a": {"y": [ {"b": 1, "a": "é\"\n"} ], "x": null}});
        let text = String::from_utf8(to_canonical_vec(&doc, "test").unwrap()).unwrap();
        assert_eq!(text, r#"{"a":{"x":null,"y":[{"a":"é\"\n","b":1}]},"z":1}"#);
    }
}
