//! `GET /v1/profiles/{profileId}`: a profile with what merged into it; asking
//! by a merged (anonymous) id answers the surviving profile. A suppressed
//! profile (or a session merged into one) reads 404, as if erased.

use actix_web::{web, HttpResponse};

use super::error::AdminError;
use crate::AppState;

pub async fn get(
    state: web::Data<AppState>,
    profile_id: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    let config = state.config_log.snapshot();
    let suppressed = || {
        AdminError::NotFound(format!(
            "profile {:?} is suppressed (see GET /v1/erasures?profileId=)",
            profile_id.as_str()
        ))
    };
    if config.is_suppressed_id(&profile_id) {
        return Err(suppressed());
    }
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
    if config.is_suppressed_id(&profile.profile_id) {
        return Err(suppressed());
    }
    Ok(HttpResponse::Ok().json(profile))
}
