//! Stock levels pushed to each target (ERP, shop, POS, WMS) by the shared push engine
//! ([`shared::push`]): this holds only what is inventory's own, how a stock row is loaded and
//! how each target's request looks.
//!
//! Input: `inventory.level.<warehouse>.<sku>` (latest message per subject only), read by one
//! batch consumer per configured target. The record key is `<warehouse>/<sku>`; the record's
//! version is `stock.version` (bumped by every change of the level) and its origin
//! `stock.last_source`. For the shop, a delivered level is followed by the product's
//! availability: disabled when it is out of stock everywhere, enabled when stock returns.

use crate::models::{product::Availability, stock::StockRow};
use diesel_async::AsyncPgConnection;
use serde_json::Value;
use shared::{
    bus::outbox::OutboxRow,
    mappers,
    outbound::{self, OutboundRequest, Outcome},
    push::{Connector, FollowUp, KeyPart, Loaded, Origin, RecordKey, Records},
    schemas::{
        Envelope,
        inventory::{StockLevel, StockLevelChanged, Target},
    },
};

/// One target's stock levels.
pub struct StockLevels {
    pub target: Target,
}

/// The record key of a stock level: warehouse, then sku (warehouses never contain `/`: they
/// are subject tokens).
pub(crate) fn key(warehouse: &str, sku: &str) -> String {
    RecordKey::new(warehouse, sku).to_string()
}

/// `(warehouse, sku)` of a key.
fn split(key: &str) -> (String, String) {
    RecordKey::parse(key).map(|k| (k.first, k.second)).unwrap_or_default()
}

impl Connector for StockLevels {
    type Record = StockLevel;
    type Message = StockLevelChanged;
    fn entity(&self) -> &'static str {
        "stock_level"
    }

    fn key(&self, message: &StockLevelChanged) -> String {
        key(&message.warehouse, &message.sku)
    }

    fn message(&self, record_key: &str) -> OutboxRow {
        let (warehouse, sku) = split(record_key);
        OutboxRow::new(&Envelope::new(crate::SERVICE, StockLevelChanged { sku, warehouse }))
    }

    fn records(&self) -> Records {
        Records {
            table: "inventory.stock",
            key: (KeyPart::Column("warehouse"), KeyPart::Column("sku")),
            version: "version",
            changed_only: false,
        }
    }

    async fn load(
        &self,
        conn: &mut AsyncPgConnection,
        keys: &[String],
    ) -> diesel::QueryResult<Vec<Loaded<StockLevel>>> {
        let keys: Vec<(String, String)> = keys.iter().map(|k| split(k)).collect();
        let keys: Vec<(&str, &str)> = keys.iter().map(|(w, s)| (w.as_str(), s.as_str())).collect();
        // Ordered by sku: the shop's follow-up locks product rows in this order (no deadlocks
        // between batches).
        let rows = StockRow::by_warehouse_and_sku(conn, &keys).await?;
        Ok(rows
            .into_iter()
            .map(|r| Loaded {
                key: key(&r.warehouse, &r.sku),
                version: r.version,
                origin: r.last_source.map(|system| Origin { system }),
                record: StockLevel { sku: r.sku, warehouse: r.warehouse, on_hand: r.on_hand },
            })
            .collect())
    }

    fn request(&self, record: &Loaded<StockLevel>) -> OutboundRequest {
        let level = &record.record;
        match self.target {
            Target::Erp => mappers::erp::stock_level(level),
            Target::Ecommerce => mappers::shop::stock_level(level),
            Target::Pos => mappers::pos::stock_level(level),
            Target::Wms => mappers::wms::stock_level(level),
        }
    }

    fn read_request(&self, record: &Loaded<StockLevel>) -> Option<OutboundRequest> {
        let (sku, warehouse) = (&record.record.sku, &record.record.warehouse);
        Some(match self.target {
            Target::Erp => mappers::erp::read_stock_level(sku, warehouse),
            Target::Ecommerce => mappers::shop::read_stock_level(sku, warehouse),
            Target::Pos => mappers::pos::read_stock_level(sku, warehouse),
            Target::Wms => mappers::wms::read_stock_level(sku, warehouse),
        })
    }

    fn read_many_request(&self, records: &[&Loaded<StockLevel>]) -> Option<OutboundRequest> {
        let distinct = |f: fn(&StockLevel) -> &str| {
            let set: std::collections::BTreeSet<&str> =
                records.iter().map(|r| f(&r.record)).collect();
            set.into_iter().collect::<Vec<_>>()
        };
        match self.target {
            Target::Erp => Some(mappers::erp::read_stock_levels(&distinct(|l| &l.sku))),
            Target::Ecommerce => Some(mappers::shop::read_stock_levels(
                &distinct(|l| &l.sku),
                &distinct(|l| &l.warehouse),
            )),
            Target::Pos | Target::Wms => None,
        }
    }

    fn holds(&self, record: &Loaded<StockLevel>, answer: &Value) -> bool {
        let (sku, warehouse) = (record.record.sku.as_str(), record.record.warehouse.as_str());
        let found = match self.target {
            Target::Erp => mappers::erp::level_of(answer, sku, warehouse),
            Target::Ecommerce => mappers::shop::level_of(answer, sku, warehouse),
            Target::Pos => mappers::pos::level_in(answer),
            Target::Wms => mappers::wms::level_in(answer),
        };
        found == Some(record.record.on_hand)
    }

    async fn after_delivered(
        &self,
        ctx: FollowUp<'_>,
        record: &Loaded<StockLevel>,
        _answer: &Value,
    ) -> anyhow::Result<Outcome> {
        if self.target != Target::Ecommerce {
            return Ok(Outcome::Delivered(reqwest::StatusCode::OK));
        }
        shop_availability(ctx, &record.record.sku).await
    }

    fn unsettled_sql(&self) -> Option<String> {
        // Products whose availability on the shop differs from their stock (one key each).
        (self.target == Target::Ecommerce).then(|| Availability::UNSETTLED_SQL.into())
    }
}

/// Disables the product on the shop when it is out of stock everywhere, re-enables it when
/// stock returns; no request when the shop already has the right state.
async fn shop_availability(ctx: FollowUp<'_>, sku: &str) -> anyhow::Result<Outcome> {
    let FollowUp { conn, http, endpoint } = ctx;
    let availability = Availability::lock(conn, sku).await?;
    if availability.shop_available == Some(availability.in_stock) {
        return Ok(Outcome::Delivered(reqwest::StatusCode::OK));
    }
    let request = mappers::shop::product_availability(sku, availability.in_stock);
    let outcome = outbound::send(http, endpoint, &request).await;
    if matches!(outcome, Outcome::Delivered(_)) {
        Availability::confirm(conn, sku, availability.in_stock).await?;
        tracing::info!(sku, available = availability.in_stock, "shop availability changed");
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_warehouse_then_sku_and_splits_back() {
        assert_eq!(key("W1", "A/B"), "W1/A/B");
        assert_eq!(split("W1/A/B"), ("W1".into(), "A/B".into()));
    }
}
