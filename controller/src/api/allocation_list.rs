//! `GET /api/resources/allocations`: the caller's own allocations, newest
//! first, so the dashboard can show them and offer to release the active
//! ones (`POST /api/resources/release` releases only the caller's own).

use super::error::ApiError;
use super::extract::Principal;
use super::AppState;
use crate::db::allocations;
use crate::models::Allocation;
use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

/// Most allocations listed: the newest ones are those a person acts on;
/// older ones lapse and are deleted by retention.
const LIST_LIMIT: i64 = 200;

/// The caller's allocations.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AllocationList {
    /// Newest first, at most 200, any status.
    pub allocations: Vec<Allocation>,
}

/// The caller's own allocations, newest first (at most 200).
#[utoipa::path(get, path = "/api/resources/allocations", tag = "resources", security(("bearer" = [])),
    responses((status = 200, body = AllocationList)))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<AllocationList>, ApiError> {
    let client = state.db.client().await?;
    let allocations = allocations::list_of(&client, principal.user_id, LIST_LIMIT).await?;
    Ok(Json(AllocationList { allocations }))
}
