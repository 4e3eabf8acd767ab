//! `GET /healthz`: 200 while the process serves HTTP (liveness).
//! `GET /readyz`: 200 when a leader is known and this node has applied
//! everything it knows to be committed (readiness); 503 `not_applied`
//! otherwise, with the reason `no_leader` or `catching_up`.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::server::app::SharedApp;
use crate::server::error::{ApiError, Reason};
use crate::server::extract::{NoBody, NoQuery, QueryParams};

pub async fn healthz(_: QueryParams<NoQuery>, _: NoBody) -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub async fn readyz(
    State(app): State<SharedApp>,
    _: QueryParams<NoQuery>,
    _: NoBody,
) -> Result<Json<Value>, ApiError> {
    let st = app.raft.status().await?;
    let Some(leader) = st.leader else {
        return Err(ApiError::no_leader());
    };
    if st.applied_index < st.commit_index {
        return Err(ApiError::not_applied(
            Reason::CatchingUp,
            format!(
                "catching up: applied {} of {} committed entries",
                st.applied_index, st.commit_index
            ),
        )
        .with_hint(Some(leader)));
    }
    Ok(Json(json!({
        "status": "ready",
        "leader": leader,
        "applied_index": st.applied_index,
    })))
}
