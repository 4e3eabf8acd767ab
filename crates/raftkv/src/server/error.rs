//! API errors and how each one becomes an HTTP response.
//!
//! # The error contract
//!
//! Every error a client can see is one [`ApiError`], rendered as
//!
//! ```json
//! {"error": {"code": "...", "reason": "..." | null, "message": "...", "leader_hint": 2 | null}}
//! ```
//!
//! `code` is the machine-readable part; `message` is for people.
//!
//! **4xx** answers are definite by nature: the request was refused before
//! it could change anything (`bad_request` 400/405, `key_not_found` 404,
//! `not_found` 404, `too_large` 413), or it was applied and the answer says
//! exactly what happened (`cas_mismatch` 409; `key_not_found` for a delete
//! of an absent key). `reason` is `null`.
//!
//! **5xx** answers have one of two codes, which say what the client may
//! assume about its request:
//!
//! - `not_applied`: the request certainly had no effect. Safe to retry,
//!   here or on another node, whatever the request.
//! - `indeterminate`: the request may or may not have been applied (e.g. a
//!   write timed out after the leader accepted it, a forwarded write's
//!   answer was lost, the leader stepped down before the entry's fate was
//!   known). Retry only if the request is idempotent or carries a
//!   `client_id`/`seq` session; otherwise read to find out.
//!
//! and a `reason` naming the cause ([`Reason`]): `no_leader`, `not_leader`,
//! `leader_changed`, `transfer_in_progress`, `change_in_progress`,
//! `learner_lagging`, `catching_up`, `backpressure`, `timeout`,
//! `forward_failed`, `shutting_down`, `fatal`, `internal`. The status is
//! 504 for `timeout`, 500 for `fatal` and `internal`, 503 otherwise.
//! Reads (`GET`) never change anything, so their failures are always
//! `not_applied`.
//!
//! Every response, success or error, carries `x-raftkv-node: <id>` (the
//! node that answered the client, also when it relayed the leader's answer)
//! and `x-request-id` (the request's own, else one the node generated; it is
//! passed along when the request is forwarded). See `routes/mod.rs`.
//!
//! The mapping from the runtime's typed errors lives here, so every route
//! maps them the same way.

use std::fmt;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use raft_core::NodeId;
use raft_runtime::{MembershipError, NodeError, ProposeError, ReadError, TransferError};
use raftkv_state::CommandError;
use serde_json::json;

/// The code of a 5xx answer whose request certainly had no effect.
pub const NOT_APPLIED: &str = "not_applied";
/// The code of a 5xx answer whose request may or may not have been applied.
pub const INDETERMINATE: &str = "indeterminate";

/// The specific cause of a 5xx answer (its `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No leader is known (an election is under way, or no majority of the
    /// nodes is running); retry shortly.
    NoLeader,
    /// This node does not lead and will not forward (the request was
    /// already forwarded once, or the leader's address is unknown here);
    /// retry at `leader_hint`.
    NotLeader,
    /// Leadership changed while the request was in flight: with
    /// `not_applied`, the entry was replaced by another leader's entry (or a
    /// read lost its read point); with `indeterminate`, this node learned
    /// the entry's index from a snapshot and cannot tell which entry won.
    LeaderChanged,
    /// The leader is handing leadership over; retry at `leader_hint`.
    TransferInProgress,
    /// Another membership change is still in progress; retry shortly.
    ChangeInProgress,
    /// The learner to promote is too far behind; retry once it caught up.
    LearnerLagging,
    /// `/readyz`: this node has not applied everything committed yet.
    CatchingUp,
    /// Too many requests are pending; retry later.
    Backpressure,
    /// No answer in time.
    Timeout,
    /// Forwarding to the leader failed.
    ForwardFailed,
    /// The node is shutting down.
    ShuttingDown,
    /// The node stopped on a fatal (storage or state machine) error.
    Fatal,
    /// A bug: an answer of the wrong kind, an undecodable command.
    Internal,
}

impl Reason {
    /// The `reason` string of the contract.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NoLeader => "no_leader",
            Reason::NotLeader => "not_leader",
            Reason::LeaderChanged => "leader_changed",
            Reason::TransferInProgress => "transfer_in_progress",
            Reason::ChangeInProgress => "change_in_progress",
            Reason::LearnerLagging => "learner_lagging",
            Reason::CatchingUp => "catching_up",
            Reason::Backpressure => "backpressure",
            Reason::Timeout => "timeout",
            Reason::ForwardFailed => "forward_failed",
            Reason::ShuttingDown => "shutting_down",
            Reason::Fatal => "fatal",
            Reason::Internal => "internal",
        }
    }

    /// The HTTP status of a failure with this reason.
    pub fn status(self) -> StatusCode {
        match self {
            Reason::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Reason::Fatal | Reason::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// The details of a 5xx answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reason: Reason,
    pub message: String,
    pub leader_hint: Option<NodeId>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// An error answered to a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 400 `bad_request`: malformed JSON, bad or unknown parameters or
    /// fields.
    #[error("{0}")]
    BadRequest(String),
    /// 404 `key_not_found`: the key does not exist.
    #[error("key not found")]
    KeyNotFound,
    /// 404 `not_found`: no such route.
    #[error("{0}")]
    NotFound(String),
    /// 405 `bad_request`: the route exists but not with this method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 413 `too_large`: key, value or body over its limit.
    #[error("{0}")]
    TooLarge(String),
    /// 5xx `not_applied`: the request certainly had no effect; safe to
    /// retry.
    #[error("{0}")]
    NotApplied(Failure),
    /// 5xx `indeterminate`: the request may or may not have been applied.
    #[error("{0}")]
    Indeterminate(Failure),
}

impl ApiError {
    /// `not_applied` with `reason`.
    pub fn not_applied(reason: Reason, message: impl Into<String>) -> Self {
        ApiError::NotApplied(Failure {
            reason,
            message: message.into(),
            leader_hint: None,
        })
    }

    /// `indeterminate` with `reason`.
    pub fn indeterminate(reason: Reason, message: impl Into<String>) -> Self {
        ApiError::Indeterminate(Failure {
            reason,
            message: message.into(),
            leader_hint: None,
        })
    }

    /// `not_applied`/`no_leader`.
    pub fn no_leader() -> Self {
        ApiError::not_applied(Reason::NoLeader, "no leader is known; retry shortly")
    }

    /// `not_applied`/`not_leader` with the hint, for a request this node
    /// will not forward.
    pub fn not_leader(hint: NodeId, why: &str) -> Self {
        ApiError::not_applied(
            Reason::NotLeader,
            format!("this node is not the leader; node {hint} leads ({why})"),
        )
        .with_hint(Some(hint))
    }

    /// The same error naming `hint` as the leader (5xx only; a 4xx has no
    /// hint).
    pub fn with_hint(mut self, hint: Option<NodeId>) -> Self {
        if let ApiError::NotApplied(f) | ApiError::Indeterminate(f) = &mut self {
            f.leader_hint = hint;
        }
        self
    }

    /// The error of a request part of which was already applied (a member
    /// change whose address step committed): a `not_applied` failure of a
    /// later step becomes `indeterminate`, since the request as a whole did
    /// have an effect.
    pub fn after_partial_effect(self) -> Self {
        match self {
            ApiError::NotApplied(f) => ApiError::Indeterminate(f),
            other => other,
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::KeyNotFound | ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotApplied(f) | ApiError::Indeterminate(f) => f.reason.status(),
        }
    }

    /// The machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) | ApiError::MethodNotAllowed(_) => "bad_request",
            ApiError::KeyNotFound => "key_not_found",
            ApiError::NotFound(_) => "not_found",
            ApiError::TooLarge(_) => "too_large",
            ApiError::NotApplied(_) => NOT_APPLIED,
            ApiError::Indeterminate(_) => INDETERMINATE,
        }
    }

    /// The specific cause of a 5xx answer; `None` for a 4xx.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            ApiError::NotApplied(f) | ApiError::Indeterminate(f) => Some(f.reason),
            _ => None,
        }
    }

    pub fn leader_hint(&self) -> Option<NodeId> {
        match self {
            ApiError::NotApplied(f) | ApiError::Indeterminate(f) => f.leader_hint,
            _ => None,
        }
    }

    /// The `{"code", "reason", "message", "leader_hint"}` object.
    pub fn body(&self) -> serde_json::Value {
        json!({
            "code": self.code(),
            "reason": self.reason().map(Reason::as_str),
            "message": self.to_string(),
            "leader_hint": self.leader_hint(),
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status(), Json(json!({ "error": self.body() }))).into_response()
    }
}

/// A command refused by its checks (before proposing) or by the state
/// machine (applied as a no-op): nothing changed either way.
impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::KeyTooLarge { .. }
            | CommandError::ValueTooLarge { .. }
            | CommandError::RangeBoundTooLarge { .. } => ApiError::TooLarge(e.to_string()),
            CommandError::EmptyKey
            | CommandError::ListLimitOutOfRange { .. }
            | CommandError::StaleSequence { .. } => ApiError::BadRequest(e.to_string()),
            // The server encodes every command itself: an undecodable one is
            // a version mix-up between replicas, not the client's fault.
            CommandError::Undecodable(_) => ApiError::not_applied(Reason::Internal, e.to_string()),
        }
    }
}

impl From<crate::server::state::KvReadError> for ApiError {
    fn from(e: crate::server::state::KvReadError) -> Self {
        use crate::server::state::KvReadError;
        match e {
            KvReadError::Rejected(c) => c.into(),
            // A read changes nothing: certainly not applied.
            KvReadError::Engine(_) => ApiError::not_applied(Reason::Fatal, e.to_string()),
        }
    }
}

/// Maps a proposal failure (other than `NotLeader`, which the caller turns
/// into a forward).
///
/// Definite: `NotLeader`, `TransferInProgress`, `Backpressure` and
/// `TooLarge` are refusals before anything was appended; `Dropped` means
/// another entry was applied at the proposal's index (or the index was
/// truncated from the log, which only happens to uncommitted entries).
/// Indeterminate: `Timeout` (the proposal may still commit), the runtime's
/// `Indeterminate` (a snapshot covered the index), `ShuttingDown` and
/// `Fatal` (the proposal may have been appended before the node stopped).
impl From<ProposeError> for ApiError {
    fn from(e: ProposeError) -> Self {
        let msg = e.to_string();
        match e {
            ProposeError::NotLeader { leader_hint: None } => ApiError::no_leader(),
            ProposeError::NotLeader {
                leader_hint: Some(l),
            } => ApiError::not_leader(l, "request already forwarded once"),
            ProposeError::TooLarge { .. } => ApiError::TooLarge(msg),
            ProposeError::TransferInProgress { to } => {
                ApiError::not_applied(Reason::TransferInProgress, format!("{msg}; retry shortly"))
                    .with_hint(Some(to))
            }
            ProposeError::Backpressure => ApiError::not_applied(Reason::Backpressure, msg),
            ProposeError::Dropped => ApiError::not_applied(Reason::LeaderChanged, msg),
            ProposeError::Indeterminate => ApiError::indeterminate(Reason::LeaderChanged, msg),
            ProposeError::Timeout => ApiError::indeterminate(Reason::Timeout, msg),
            ProposeError::ShuttingDown => ApiError::indeterminate(
                Reason::ShuttingDown,
                format!("{msg}; the write may or may not have been applied"),
            ),
            ProposeError::Fatal(_) => ApiError::indeterminate(Reason::Fatal, msg),
        }
    }
}

/// A read changes nothing: every failure is `not_applied`.
impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        let msg = e.to_string();
        match e {
            ReadError::NoLeader | ReadError::NotLeader { leader_hint: None } => {
                ApiError::no_leader()
            }
            ReadError::NotLeader {
                leader_hint: Some(l),
            } => ApiError::not_leader(l, "request already forwarded once"),
            ReadError::Backpressure => ApiError::not_applied(Reason::Backpressure, msg),
            ReadError::Dropped => ApiError::not_applied(Reason::LeaderChanged, msg),
            ReadError::Timeout => ApiError::not_applied(Reason::Timeout, msg),
            ReadError::ShuttingDown => ApiError::not_applied(Reason::ShuttingDown, msg),
            ReadError::Fatal(_) => ApiError::not_applied(Reason::Fatal, msg),
        }
    }
}

/// Definite: refusals before anything was appended, and `Dropped` (as for
/// proposals). Indeterminate: `Timeout` (which the runtime also reports
/// when a snapshot covered the change's index), `ShuttingDown`, `Fatal`.
impl From<MembershipError> for ApiError {
    fn from(e: MembershipError) -> Self {
        let msg = e.to_string();
        match e {
            MembershipError::NotLeader { leader_hint: None } => ApiError::no_leader(),
            MembershipError::NotLeader {
                leader_hint: Some(l),
            } => ApiError::not_leader(l, "request already forwarded once"),
            MembershipError::Invalid(_) => ApiError::BadRequest(msg),
            MembershipError::LearnerLagging { .. } => ApiError::not_applied(
                Reason::LearnerLagging,
                format!("{msg}; retry the promotion once the learner has caught up"),
            ),
            MembershipError::ChangeInProgress => {
                ApiError::not_applied(Reason::ChangeInProgress, format!("{msg}; retry shortly"))
            }
            MembershipError::TransferInProgress => {
                ApiError::not_applied(Reason::TransferInProgress, format!("{msg}; retry shortly"))
            }
            MembershipError::Dropped => ApiError::not_applied(Reason::LeaderChanged, msg),
            MembershipError::Timeout => ApiError::indeterminate(Reason::Timeout, msg),
            MembershipError::ShuttingDown => ApiError::indeterminate(Reason::ShuttingDown, msg),
            MembershipError::Fatal(_) => ApiError::indeterminate(Reason::Fatal, msg),
        }
    }
}

/// A transfer that timed out may still complete (the target may win its
/// election later), so `Timeout`, `ShuttingDown` and `Fatal` are
/// indeterminate.
impl From<TransferError> for ApiError {
    fn from(e: TransferError) -> Self {
        let msg = e.to_string();
        match e {
            TransferError::NotLeader { leader_hint: None } => ApiError::no_leader(),
            TransferError::NotLeader {
                leader_hint: Some(l),
            } => ApiError::not_leader(l, "request already forwarded once"),
            TransferError::NotVoter(_) => ApiError::BadRequest(msg),
            // The caller handles AlreadyLeader as success; here for totality.
            TransferError::AlreadyLeader => ApiError::not_applied(Reason::Internal, msg),
            TransferError::Timeout => ApiError::indeterminate(Reason::Timeout, msg),
            TransferError::ShuttingDown => ApiError::indeterminate(Reason::ShuttingDown, msg),
            TransferError::Fatal(_) => ApiError::indeterminate(Reason::Fatal, msg),
        }
    }
}

/// `status()` and friends read the node's state: nothing changed.
impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        let msg = e.to_string();
        match e {
            NodeError::Timeout => ApiError::not_applied(Reason::Timeout, msg),
            NodeError::ShuttingDown => ApiError::not_applied(Reason::ShuttingDown, msg),
            NodeError::Fatal(_) => ApiError::not_applied(Reason::Fatal, msg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_5xx_is_not_applied_or_indeterminate_with_a_reason() {
        let errors: Vec<ApiError> = vec![
            ProposeError::NotLeader { leader_hint: None }.into(),
            ProposeError::Backpressure.into(),
            ProposeError::Dropped.into(),
            ProposeError::Timeout.into(),
            ProposeError::Indeterminate.into(),
            ProposeError::ShuttingDown.into(),
            ProposeError::Fatal("disk".into()).into(),
            ReadError::Timeout.into(),
            ReadError::Fatal("disk".into()).into(),
            MembershipError::Timeout.into(),
            MembershipError::LearnerLagging {
                id: 4,
                lag_entries: 9,
            }
            .into(),
            TransferError::Timeout.into(),
            NodeError::Timeout.into(),
        ];
        for e in errors {
            assert!(e.status().as_u16() >= 500, "{e:?}");
            let body = e.body();
            assert!(
                body["code"] == NOT_APPLIED || body["code"] == INDETERMINATE,
                "{body}"
            );
            assert!(body["reason"].is_string(), "{body}");
        }
    }

    #[test]
    fn definite_and_uncertain_proposal_failures_are_told_apart() {
        let code = |e: ProposeError| ApiError::from(e).code();
        assert_eq!(code(ProposeError::Dropped), NOT_APPLIED);
        assert_eq!(code(ProposeError::Backpressure), NOT_APPLIED);
        assert_eq!(
            code(ProposeError::TransferInProgress { to: 2 }),
            NOT_APPLIED
        );
        assert_eq!(code(ProposeError::Timeout), INDETERMINATE);
        assert_eq!(code(ProposeError::Indeterminate), INDETERMINATE);
        assert_eq!(code(ProposeError::ShuttingDown), INDETERMINATE);
        // A read never changed anything.
        assert_eq!(ApiError::from(ReadError::Timeout).code(), NOT_APPLIED);
        assert_eq!(
            ApiError::from(ProposeError::Timeout).status(),
            StatusCode::GATEWAY_TIMEOUT
        );
    }

    #[test]
    fn four_hundreds_have_no_reason_and_keep_their_codes() {
        for (e, code) in [
            (ApiError::BadRequest("x".into()), "bad_request"),
            (ApiError::KeyNotFound, "key_not_found"),
            (ApiError::NotFound("x".into()), "not_found"),
            (ApiError::TooLarge("x".into()), "too_large"),
        ] {
            let body = e.body();
            assert_eq!(body["code"], code);
            assert!(body["reason"].is_null(), "{body}");
            assert!(e.status().is_client_error());
        }
        // A partial effect turns a definite failure into an uncertain one.
        let e = ApiError::no_leader().after_partial_effect();
        assert_eq!(e.code(), INDETERMINATE);
        assert_eq!(e.reason(), Some(Reason::NoLeader));
    }
}
