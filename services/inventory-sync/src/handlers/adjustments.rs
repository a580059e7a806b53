//! `POST /adjustments`.

use actix_web::{HttpResponse, http::StatusCode, post, web};
use serde_json::json;
use shared::http::{ApiError, Authenticated, parse_json};

use crate::{
    AppState,
    domain::{
        adjuster::{Adjustment, Applied, Refused},
        adjustment::{AdjustmentRequest, InvalidField},
    },
};

/// Header marking the stored answer of an earlier identical request.
pub const IDEMPOTENT_REPLAYED: &str = "Idempotent-Replayed";

impl From<InvalidField> for ApiError {
    fn from(invalid: InvalidField) -> Self {
        ApiError::field(invalid.field, invalid.detail)
    }
}

impl From<Refused> for ApiError {
    fn from(refused: Refused) -> Self {
        let detail = refused.to_string();
        match refused {
            Refused::UnknownProduct(_) => ApiError::field("sku", detail),
            Refused::Negative { current_qty, attempted_qty } => ApiError::Rejected {
                detail,
                extra: json!({"current_qty": current_qty, "attempted_qty": attempted_qty}),
            },
            Refused::ExpectedMismatch { current_qty, expected_on_hand } => ApiError::Conflict {
                detail,
                extra: json!({"current_qty": current_qty, "expected_on_hand": expected_on_hand}),
            },
            Refused::KeyReused { .. } | Refused::Stale { .. } => {
                ApiError::Conflict { detail, extra: serde_json::Value::Null }
            }
            Refused::Failed(reason) => ApiError::Unavailable(reason),
        }
    }
}

/// Applies a stock adjustment atomically and answers with the new quantity.
///
/// Authenticated by `X-API-Key` or by an HMAC signature; the key's or secret's name must equal
/// `source`. Retrying with the same `(source, reference)` answers exactly as the first time
/// (201, the same body), marked by the header `Idempotent-Replayed: true`.
#[utoipa::path(post, path = "/adjustments", tag = "inventory",
    security(("api_key" = []), ("signature" = [])),
    request_body = AdjustmentRequest,
    responses(
        (status = 201, description = "applied (or, with `Idempotent-Replayed: true`, the first answer to an identical earlier request)", body = Applied),
        (status = 403, description = "the credentials belong to another source"),
        (status = 401, description = "not authenticated"),
        (status = 409, description = "expected_on_hand mismatch, or reference reused"),
        (status = 422, description = "invalid field, unknown product, or stock would go negative"),
        (status = 503, description = "database unavailable: retry")))]
#[post("/adjustments")]
#[tracing::instrument(skip_all, fields(client = %auth.client))]
pub async fn post_adjustment(
    state: web::Data<AppState>,
    auth: Authenticated,
) -> Result<HttpResponse, ApiError> {
    let request: AdjustmentRequest = parse_json(&auth.body)?;
    let adjustment = Adjustment::try_from(request)?;
    if auth.client != adjustment.source {
        return Err(ApiError::Invalid {
            status: StatusCode::FORBIDDEN,
            field: Some("source".into()),
            detail: format!(
                "these credentials may only submit adjustments for source {}",
                auth.client
            ),
        });
    }
    let applied = state.adjuster.apply(adjustment).await?;
    tracing::info!(
        sku = %applied.sku, warehouse = %applied.warehouse, ledger_id = applied.ledger_id,
        new_quantity = applied.new_quantity, replayed = applied.replayed, "adjustment answered"
    );
    let mut response = HttpResponse::Created();
    if applied.replayed {
        response.insert_header((IDEMPOTENT_REPLAYED, "true"));
    }
    Ok(response.json(applied))
}
