//! `/api/v1/bans`: the bans of the `nftables_ban` sinks, made and lifted by hand (`vigil
//! ban`, the dashboard's Bans page).
//!
//! - `GET /api/v1/bans[?all=true]`: the active bans (soonest to end first; with `all`,
//!   the ended ones after them) and the running `nftables_ban` sinks.
//! - `POST /api/v1/bans` `{address, ttl?, sink?, created_by?}`: bans `address` through a
//!   running sink (the only one, or `sink`), with its allow list, `max_bans` and
//!   `dry_run`, for `ttl` (default: the sink's). 200 with `{outcome, message, sink}`:
//!   `banned`, `kept` (already banned for longer), `dry_run` (with the JSON it would
//!   apply) or `refused` (allow list, `max_bans`); 400 for a bad address or TTL, 409 when
//!   no (or more than one) sink could make it, 502 when `nft` failed.
//! - `DELETE /api/v1/bans/{address}[?sink=&by=]`: lifts the ban: 200 `removed` or
//!   `dry_run`, 404 when the address is not banned, 502 when `nft` failed.

use std::net::IpAddr;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{AppState, error};
use crate::sinks::nftables_ban::{BanError, BanOrigin, BanOutcome, MAX_TTL, UnbanOutcome};

/// `?all=` of the list.
#[derive(Debug, serde::Deserialize)]
pub(super) struct ListQuery {
    #[serde(default)]
    all: bool,
}

pub(super) async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return error(StatusCode::BAD_REQUEST, "query: all=true|false");
    };
    let store = state.reloader.store().await;
    let services = state.reloader.services().await;
    let sinks: Vec<serde_json::Value> = services
        .bans
        .sinks()
        .iter()
        .map(|b| {
            json!({
                "id": b.id(),
                "dry_run": b.dry_run(),
                "ttl": humantime::format_duration(b.ttl()).to_string(),
                "max_bans": b.max_bans(),
            })
        })
        .collect();
    let bans = tokio::task::spawn_blocking(move || store.bans(q.all, 10_000)).await;
    match bans {
        Ok(Ok(bans)) => axum::Json(json!({"bans": bans, "sinks": sinks})).into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "the bans query failed"),
    }
}

/// The body of `POST /api/v1/bans`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewBan {
    address: String,
    /// How long (`1h`); the sink's `ttl` when absent.
    ttl: Option<String>,
    /// The sink (`pipeline.sink` or its name); the only one when absent.
    sink: Option<String>,
    #[serde(default)]
    created_by: String,
}

fn status_of(e: &BanError) -> StatusCode {
    match e {
        BanError::NoAddress(_) | BanError::BadTtl(_) => StatusCode::BAD_REQUEST,
        BanError::UnknownIpList { .. } => StatusCode::CONFLICT,
        BanError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        BanError::Nft(_) | BanError::Names(_) | BanError::PceAddress { .. } => {
            StatusCode::BAD_GATEWAY
        }
    }
}

fn parse_address(text: &str) -> Result<IpAddr, String> {
    text.trim().parse::<IpAddr>().map_err(|_| {
        format!(
            "`{}` is not an IP address",
            text.chars().take(100).collect::<String>()
        )
    })
}

pub(super) async fn add(
    State(state): State<AppState>,
    body: Result<axum::Json<NewBan>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let axum::Json(new) = match body {
        Ok(b) => b,
        Err(e) => return error(e.status(), &e.body_text()),
    };
    let address = match parse_address(&new.address) {
        Ok(a) => a,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let banner = match state
        .reloader
        .services()
        .await
        .bans
        .find(new.sink.as_deref())
    {
        Ok(b) => b,
        Err(e) => return error(StatusCode::CONFLICT, &e),
    };
    let ttl = match new.ttl.as_deref().map(crate::time::parse_length) {
        None => banner.ttl(),
        Some(Ok(t)) if t.as_secs() >= 1 && t <= MAX_TTL.get() => t,
        Some(Ok(_)) => {
            return error(StatusCode::BAD_REQUEST, "ttl is between 1s and 365d");
        }
        Some(Err(e)) => return error(StatusCode::BAD_REQUEST, &format!("ttl: {e}")),
    };
    let created_by = if new.created_by.trim().is_empty() {
        "api".to_string()
    } else {
        new.created_by.trim().chars().take(100).collect()
    };
    let origin = BanOrigin {
        alert_id: None,
        message: None,
        origin: "api",
        created_by,
    };
    // On its own task: a client that hangs up does not cut a ban half-way.
    let sink = banner.id().to_string();
    let done = tokio::spawn(async move { banner.ban(address, ttl, origin).await }).await;
    match done {
        Ok(Ok(outcome)) => {
            let kind = match &outcome {
                BanOutcome::Banned { .. } => "banned",
                BanOutcome::Kept { .. } => "kept",
                BanOutcome::DryRun { .. } => "dry_run",
                BanOutcome::Refused { .. } => "refused",
            };
            let mut body = json!({"outcome": kind, "message": outcome.to_string(), "sink": sink});
            if let BanOutcome::DryRun { json, .. } = &outcome {
                body["json"] = json.as_str().into();
            }
            axum::Json(body).into_response()
        }
        Ok(Err(e)) => error(status_of(&e), &e.to_string()),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "the ban task failed"),
    }
}

/// `?sink=&by=` of `DELETE /api/v1/bans/{address}`.
#[derive(Debug, serde::Deserialize)]
pub(super) struct RemoveQuery {
    sink: Option<String>,
    by: Option<String>,
}

pub(super) async fn remove(
    State(state): State<AppState>,
    Path(address): Path<String>,
    query: Result<Query<RemoveQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return error(StatusCode::BAD_REQUEST, "query: sink=NAME, by=WHO");
    };
    let address = match parse_address(&address) {
        Ok(a) => a,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let banner = match state.reloader.services().await.bans.find(q.sink.as_deref()) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::CONFLICT, &e),
    };
    let by: String = q.by.filter(|b| !b.trim().is_empty()).map_or_else(
        || "api".to_string(),
        |b| b.trim().chars().take(100).collect(),
    );
    let sink = banner.id().to_string();
    let done = tokio::spawn(async move { banner.unban(address, &by).await }).await;
    match done {
        Ok(Ok(UnbanOutcome::NotBanned { .. })) => {
            error(StatusCode::NOT_FOUND, &format!("{address} is not banned"))
        }
        Ok(Ok(outcome)) => {
            let kind = match &outcome {
                UnbanOutcome::DryRun { .. } => "dry_run",
                _ => "removed",
            };
            axum::Json(json!({"outcome": kind, "message": outcome.to_string(), "sink": sink}))
                .into_response()
        }
        Ok(Err(e)) => error(status_of(&e), &e.to_string()),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "the task failed"),
    }
}
