//! API errors and how each one becomes an HTTP response.
//!
//! Every error a client can see is one [`ApiError`] variant, rendered as
//! `status + {"error": {"code": "...", "message": "...", "leader_hint": N | null}}`.
//! The `code` is the machine-readable part (the contract's list of codes);
//! the message is for people. The mapping from the runtime's typed errors
//! lives here too, so every route maps them the same way.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use raft_core::NodeId;
use raft_runtime::{MembershipError, NodeError, ProposeError, ReadError, TransferError};
use raftkv_state::CommandError;
use serde_json::json;

/// An error answered to a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 400 `bad_request`: malformed JSON, bad parameters.
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
    /// 503 `no_leader`: no leader is known right now; retry shortly.
    #[error("no leader is known; retry shortly")]
    NoLeader,
    /// 503 `not_leader`: this node cannot serve the request and will not
    /// forward it (it was already forwarded once, or the leader's address
    /// is unknown); retry at the hinted leader.
    #[error("{message}")]
    NotLeader {
        leader_hint: Option<NodeId>,
        message: String,
    },
    /// 503 `unavailable`: overloaded, a change in progress, a leader change;
    /// retry later.
    #[error("{message}")]
    Unavailable {
        message: String,
        leader_hint: Option<NodeId>,
    },
    /// 504 `timeout`: no answer in time; for writes the outcome is unknown.
    #[error("{0}")]
    Timeout(String),
    /// 500 `internal`: the node hit a fatal error and is stopping.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError::Unavailable {
            message: message.into(),
            leader_hint: None,
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::KeyNotFound | ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NoLeader | ApiError::NotLeader { .. } | ApiError::Unavailable { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) | ApiError::MethodNotAllowed(_) => "bad_request",
            ApiError::KeyNotFound => "key_not_found",
            ApiError::NotFound(_) => "not_found",
            ApiError::TooLarge(_) => "too_large",
            ApiError::NoLeader => "no_leader",
            ApiError::NotLeader { .. } => "not_leader",
            ApiError::Unavailable { .. } => "unavailable",
            ApiError::Timeout(_) => "timeout",
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn leader_hint(&self) -> Option<NodeId> {
        match self {
            ApiError::NotLeader { leader_hint, .. } | ApiError::Unavailable { leader_hint, .. } => {
                *leader_hint
            }
            _ => None,
        }
    }

    /// The `{"code", "message", "leader_hint"}` object.
    pub fn body(&self) -> serde_json::Value {
        json!({
            "code": self.code(),
            "message": self.to_string(),
            "leader_hint": self.leader_hint(),
        })
    }

    /// `not_leader` with the hint, for a request this node will not forward.
    pub fn not_leader(hint: NodeId, why: &str) -> Self {
        ApiError::NotLeader {
            leader_hint: Some(hint),
            message: format!("this node is not the leader; node {hint} leads ({why})"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status(), Json(json!({ "error": self.body() }))).into_response()
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::KeyTooLarge { .. } | CommandError::ValueTooLarge { .. } => {
                ApiError::TooLarge(e.to_string())
            }
            CommandError::EmptyKey
            | CommandError::ListLimitOutOfRange { .. }
            | CommandError::StaleSequence { .. } => ApiError::BadRequest(e.to_string()),
            // The server encodes every command itself: an undecodable one is
            // a version mix-up between replicas, not the client's fault.
            CommandError::Undecodable(_) => ApiError::Internal(e.to_string()),
        }
    }
}

/// Maps a proposal failure (other than `NotLeader`, which the caller turns
/// into a forward).
impl From<ProposeError> for ApiError {
    fn from(e: ProposeError) -> Self {
        match e {
            ProposeError::NotLeader { leader_hint: None } => ApiError::NoLeader,
            ProposeError::NotLeader {
                leader_hint: Some(l),
            } => ApiError::not_leader(l, "request already forwarded once"),
            ProposeError::TooLarge { .. } => ApiError::TooLarge(e.to_string()),
            ProposeError::TransferInProgress { to } => ApiError::Unavailable {
                message: format!("{e}; retry shortly"),
                leader_hint: Some(to),
            },
            ProposeError::Backpressure | ProposeError::Dropped | ProposeError::ShuttingDown => {
                ApiError::unavailable(e.to_string())
            }
            ProposeError::Timeout | ProposeError::Indeterminate => ApiError::Timeout(e.to_string()),
            ProposeError::Fatal(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::NoLeader => ApiError::NoLeader,
            ReadError::NotLeader { leader_hint: None } => ApiError::NoLeader,
            ReadError::NotLeader {
                leader_hint: Some(l),
            } => ApiError::not_leader(l, "request already forwarded once"),
            ReadError::NoLease => {
                ApiError::unavailable(format!("{e}; retry, or use consistency=linearizable"))
            }
            ReadError::Backpressure | ReadError::Dropped | ReadError::ShuttingDown => {
                ApiError::unavailable(e.to_string())
            }
            ReadError::Timeout => ApiError::Timeout(e.to_string()),
            ReadError::Fatal(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<MembershipError> for ApiError {
    fn from(e: MembershipError) -> Self {
        match e {
            MembershipError::NotLeader { leader_hint: None } => ApiError::NoLeader,
            MembershipError::NotLeader {
                leader_hint: Some(l),
            } => ApiError::not_leader(l, "request already forwarded once"),
            MembershipError::Invalid(_) => ApiError::BadRequest(e.to_string()),
            MembershipError::LearnerLagging { .. } => ApiError::unavailable(format!(
                "{e}; retry the promotion once the learner has caught up"
            )),
            MembershipError::ChangeInProgress
            | MembershipError::TransferInProgress
            | MembershipError::Dropped
            | MembershipError::ShuttingDown => ApiError::unavailable(format!("{e}; retry shortly")),
            MembershipError::Timeout => ApiError::Timeout(e.to_string()),
            MembershipError::Fatal(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<TransferError> for ApiError {
    fn from(e: TransferError) -> Self {
        match e {
            TransferError::NotLeader { leader_hint: None } => ApiError::NoLeader,
            TransferError::NotLeader {
                leader_hint: Some(l),
            } => ApiError::not_leader(l, "request already forwarded once"),
            TransferError::NotVoter(_) => ApiError::BadRequest(e.to_string()),
            // The caller handles AlreadyLeader as success; here for totality.
            TransferError::AlreadyLeader | TransferError::ShuttingDown => {
                ApiError::unavailable(e.to_string())
            }
            TransferError::Timeout => ApiError::Timeout(e.to_string()),
            TransferError::Fatal(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::Timeout => ApiError::Timeout(e.to_string()),
            NodeError::ShuttingDown => ApiError::unavailable(e.to_string()),
            NodeError::Fatal(_) => ApiError::Internal(e.to_string()),
        }
    }
}
