//! One operation against one node, and how its answer is classified.
//!
//! Classification (what the history records):
//!
//! | answer | outcome |
//! |---|---|
//! | 2xx | ok, with the decoded result |
//! | 404 `key_not_found` to a get / delete | ok: absent / deleted nothing |
//! | 409 `cas_mismatch` | ok: the condition failed, with the current value |
//! | any other 4xx | fail (definite) |
//! | 5xx `not_applied` | fail (definite) |
//! | 5xx `indeterminate` | unknown |
//! | 5xx with any other code | unknown for a write (conservative), fail for a read |
//! | connect refused / connect timeout (nothing sent) | fail |
//! | timeout or broken connection after sending | unknown |
//!
//! A 404 or 409 is the store's answer to an operation that took effect (a
//! delete of an absent key, a compare-and-swap whose condition failed are
//! applied through the log like any write), so it is an observation the
//! checker uses, not a failure.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::history::{OpKind, OpResult, Outcome};
use crate::http::{self, HttpError, Reply};

/// Timeouts of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect.
    pub connect: Duration,
    /// Sending and the whole answer.
    pub request: Duration,
}

/// The answer to one operation, classified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub outcome: Outcome,
    pub status: Option<u16>,
    pub served_by: Option<u64>,
}

/// Sends `kind` on `key` to the node at `addr` (one attempt, no retry)
/// and classifies the answer.
pub async fn execute(addr: SocketAddr, key: &str, kind: &OpKind, t: Timeouts) -> Answer {
    let (method, path, body) = request_of(key, kind);
    let result = http::request(
        addr,
        method,
        &path,
        body.as_deref().map(str::as_bytes),
        t.connect,
        t.request,
    )
    .await;
    classify(kind, result)
}

/// Method, path and JSON body of an operation.
pub fn request_of(key: &str, kind: &OpKind) -> (&'static str, String, Option<String>) {
    // The harness's keys are `[a-z0-9]+`: no percent-encoding needed.
    debug_assert!(key.bytes().all(|b| b.is_ascii_alphanumeric()));
    match kind {
        OpKind::Put { value } => (
            "PUT",
            format!("/v1/kv/{key}"),
            Some(serde_json::json!({ "value": value }).to_string()),
        ),
        OpKind::Get { consistency } => (
            "GET",
            format!("/v1/kv/{key}?consistency={}", consistency.as_str()),
            None,
        ),
        OpKind::Delete => ("DELETE", format!("/v1/kv/{key}"), None),
        OpKind::Cas { expected, new } => (
            "POST",
            format!("/v1/kv/{key}/cas"),
            Some(serde_json::json!({ "expected_value": expected, "value": new }).to_string()),
        ),
    }
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    error: ErrorDetail,
    #[serde(default)]
    current: Option<ValueBody>,
}

#[derive(Deserialize, Default)]
struct ErrorDetail {
    #[serde(default)]
    code: String,
    /// The cause of a 5xx (`no_leader`, `timeout`...), when the server
    /// names one.
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
struct ValueBody {
    value: String,
}

#[derive(Deserialize)]
struct DeleteBody {
    #[serde(default = "yes")]
    deleted: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct CasBody {
    succeeded: bool,
}

/// Classifies a transport result for `kind` (see the module table).
pub fn classify(kind: &OpKind, result: Result<Reply, HttpError>) -> Answer {
    let reply = match result {
        Ok(r) => r,
        Err(HttpError::NotSent(e)) => {
            return Answer {
                outcome: Outcome::Fail {
                    reason: format!("not sent: {e}"),
                },
                status: None,
                served_by: None,
            }
        }
        Err(HttpError::NoAnswer(e)) => {
            // For a read this constrains nothing either way: it is kept as
            // unknown so the counts show it, and the checker drops it.
            return Answer {
                outcome: Outcome::Unknown { reason: e },
                status: None,
                served_by: None,
            };
        }
    };
    let status = reply.status;
    let outcome = outcome_of(kind, &reply);
    Answer {
        outcome,
        status: Some(status),
        served_by: reply.node,
    }
}

fn outcome_of(kind: &OpKind, reply: &Reply) -> Outcome {
    let status = reply.status;
    let text = || String::from_utf8_lossy(&reply.body[..reply.body.len().min(200)]).into_owned();
    if (200..300).contains(&status) {
        return match decode_ok(kind, &reply.body) {
            Some(result) => Outcome::Ok { result },
            None if kind.is_write() => Outcome::Unknown {
                reason: format!("HTTP {status} with an undecodable body: {}", text()),
            },
            None => Outcome::Fail {
                reason: format!("HTTP {status} with an undecodable body: {}", text()),
            },
        };
    }
    let err: ErrorBody = serde_json::from_slice(&reply.body).unwrap_or_default();
    let code = err.error.code.as_str();
    let why = match &err.error.reason {
        Some(r) => format!("HTTP {status} {code} ({r})"),
        None => format!("HTTP {status} {code}"),
    };
    match (status, code, kind) {
        (404, "key_not_found", OpKind::Get { .. }) => Outcome::Ok {
            result: OpResult::Value { value: None },
        },
        (404, "key_not_found", OpKind::Delete) => Outcome::Ok {
            result: OpResult::Deleted { existed: false },
        },
        (409, "cas_mismatch", OpKind::Cas { .. }) => Outcome::Ok {
            result: OpResult::CasMismatch {
                current: err.current.map(|c| c.value),
            },
        },
        (400..=499, _, _) => Outcome::Fail { reason: why },
        (500..=599, "not_applied", _) => Outcome::Fail { reason: why },
        (500..=599, "indeterminate", _) => Outcome::Unknown { reason: why },
        _ if kind.is_write() => Outcome::Unknown { reason: why },
        _ => Outcome::Fail { reason: why },
    }
}

fn decode_ok(kind: &OpKind, body: &[u8]) -> Option<OpResult> {
    match kind {
        OpKind::Put { .. } => Some(OpResult::Put),
        OpKind::Get { .. } => {
            serde_json::from_slice::<ValueBody>(body)
                .ok()
                .map(|v| OpResult::Value {
                    value: Some(v.value),
                })
        }
        OpKind::Delete => serde_json::from_slice::<DeleteBody>(body)
            .ok()
            .map(|d| OpResult::Deleted { existed: d.deleted }),
        OpKind::Cas { .. } => match serde_json::from_slice::<CasBody>(body).ok()? {
            CasBody { succeeded: true } => Some(OpResult::Swapped),
            // A 2xx saying it did not swap carries no current value; the
            // server answers a failed condition with 409, so this would be
            // a contract change: not decodable here.
            CasBody { succeeded: false } => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::ReadConsistency;

    fn reply(status: u16, body: &str) -> Result<Reply, HttpError> {
        Ok(Reply {
            status,
            node: Some(2),
            body: body.as_bytes().to_vec(),
        })
    }

    fn put() -> OpKind {
        OpKind::Put { value: "v".into() }
    }

    fn get() -> OpKind {
        OpKind::Get {
            consistency: ReadConsistency::Lease,
        }
    }

    fn err(status: u16, code: &str) -> Result<Reply, HttpError> {
        reply(
            status,
            &format!(r#"{{"error":{{"code":"{code}","reason":"x","leader_hint":null}}}}"#),
        )
    }

    #[test]
    fn answers_are_classified_as_the_table_says() {
        let a = classify(&put(), reply(200, r#"{"revision":4}"#));
        assert_eq!(
            a,
            Answer {
                outcome: Outcome::Ok {
                    result: OpResult::Put
                },
                status: Some(200),
                served_by: Some(2)
            }
        );
        let a = classify(&get(), reply(200, r#"{"key":"k","value":"w"}"#));
        assert_eq!(
            a.outcome,
            Outcome::Ok {
                result: OpResult::Value {
                    value: Some("w".into())
                }
            }
        );
        let name = |k: &OpKind, r| classify(k, r).outcome.name();
        assert_eq!(name(&get(), err(404, "key_not_found")), "ok");
        assert_eq!(name(&OpKind::Delete, err(404, "key_not_found")), "ok");
        assert_eq!(name(&put(), err(400, "bad_request")), "fail");
        assert_eq!(name(&put(), err(503, "not_applied")), "fail");
        assert_eq!(name(&put(), err(503, "indeterminate")), "unknown");
        assert_eq!(name(&put(), err(504, "timeout")), "unknown");
        assert_eq!(name(&put(), err(503, "no_leader")), "unknown");
        assert_eq!(name(&get(), err(503, "no_leader")), "fail");
        assert_eq!(name(&get(), err(503, "indeterminate")), "unknown");
        assert_eq!(
            classify(&put(), err(503, "not_applied")).outcome,
            Outcome::Fail {
                reason: "HTTP 503 not_applied (x)".into()
            }
        );
        assert_eq!(
            name(&put(), Err(HttpError::NotSent("refused".into()))),
            "fail"
        );
        assert_eq!(
            name(&put(), Err(HttpError::NoAnswer("timeout".into()))),
            "unknown"
        );
        assert_eq!(name(&put(), reply(200, "")), "ok");
        assert_eq!(name(&OpKind::Delete, reply(200, "not json")), "unknown");
    }

    #[test]
    fn cas_mismatch_carries_the_current_value() {
        let cas = OpKind::Cas {
            expected: Some("a".into()),
            new: None,
        };
        let body = r#"{"error":{"code":"cas_mismatch","message":"m","leader_hint":null},"current":{"key":"k","value":"b","mod_revision":3}}"#;
        assert_eq!(
            classify(&cas, reply(409, body)).outcome,
            Outcome::Ok {
                result: OpResult::CasMismatch {
                    current: Some("b".into())
                }
            }
        );
        let absent = r#"{"error":{"code":"cas_mismatch"},"current":null}"#;
        assert_eq!(
            classify(&cas, reply(409, absent)).outcome,
            Outcome::Ok {
                result: OpResult::CasMismatch { current: None }
            }
        );
        assert_eq!(
            classify(&cas, reply(200, r#"{"succeeded":true,"revision":9}"#)).outcome,
            Outcome::Ok {
                result: OpResult::Swapped
            }
        );
    }

    #[test]
    fn requests_follow_the_api() {
        let (m, p, b) = request_of(
            "k1",
            &OpKind::Cas {
                expected: None,
                new: Some("v".into()),
            },
        );
        assert_eq!((m, p.as_str()), ("POST", "/v1/kv/k1/cas"));
        let body: serde_json::Value = serde_json::from_str(&b.unwrap()).unwrap();
        assert_eq!(body["expected_value"], serde_json::Value::Null);
        assert_eq!(body["value"], "v");
        let (m, p, b) = request_of("k2", &get());
        assert_eq!(
            (m, p.as_str(), b),
            ("GET", "/v1/kv/k2?consistency=lease", None)
        );
    }
}
