//! The optional HTTP admin endpoint (`--http-addr`): `/healthz`, `/status`
//! (JSON), `/metrics` (Prometheus text) and `POST /snapshot`, served with
//! axum.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use tokio::net::TcpListener;

use super::{role_name, Shared};

#[derive(Serialize)]
struct PeerJson {
    id: u64,
    match_index: u64,
    next_index: u64,
    /// Milliseconds since this peer last answered the leader.
    last_contact_ms: Option<u64>,
}

#[derive(Serialize)]
struct StatusJson {
    id: u64,
    role: &'static str,
    term: u64,
    leader_id: u64,
    commit_index: u64,
    last_applied: u64,
    last_log_index: u64,
    last_log_term: u64,
    /// Leader only: replication progress of each follower.
    /// This node's vote right: allowed, pending or suspended.
    vote: &'static str,
    peers: Vec<PeerJson>,
}

pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/snapshot", post(snapshot))
        .with_state(shared);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "http server stopped");
    }
}

async fn status(State(shared): State<Arc<Shared>>) -> Json<StatusJson> {
    let s = shared.handle.status();
    Json(StatusJson {
        id: s.id,
        role: role_name(s.state),
        term: s.term,
        leader_id: s.leader_id.unwrap_or(0),
        commit_index: s.commit_index,
        last_applied: s.last_applied,
        last_log_index: s.last_log_index,
        last_log_term: s.last_log_term,
        vote: shared.identity.vote_right().name(),
        peers: s
            .replication
            .iter()
            .map(|&(id, match_index, next_index)| PeerJson {
                id,
                match_index,
                next_index,
                last_contact_ms: s
                    .last_contact_ms
                    .iter()
                    .find(|(p, _)| *p == id)
                    .map(|(_, ms)| *ms),
            })
            .collect(),
    })
}

/// `POST /snapshot`: the same as `RAFT.SNAPSHOT` (§7): this node takes a
/// snapshot now, compacts its log, and answers once the snapshot is durable.
async fn snapshot(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    match shared.handle.snapshot().await {
        Ok(index) => (
            StatusCode::OK,
            format!("{{\"snapshot_last_index\":{index}}}\n"),
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{{\"error\":{}}}\n", serde_json::Value::String(e)),
        ),
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let body = shared.metrics.render(&shared.handle.status());
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}
