//! `POST /adjustments`.

use actix_web::{HttpResponse, http::StatusCode, post, web};
use serde::Deserialize;
use serde_json::json;
use shared::{
    http::{ApiError, Authenticated, parse_json},
    schemas::{inventory::AdjustmentType, is_subject_safe},
};

use crate::{
    AppState,
    domain::adjuster::{Adjustment, Applied, Refused},
};

/// The request body. Unknown fields are refused, so a typo cannot silently drop a value.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustmentRequest {
    /// Where the change happened: `erp`, `ecommerce`, `pos`, `wms`, or another system name.
    pub source: String,
    pub sku: String,
    pub warehouse: String,
    #[serde(rename = "type")]
    pub kind: AdjustmentType,
    /// Units moved, or the absolute level for `adjustment`/`count`. Never negative.
    pub quantity: i64,
    pub reason: Option<String>,
    /// The caller's id for this adjustment; with `source`, the idempotency key.
    pub reference: String,
    /// Compare-and-set: apply only if on hand is exactly this now.
    pub expected_on_hand: Option<i64>,
}

/// Header marking the stored answer of an earlier identical request.
pub const IDEMPOTENT_REPLAYED: &str = "Idempotent-Replayed";

/// Largest quantity accepted (far above any real stock; keeps every sum inside `i64`).
pub const MAX_QUANTITY: i64 = 1_000_000_000_000;

/// PostgreSQL text cannot hold NUL, and no other control character belongs in these fields.
fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

impl AdjustmentRequest {
    /// Checks every field, naming the first bad one.
    pub fn validate(self) -> Result<Adjustment, ApiError> {
        for (field, value) in [("source", &self.source), ("sku", &self.sku)] {
            if !is_subject_safe(value) {
                return Err(ApiError::field(
                    field,
                    format!("{field} must be 1-64 letters, digits, '.', '_' or '-'"),
                ));
            }
        }
        // The warehouse and the sku are the last two tokens of a level subject: a dot in the
        // warehouse would make two records share one subject.
        if !is_subject_safe(&self.warehouse) || self.warehouse.contains('.') {
            return Err(ApiError::field(
                "warehouse",
                "warehouse must be 1-64 letters, digits, '_' or '-'",
            ));
        }
        if self.reference.trim().is_empty()
            || self.reference.len() > 200
            || has_control(&self.reference)
        {
            return Err(ApiError::field(
                "reference",
                "reference must be 1-200 characters without control characters",
            ));
        }
        if !(0..=MAX_QUANTITY).contains(&self.quantity) {
            return Err(ApiError::field(
                "quantity",
                format!("quantity must be between 0 and {MAX_QUANTITY}"),
            ));
        }
        if !self.kind.is_absolute() && self.quantity == 0 {
            return Err(ApiError::field(
                "quantity",
                format!("quantity must be positive for {}", self.kind.as_str()),
            ));
        }
        if self.expected_on_hand.is_some_and(|e| !(0..=MAX_QUANTITY).contains(&e)) {
            return Err(ApiError::field(
                "expected_on_hand",
                format!("expected_on_hand must be between 0 and {MAX_QUANTITY}"),
            ));
        }
        if self.reason.as_ref().is_some_and(|r| r.len() > 500 || has_control(r)) {
            return Err(ApiError::field(
                "reason",
                "reason must be at most 500 characters without control characters",
            ));
        }
        Ok(Adjustment {
            source: self.source,
            reference: self.reference,
            sku: self.sku,
            warehouse: self.warehouse,
            kind: self.kind,
            quantity: self.quantity,
            expected_on_hand: self.expected_on_hand,
            reason: self.reason,
        })
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
            Refused::KeyReused { .. } => {
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
    let adjustment = request.validate()?;
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
