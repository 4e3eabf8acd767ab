//! `GET /v1/status` → what this node knows about itself and the cluster:
//! `{"id", "role", "term", "leader", "commit_index", "applied_index",
//! "last_index", "snapshot_index", "members": {"voters", "voters_outgoing",
//! "learners"}, "peers": [{"id", "match_index", "next_index", "state"}]}`.
//! Served locally, never forwarded: it is this node's view (`peers` is
//! empty on followers).

use axum::extract::State;
use axum::Json;
use raft_core::Membership;
use raft_runtime::PeerProgress;
use serde::{Deserialize, Serialize};

use crate::server::app::SharedApp;
use crate::server::error::ApiError;
use crate::server::extract::{NoBody, NoQuery, QueryParams};

#[derive(Debug, Serialize, Deserialize)]
pub struct MembershipJson {
    pub voters: Vec<u64>,
    pub voters_outgoing: Vec<u64>,
    pub learners: Vec<u64>,
}

impl From<&Membership> for MembershipJson {
    fn from(m: &Membership) -> Self {
        MembershipJson {
            voters: m.voters.iter().copied().collect(),
            voters_outgoing: m.voters_outgoing.iter().copied().collect(),
            learners: m.learners.iter().copied().collect(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct StatusJson {
    id: u64,
    role: String,
    term: u64,
    leader: Option<u64>,
    commit_index: u64,
    applied_index: u64,
    last_index: u64,
    snapshot_index: u64,
    members: MembershipJson,
    peers: Vec<PeerProgress>,
}

pub async fn handle(
    State(app): State<SharedApp>,
    _: QueryParams<NoQuery>,
    _: NoBody,
) -> Result<Json<StatusJson>, ApiError> {
    let st = app.raft.status().await?;
    Ok(Json(StatusJson {
        id: st.id,
        role: st.role.to_string(),
        term: st.term,
        leader: st.leader,
        commit_index: st.commit_index,
        applied_index: st.applied_index,
        last_index: st.last_index,
        snapshot_index: st.snapshot_index,
        members: MembershipJson::from(&st.membership),
        peers: st.peers,
    }))
}
