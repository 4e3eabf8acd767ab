//! `GET /version`: what this server runs, as JSON: `{"version", "revision",
//! "dirty", "profile", "rustc"}` (see [`crate::version::BuildInfo`]).
//! Answered locally, never forwarded: each node says what it runs, which is
//! what a rolling upgrade needs to check.

use axum::Json;

use crate::server::extract::{NoBody, NoQuery, QueryParams};
use crate::version::BuildInfo;

pub async fn handle(_: QueryParams<NoQuery>, _: NoBody) -> Json<BuildInfo> {
    Json(BuildInfo::current())
}
