//! `GET /v1/profiles/{profileId}`: a profile with what merged into it; asking
//! by a merged (anonymous) id answers the surviving profile.

use actix_web::{web, HttpResponse};

use super::error::AdminError;
use crate::AppState;

pub async fn get(
    state: web::Data<AppState>,
    profile_id: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    let profile = state
        .profiles
        .get(&profile_id)
        .await
        .map_err(|e| AdminError::EventLogUnavailable(e.to_string()))?
        .ok_or_else(|| {
            AdminError::NotFound(format!(
                "no event belongs to profile {:?}",
                profile_id.as_str()
            ))
        })?;
    Ok(HttpResponse::Ok().json(profile))
}
