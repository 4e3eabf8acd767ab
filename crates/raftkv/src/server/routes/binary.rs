//! Binary-safe keys and values on a JSON API.
//!
//! Keys and values are bytes in the store. In JSON a byte string travels
//! in one of two fields:
//!
//! - `name`: a JSON string, when the bytes are valid UTF-8 (what most keys
//!   and values are, and what every client before this one sent);
//! - `name_b64`: standard base64 with padding (RFC 4648 §4, etcd's choice
//!   for its JSON gateway), for anything.
//!
//! **Requests** may use either field (exactly one). **Responses** use
//! `name` when the bytes are UTF-8 and `name_b64` otherwise, so a value is
//! never mangled: a client that only knows `value` finds the field missing
//! instead of reading replacement characters.
//!
//! Raw bodies skip JSON altogether: `Content-Type: application/octet-stream`
//! on a `PUT` stores the body's bytes as the value, and `Accept:
//! application/octet-stream` on a key `GET` answers the value's bytes (its
//! revisions then travel in the `x-raftkv-*-revision` headers).

use axum::http::{header, HeaderMap};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use raftkv_state::KeyValue;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::server::error::ApiError;

/// The raw media type.
pub const OCTET_STREAM: &str = "application/octet-stream";

/// Header of a raw `GET`'s answer: the key's `create_revision`.
pub const CREATE_REVISION_HEADER: &str = "x-raftkv-create-revision";
/// Header of a raw `GET`'s answer: the key's `mod_revision`.
pub const MOD_REVISION_HEADER: &str = "x-raftkv-mod-revision";
/// Header of a raw `GET`'s answer: the key's `version`.
pub const VERSION_HEADER: &str = "x-raftkv-version";
/// The headers a raw `GET` answers with besides the body (a follower relays
/// them from the leader).
pub const RAW_HEADERS: [&str; 3] = [CREATE_REVISION_HEADER, MOD_REVISION_HEADER, VERSION_HEADER];

/// Base64 text (standard alphabet, padded).
pub fn encode_b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Decodes the `field` of a request; a 400 naming the field if it is not
/// standard padded base64.
pub fn decode_b64(field: &str, text: &str) -> Result<Bytes, ApiError> {
    STANDARD.decode(text).map(Bytes::from).map_err(|e| {
        ApiError::BadRequest(format!(
            "{field} is not valid base64 (standard alphabet, with padding): {e}"
        ))
    })
}

/// The bytes of a request field given as `name` (a string) or `name_b64`
/// (base64): exactly one of them.
pub fn one_of(
    name: &str,
    text: Option<String>,
    b64: Option<String>,
) -> Result<Option<Bytes>, ApiError> {
    match (text, b64) {
        (Some(_), Some(_)) => Err(ApiError::BadRequest(format!(
            "give {name} or {name}_b64, not both"
        ))),
        (Some(t), None) => Ok(Some(Bytes::from(t))),
        (None, Some(b)) => decode_b64(&format!("{name}_b64"), &b).map(Some),
        (None, None) => Ok(None),
    }
}

/// Writes `bytes` as `name` (UTF-8) or `name_b64` (anything else).
pub fn serialize_bytes_field<M: SerializeMap>(
    map: &mut M,
    name: &'static str,
    name_b64: &'static str,
    bytes: &[u8],
) -> Result<(), M::Error> {
    match std::str::from_utf8(bytes) {
        Ok(s) => map.serialize_entry(name, s),
        Err(_) => map.serialize_entry(name_b64, &encode_b64(bytes)),
    }
}

/// A key-value pair as JSON: `key`/`key_b64`, `value`/`value_b64` (absent
/// with `keys_only`), `create_revision`, `mod_revision`, `version`.
#[derive(Debug)]
pub struct KvJson {
    pub key: Bytes,
    /// `None`: a keys-only listing.
    pub value: Option<Bytes>,
    pub create_revision: u64,
    pub mod_revision: u64,
    pub version: u64,
}

impl KvJson {
    /// The pair without its value.
    pub fn key_only(kv: &KeyValue) -> KvJson {
        KvJson {
            value: None,
            ..KvJson::from(kv)
        }
    }
}

impl From<&KeyValue> for KvJson {
    fn from(kv: &KeyValue) -> Self {
        KvJson {
            key: kv.key.clone(),
            value: Some(kv.value.clone()),
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
        }
    }
}

impl Serialize for KvJson {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        serialize_bytes_field(&mut map, "key", "key_b64", &self.key)?;
        if let Some(value) = &self.value {
            serialize_bytes_field(&mut map, "value", "value_b64", value)?;
        }
        map.serialize_entry("create_revision", &self.create_revision)?;
        map.serialize_entry("mod_revision", &self.mod_revision)?;
        map.serialize_entry("version", &self.version)?;
        map.end()
    }
}

/// The media type of a request's body, without parameters, lowercased.
fn media_type(value: &[u8]) -> String {
    let text = String::from_utf8_lossy(value);
    text.split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The request's body is raw bytes (`Content-Type:
/// application/octet-stream`), not JSON.
pub fn is_raw_body(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| is_raw_content_type(v.as_bytes()))
}

/// A `Content-Type` value naming raw bytes.
pub fn is_raw_content_type(value: &[u8]) -> bool {
    media_type(value) == OCTET_STREAM
}

/// The client asks for the raw value: its `Accept` lists
/// `application/octet-stream` with a non-zero quality. (Ranking against
/// JSON is not attempted: a client that names the raw type wants it.)
pub fn wants_raw(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .any(|v| accepts_raw(v.as_bytes()))
}

/// An `Accept` value listing the raw type (see [`wants_raw`]).
pub fn accepts_raw(value: &[u8]) -> bool {
    {
        String::from_utf8_lossy(value).split(',').any(|range| {
            let mut parts = range.split(';');
            let ty = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let refused = parts.any(|p| {
                let p = p.trim().replace(' ', "");
                p == "q=0" || p == "q=0.0" || p == "q=0.00" || p == "q=0.000"
            });
            ty == OCTET_STREAM && !refused
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn kv(key: &[u8], value: &[u8]) -> KeyValue {
        KeyValue {
            key: Bytes::copy_from_slice(key),
            value: Bytes::copy_from_slice(value),
            create_revision: 3,
            mod_revision: 5,
            version: 2,
        }
    }

    #[test]
    fn utf8_fields_are_strings_and_others_base64() {
        let text = serde_json::to_string(&KvJson::from(&kv(b"a/b", b"hi"))).unwrap();
        assert_eq!(
            text,
            r#"{"key":"a/b","value":"hi","create_revision":3,"mod_revision":5,"version":2}"#
        );
        let text = serde_json::to_string(&KvJson::from(&kv(b"k\xff", b"\x00\xfe"))).unwrap();
        assert_eq!(
            text,
            r#"{"key_b64":"a/8=","value_b64":"AP4=","create_revision":3,"mod_revision":5,"version":2}"#
        );
        let text = serde_json::to_string(&KvJson::key_only(&kv(b"k", b"v"))).unwrap();
        assert_eq!(
            text,
            r#"{"key":"k","create_revision":3,"mod_revision":5,"version":2}"#
        );
    }

    #[test]
    fn one_of_takes_exactly_one_field() {
        assert_eq!(
            one_of("value", Some("x".into()), None).unwrap(),
            Some(Bytes::from("x"))
        );
        assert_eq!(
            one_of("value", None, Some("AP4=".into())).unwrap(),
            Some(Bytes::from_static(b"\x00\xfe"))
        );
        assert_eq!(one_of("value", None, None).unwrap(), None);
        let e = one_of("value", Some("x".into()), Some("eA==".into())).unwrap_err();
        assert_eq!(e.to_string(), "give value or value_b64, not both");
        let e = one_of("value", None, Some("AP4".into())).unwrap_err();
        assert!(
            e.to_string().starts_with("value_b64 is not valid base64"),
            "{e}"
        );
    }

    #[test]
    fn raw_media_types_are_recognized() {
        let mut h = HeaderMap::new();
        assert!(!is_raw_body(&h) && !wants_raw(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Application/Octet-Stream; charset=binary"),
        );
        assert!(is_raw_body(&h));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, application/octet-stream;q=0.5"),
        );
        assert!(wants_raw(&h));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/octet-stream; q=0"),
        );
        assert!(!wants_raw(&h));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        assert!(!wants_raw(&h));
    }
}
