//! Cluster membership:
//!
//! - `GET /v1/members` → `{"members": [{"id", "role": "voter"|"learner",
//!   "peer_addr", "client_addr"}]}` (this node's view, served locally);
//! - `POST /v1/members` body `{"id", "peer_addr", "client_addr", "role"}`
//!   (addresses `IP:PORT` or `HOST:PORT`, replicated as written) adds a
//!   learner (default) or a voter; `"role": "voter"` on an existing
//!   learner promotes it;
//! - `POST /v1/members/{id}/promote` promotes a learner;
//! - `DELETE /v1/members/{id}` removes a member.
//!
//! Changes run on the leader (followers forward). **Order matters**:
//!
//! - *add*: first replicate the new node's addresses (a `MemberOp::Set`
//!   through the log; every node hands the peer address to its transport
//!   when it applies it), **then** change the configuration. The other way
//!   round, the leader would start replicating to a node it cannot reach,
//!   and a newly elected leader might not know the address at all.
//! - *remove*: first change the configuration, **then** forget the
//!   addresses, so the node is reachable for as long as it is a member.
//!
//! One change at a time (the core refuses overlapping ones with
//! `ChangeInProgress`, answered 503 `not_applied`/`change_in_progress`). A
//! learner is promoted only once it is close enough to the leader's log: a
//! lagging one is refused with 503 `not_applied`/`learner_lagging` and a
//! message to retry later.
//!
//! An add whose address step committed but whose configuration change then
//! failed has had an effect (the addresses are replicated), so that failure
//! is `indeterminate`, never `not_applied`; likewise any failure after a
//! configuration change committed. Retrying an add, promote or remove is
//! safe either way: each converges on the asked-for state.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use raft_core::{MembershipChange, NodeId};
use raft_runtime::{MembershipError, PeerAddr, ProposeError};
use serde::{Deserialize, Serialize};

use crate::server::app::{unexpected, App, SharedApp};
use crate::server::config::parse_addr;
use crate::server::error::ApiError;
use crate::server::extract::{
    parse_json, IdPath, LimitedBody, NoBody, NoQuery, QueryParams, RequestInfo,
};
use crate::server::forward;
use crate::server::state::{MemberAddrs, MemberOp, ServerCommand, ServerResponse};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberRole {
    Voter,
    #[default]
    Learner,
}

#[derive(Debug, Serialize)]
pub struct MemberJson {
    id: NodeId,
    role: MemberRole,
    peer_addr: Option<PeerAddr>,
    client_addr: Option<PeerAddr>,
}

#[derive(Debug, Serialize)]
pub struct MembersJson {
    members: Vec<MemberJson>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddBody {
    id: NodeId,
    peer_addr: String,
    client_addr: String,
    #[serde(default)]
    role: MemberRole,
}

/// `None` if this node leads; else the leader's answer to the forwarded
/// request (or the error saying why it could not be forwarded).
pub async fn ensure_leader(
    app: &App,
    info: &RequestInfo,
    body: &Bytes,
) -> Result<Option<Response>, ApiError> {
    if app.is_leader() {
        return Ok(None);
    }
    let leader = app.raft.status().await?.leader;
    if leader == Some(app.cfg.id) {
        return Ok(None);
    }
    forward::to_leader(app, info, body, leader).await.map(Some)
}

/// This node's view of the members, with their addresses.
async fn members_json(app: &App) -> Result<Json<MembersJson>, ApiError> {
    let st = app.raft.status().await?;
    let book = {
        let sm = app
            .raft
            .state_machine()
            .read()
            // Readers cannot leave the state half-updated; see the runtime.
            .unwrap_or_else(|e| e.into_inner());
        sm.members().clone()
    };
    let m = &st.membership;
    let members: Vec<MemberJson> = m
        .members()
        .into_iter()
        .map(|id| {
            let replicated = book.get(&id);
            let own = |a: &PeerAddr| (id == app.cfg.id).then(|| a.clone());
            MemberJson {
                id,
                role: if m.is_voter(id) {
                    MemberRole::Voter
                } else {
                    MemberRole::Learner
                },
                peer_addr: replicated
                    .map(|a| a.peer_addr.clone())
                    .or_else(|| app.cfg.peers.get(&id).cloned())
                    .or_else(|| own(&app.cfg.listen_peer)),
                client_addr: replicated
                    .map(|a| a.client_addr.clone())
                    .or_else(|| app.cfg.clients.get(&id).cloned())
                    .or_else(|| own(&app.cfg.listen_client)),
            }
        })
        .collect();
    Ok(Json(MembersJson { members }))
}

pub async fn list(
    State(app): State<SharedApp>,
    _: QueryParams<NoQuery>,
    _: NoBody,
) -> Result<Json<MembersJson>, ApiError> {
    members_json(&app).await
}

pub async fn add(
    State(app): State<SharedApp>,
    info: RequestInfo,
    _: QueryParams<NoQuery>,
    LimitedBody(body): LimitedBody,
) -> Result<Response, ApiError> {
    let req: AddBody = parse_json(&body)?;
    if req.id == 0 {
        return Err(ApiError::BadRequest("node id 0 is reserved".into()));
    }
    let addrs = MemberAddrs {
        peer_addr: parse_addr("peer_addr", &req.peer_addr)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?,
        client_addr: parse_addr("client_addr", &req.client_addr)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?,
    };
    if addrs.peer_addr == addrs.client_addr {
        return Err(ApiError::BadRequest(
            "peer_addr and client_addr must differ".into(),
        ));
    }
    if let Some(forwarded) = ensure_leader(&app, &info, &body).await? {
        return Ok(forwarded);
    }
    let st = app.raft.status().await?;
    let m = &st.membership;
    if req.role == MemberRole::Learner && m.is_voter(req.id) {
        return Err(ApiError::BadRequest(format!(
            "node {} is already a voter; remove it first to make it a learner",
            req.id
        )));
    }
    // 1. Replicate the addresses (idempotent: re-adding sets them again).
    let set = ServerCommand::Members(MemberOp::Set { id: req.id, addrs });
    match app.propose(&set).await {
        Ok(ServerResponse::Members) => {}
        Ok(ServerResponse::Rejected(why)) => return Err(ApiError::BadRequest(why)),
        Ok(other) => return Err(unexpected(&other)),
        Err(ProposeError::NotLeader { leader_hint }) => {
            return forward::to_leader(&app, &info, &body, leader_hint).await
        }
        Err(e) => return Err(e.into()),
    }
    // 2. Change the configuration, unless it already is as asked.
    let change = match req.role {
        MemberRole::Voter if m.is_voter(req.id) => None,
        MemberRole::Voter => Some(MembershipChange::AddVoter(req.id)),
        MemberRole::Learner if m.is_learner(req.id) => None,
        MemberRole::Learner => Some(MembershipChange::AddLearner(req.id)),
    };
    // From here on the addresses are replicated: a failure is not
    // "nothing happened".
    if let Some(change) = change {
        if let Some(r) = change_membership(&app, &info, &body, change)
            .await
            .map_err(ApiError::after_partial_effect)?
        {
            return Ok(r);
        }
    }
    members_json(&app)
        .await
        .map(IntoResponse::into_response)
        .map_err(ApiError::after_partial_effect)
}

pub async fn promote(
    State(app): State<SharedApp>,
    info: RequestInfo,
    IdPath(id): IdPath,
    _: QueryParams<NoQuery>,
    _: NoBody,
) -> Result<Response, ApiError> {
    let body = Bytes::new();
    if let Some(forwarded) = ensure_leader(&app, &info, &body).await? {
        return Ok(forwarded);
    }
    let st = app.raft.status().await?;
    if !st.membership.contains(id) {
        return Err(ApiError::BadRequest(format!("node {id} is not a member")));
    }
    let promoting = st.membership.is_learner(id);
    if promoting {
        if let Some(r) =
            change_membership(&app, &info, &body, MembershipChange::AddVoter(id)).await?
        {
            return Ok(r);
        }
    }
    members_json(&app)
        .await
        .map(IntoResponse::into_response)
        .map_err(|e| {
            if promoting {
                e.after_partial_effect()
            } else {
                e
            }
        })
}

pub async fn remove(
    State(app): State<SharedApp>,
    info: RequestInfo,
    IdPath(id): IdPath,
    _: QueryParams<NoQuery>,
    _: NoBody,
) -> Result<Response, ApiError> {
    let body = Bytes::new();
    if let Some(forwarded) = ensure_leader(&app, &info, &body).await? {
        return Ok(forwarded);
    }
    let st = app.raft.status().await?;
    let has_addrs = {
        let sm = app
            .raft
            .state_machine()
            .read()
            // Readers cannot leave the state half-updated; see the runtime.
            .unwrap_or_else(|e| e.into_inner());
        sm.members().contains_key(&id)
    };
    if !st.membership.contains(id) && !has_addrs {
        return Err(ApiError::BadRequest(format!("node {id} is not a member")));
    }
    // 1. Leave the configuration.
    if st.membership.contains(id) {
        if let Some(r) = change_membership(&app, &info, &body, MembershipChange::Remove(id)).await?
        {
            return Ok(r);
        }
    }
    // 2. Forget the addresses. Best effort: if this node just removed
    //    itself it is no longer leader, and a stale entry for a non-member
    //    is harmless (it is never listed and nobody sends to it).
    let forget = ServerCommand::Members(MemberOp::Remove { id });
    if let Err(e) = app.propose(&forget).await {
        tracing::warn!(node = id, error = %e, "removed member's addresses not forgotten");
    }
    members_json(&app)
        .await
        .map(IntoResponse::into_response)
        .map_err(ApiError::after_partial_effect)
}

/// Runs one configuration change; `Some(response)` if it had to be
/// forwarded because this node stopped leading.
async fn change_membership(
    app: &App,
    info: &RequestInfo,
    body: &Bytes,
    change: MembershipChange,
) -> Result<Option<Response>, ApiError> {
    match app.raft.change_membership(vec![change]).await {
        Ok(_) => Ok(None),
        Err(MembershipError::NotLeader { leader_hint }) => {
            forward::to_leader(app, info, body, leader_hint)
                .await
                .map(Some)
        }
        Err(e) => Err(e.into()),
    }
}
