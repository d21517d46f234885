//! Decoding of Kubernetes protobuf request bodies for the few built-in kinds that recent
//! kubectl's `create` generators send that way (Namespace, ConfigMap, Secret, ServiceAccount).
//! Only the fields those commands set are read; the result is the object's JSON form.

use base64::Engine;
use serde_json::{Map, Value, json};

/// Why a protobuf body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("not a Kubernetes protobuf envelope")]
    NoEnvelope,
    #[error("truncated or malformed protobuf")]
    Malformed,
    #[error("protobuf bodies are only accepted for Namespace, ConfigMap, Secret and ServiceAccount, not {0}")]
    Unsupported(String),
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, ProtoError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or(ProtoError::Malformed)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(ProtoError::Malformed)
}

fn fields(buf: &[u8]) -> Result<Vec<(u64, Field<'_>)>, ProtoError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        let field = match key & 7 {
            0 => Field::Varint(varint(buf, &mut pos)?),
            1 => {
                pos += 8;
                Field::Fixed
            }
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).map_err(|_| ProtoError::Malformed)?;
                let end = pos
                    .checked_add(len)
                    .filter(|e| *e <= buf.len())
                    .ok_or(ProtoError::Malformed)?;
                let b = &buf[pos..end];
                pos = end;
                Field::Bytes(b)
            }
            5 => {
                pos += 4;
                Field::Fixed
            }
            _ => return Err(ProtoError::Malformed),
        };
        out.push((key >> 3, field));
    }
    if pos > buf.len() {
        return Err(ProtoError::Malformed);
    }
    Ok(out)
}

fn text(b: &[u8]) -> Result<String, ProtoError> {
    String::from_utf8(b.to_vec()).map_err(|_| ProtoError::Malformed)
}

/// A `map<string, string|bytes>` entry; bytes values are base64-encoded as in JSON.
fn map_entry(b: &[u8], bytes_value: bool) -> Result<(String, Value), ProtoError> {
    let mut key = String::new();
    let mut value = String::new();
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(k)) => key = text(k)?,
            (2, Field::Bytes(v)) if bytes_value => {
                value = base64::engine::general_purpose::STANDARD.encode(v)
            }
            (2, Field::Bytes(v)) => value = text(v)?,
            _ => {}
        }
    }
    Ok((key, Value::String(value)))
}

fn insert_entry(
    obj: &mut Map<String, Value>,
    field: &str,
    b: &[u8],
    bytes_value: bool,
) -> Result<(), ProtoError> {
    let (k, v) = map_entry(b, bytes_value)?;
    obj.entry(field).or_insert_with(|| json!({}))[k] = v;
    Ok(())
}

fn push(obj: &mut Map<String, Value>, field: &str, v: Value) {
    if let Some(a) = obj.entry(field).or_insert_with(|| json!([])).as_array_mut() {
        a.push(v);
    }
}

fn object_meta(b: &[u8]) -> Result<Value, ProtoError> {
    let mut m = Map::new();
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(v)) => drop(m.insert("name".into(), Value::String(text(v)?))),
            (2, Field::Bytes(v)) => drop(m.insert("generateName".into(), Value::String(text(v)?))),
            (3, Field::Bytes(v)) => drop(m.insert("namespace".into(), Value::String(text(v)?))),
            (11, Field::Bytes(v)) => insert_entry(&mut m, "labels", v, false)?,
            (12, Field::Bytes(v)) => insert_entry(&mut m, "annotations", v, false)?,
            (14, Field::Bytes(v)) => push(&mut m, "finalizers", Value::String(text(v)?)),
            _ => {}
        }
    }
    Ok(Value::Object(m))
}

fn name_ref(b: &[u8]) -> Result<Value, ProtoError> {
    let mut m = Map::new();
    for (n, f) in fields(b)? {
        if let (1, Field::Bytes(v)) = (n, f) {
            m.insert("name".into(), Value::String(text(v)?));
        }
    }
    Ok(Value::Object(m))
}

/// Decode a `k8s\0`-prefixed protobuf body to the object's JSON form.
pub fn decode(body: &[u8]) -> Result<Value, ProtoError> {
    let rest = body.strip_prefix(b"k8s\0").ok_or(ProtoError::NoEnvelope)?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (n, f) in fields(rest)? {
        match (n, f) {
            (1, Field::Bytes(tm)) => {
                for (tn, tf) in fields(tm)? {
                    match (tn, tf) {
                        (1, Field::Bytes(v)) => api_version = text(v)?,
                        (2, Field::Bytes(v)) => kind = text(v)?,
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(r)) => raw = r,
            _ => {}
        }
    }
    let mut obj = Map::new();
    obj.insert("apiVersion".into(), Value::String(api_version.clone()));
    obj.insert("kind".into(), Value::String(kind.clone()));
    if api_version != "v1"
        || !matches!(
            kind.as_str(),
            "Namespace" | "ConfigMap" | "Secret" | "ServiceAccount"
        )
    {
        return Err(ProtoError::Unsupported(format!("{api_version}/{kind}")));
    }
    for (n, f) in fields(raw)? {
        match (kind.as_str(), n, f) {
            (_, 1, Field::Bytes(v)) => drop(obj.insert("metadata".into(), object_meta(v)?)),
            ("Namespace", 2, Field::Bytes(spec)) => {
                let mut s = Map::new();
                for (sn, sf) in fields(spec)? {
                    if let (1, Field::Bytes(v)) = (sn, sf) {
                        push(&mut s, "finalizers", Value::String(text(v)?));
                    }
                }
                obj.insert("spec".into(), Value::Object(s));
            }
            ("ConfigMap", 2, Field::Bytes(v)) => insert_entry(&mut obj, "data", v, false)?,
            ("ConfigMap", 3, Field::Bytes(v)) => insert_entry(&mut obj, "binaryData", v, true)?,
            ("ConfigMap", 4, Field::Varint(b)) | ("Secret", 5, Field::Varint(b)) => {
                obj.insert("immutable".into(), Value::Bool(b != 0));
            }
            ("Secret", 2, Field::Bytes(v)) => insert_entry(&mut obj, "data", v, true)?,
            ("Secret", 3, Field::Bytes(v)) => drop(obj.insert("type".into(), Value::String(text(v)?))),
            ("Secret", 4, Field::Bytes(v)) => insert_entry(&mut obj, "stringData", v, false)?,
            ("ServiceAccount", 3, Field::Bytes(v)) => push(&mut obj, "imagePullSecrets", name_ref(v)?),
            ("ServiceAccount", 4, Field::Varint(b)) => {
                obj.insert("automountServiceAccountToken".into(), Value::Bool(b != 0));
            }
            _ => {}
        }
    }
    Ok(Value::Object(obj))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(field: u8, b: &[u8]) -> Vec<u8> {
        let mut out = vec![(field << 3) | 2, b.len() as u8];
        out.extend_from_slice(b);
        out
    }

    #[test]
    fn decodes_a_configmap_envelope() {
        let meta = [
            bytes(1, b"cm"),
            bytes(3, b"ns"),
            bytes(11, &[bytes(1, b"a"), bytes(2, b"b")].concat()),
        ]
        .concat();
        let raw = [
            bytes(1, &meta),
            bytes(2, &[bytes(1, b"k"), bytes(2, b"v")].concat()),
        ]
        .concat();
        let type_meta = [bytes(1, b"v1"), bytes(2, b"ConfigMap")].concat();
        let body = [b"k8s\0".to_vec(), bytes(1, &type_meta), bytes(2, &raw)].concat();
        let obj = decode(&body).unwrap();
        assert_eq!(
            obj,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "cm", "namespace": "ns", "labels": {"a": "b"}}, "data": {"k": "v"}})
        );
    }

    #[test]
    fn other_kinds_are_refused() {
        let type_meta = [bytes(1, b"v1"), bytes(2, b"Pod")].concat();
        let body = [b"k8s\0".to_vec(), bytes(1, &type_meta)].concat();
        assert!(matches!(decode(&body), Err(ProtoError::Unsupported(_))));
    }
}
