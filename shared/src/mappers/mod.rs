//! Pure conversions between the external systems' formats and the canonical records. No I/O:
//! connectors call these and send the result with [`crate::outbound`].

pub mod crm;
pub mod erp;
pub mod fields;
pub mod pos;
pub mod shop;
pub mod wms;

/// `value` as one URL path segment: every byte outside RFC 3986's unreserved set is
/// percent-encoded, so an identifier can never add segments, a query or a fragment.
pub fn path_segment(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    //! Properties every mapper keeps, for any identifiers and quantities.

    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;
    use crate::schemas::inventory::StockLevel;

    fn decode(segment: &str) -> Option<String> {
        let bytes = segment.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).ok()
    }

    fn level() -> impl Strategy<Value = StockLevel> {
        (any::<String>(), any::<String>(), 0..=i64::MAX)
            .prop_map(|(sku, warehouse, on_hand)| StockLevel { sku, warehouse, on_hand })
    }

    type StockMapper = fn(&StockLevel) -> crate::outbound::OutboundRequest;

    /// (mapper, field names of sku, warehouse and quantity in its body)
    const STOCK_MAPPERS: [(StockMapper, [&str; 3]); 4] = [
        (erp::stock_level, ["sku", "warehouseCode", "qtyOnHand"]),
        (shop::stock_level, ["inventory_item_id", "location_id", "available"]),
        (pos::stock_level, ["item_id", "location_id", "quantity"]),
        (wms::stock_level, ["sku", "location", "qty"]),
    ];

    proptest! {
        #[test]
        fn a_path_segment_is_unreserved_characters_and_decodes_back(value in any::<String>()) {
            let segment = path_segment(&value);
            prop_assert!(segment.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)));
            prop_assert_eq!(decode(&segment), Some(value));
        }

        #[test]
        fn every_target_body_carries_the_level_exactly(level in level()) {
            for (map, [sku, warehouse, quantity]) in STOCK_MAPPERS {
                let request = map(&level);
                prop_assert_eq!(&request.body[sku], &Value::from(level.sku.clone()));
                prop_assert_eq!(&request.body[warehouse], &Value::from(level.warehouse.clone()));
                prop_assert_eq!(&request.body[quantity], &Value::from(level.on_hand));
                prop_assert!(request.path.starts_with('/'));
                prop_assert!(!request.path.contains(['?', '#', ' ']), "{}", request.path);
            }
        }

        #[test]
        fn every_read_back_is_a_get_whose_parameters_decode_to_the_record(level in level()) {
            type Read = fn(&str, &str) -> crate::outbound::OutboundRequest;
            for read in [erp::read_stock_level as Read, shop::read_stock_level, pos::read_stock_level, wms::read_stock_level] {
                let request = read(&level.sku, &level.warehouse);
                prop_assert_eq!(&request.method, &reqwest::Method::GET);
                prop_assert!(request.body.is_null());
                prop_assert!(!request.path.contains(['#', ' ']), "{}", request.path);
                let (path, query) = request.path.split_once('?').unwrap_or((request.path.as_str(), ""));
                let mut values: Vec<String> = query.split('&').filter_map(|kv| kv.split_once('=')).filter_map(|(_, v)| decode(v)).collect();
                values.extend(path.rsplit('/').next().and_then(decode));
                prop_assert!(values.contains(&level.sku), "{} lacks the sku", request.path);
                prop_assert!(values.contains(&level.warehouse), "{} lacks the warehouse", request.path);
            }
        }

        #[test]
        fn a_level_read_back_is_the_level_pushed(level in level()) {
            // What each system answers to a read after our push (the sandbox's formats).
            let (sku, warehouse) = (level.sku.as_str(), level.warehouse.as_str());
            let erp = erp::stock_level(&level).body;
            let shop = serde_json::json!({"inventory_levels": [shop::stock_level(&level).body]});
            prop_assert_eq!(erp::level_of(&erp, sku, warehouse), Some(level.on_hand));
            prop_assert_eq!(erp::level_of(&serde_json::json!({"data": [erp.clone()]}), sku, warehouse), Some(level.on_hand));
            prop_assert_eq!(shop::level_of(&shop, sku, warehouse), Some(level.on_hand));
            prop_assert_eq!(pos::level_in(&pos::stock_level(&level).body), Some(level.on_hand));
            prop_assert_eq!(wms::level_in(&wms::stock_level(&level).body), Some(level.on_hand));
            // Another record's figure is not ours.
            let other = format!("{warehouse}x");
            prop_assert_eq!(erp::level_of(&erp, sku, &other), None);
            prop_assert_eq!(shop::level_of(&shop, sku, &other), None);
            prop_assert_eq!(shop::level_of(&serde_json::json!({"inventory_levels": []}), sku, warehouse), None);
        }

        #[test]
        fn a_batch_read_names_every_record(levels in proptest::collection::vec(level(), 1..5)) {
            let skus: Vec<&str> = levels.iter().map(|l| l.sku.as_str()).collect();
            let warehouses: Vec<&str> = levels.iter().map(|l| l.warehouse.as_str()).collect();
            for request in [erp::read_stock_levels(&skus), shop::read_stock_levels(&skus, &warehouses)] {
                prop_assert_eq!(&request.method, &reqwest::Method::GET);
                let query = request.path.split_once('?').map(|(_, q)| q).unwrap_or_default();
                let values: Vec<String> = query
                    .split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .flat_map(|(_, v)| v.split(',').filter_map(decode).collect::<Vec<_>>())
                    .collect();
                for sku in &skus {
                    prop_assert!(values.iter().any(|v| v == sku), "{} lacks {}", request.path, sku);
                }
            }
        }

        #[test]
        fn the_erp_path_names_the_sku_as_one_segment(level in level()) {
            let path = erp::stock_level(&level).path;
            let segment = path.strip_prefix("/api/inventory/").unwrap_or_default();
            prop_assert!(!segment.contains('/'));
            prop_assert_eq!(decode(segment), Some(level.sku));
        }

        #[test]
        fn erp_records_round_trip_through_the_push_format(level in level()) {
            prop_assume!(!level.sku.is_empty() && !level.warehouse.is_empty());
            prop_assert_eq!(erp::inventory_record(&erp::stock_level(&level).body), Ok(level));
        }

        #[test]
        fn shop_availability_names_the_product_as_one_segment(sku in any::<String>(), available: bool) {
            let request = shop::product_availability(&sku, available);
            let file = request.path.rsplit('/').next().unwrap_or_default();
            prop_assert_eq!(decode(file.strip_suffix(".json").unwrap_or_default()), Some(sku));
            prop_assert_eq!(&request.body["product"]["available"], &Value::from(available));
        }
    }
}
