//! diesel table definitions of the `inventory` schema's fixed tables. Kept current by hand;
//! `tests/api/schema.rs` fails when a column here and the migrated database disagree.

diesel::table! {
    inventory.products (sku) {
        sku -> Text,
        name -> Text,
        reorder_point -> Int8,
        reorder_quantity -> Int8,
        shop_available -> Nullable<Bool>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    inventory.stock (sku, warehouse) {
        sku -> Text,
        warehouse -> Text,
        on_hand -> Int8,
        reserved -> Int8,
        /// Generated (`on_hand - reserved`): read only.
        available -> Int8,
        version -> Int8,
        last_source -> Nullable<Text>,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    inventory.ledger (id) {
        id -> Int8,
        source -> Text,
        reference -> Text,
        sku -> Text,
        warehouse -> Text,
        #[sql_name = "type"]
        kind -> Text,
        quantity -> Int8,
        expected_on_hand -> Nullable<Int8>,
        delta -> Int8,
        quantity_before -> Int8,
        quantity_after -> Int8,
        reason -> Nullable<Text>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    inventory.count_marks (source, sku, warehouse) {
        source -> Text,
        sku -> Text,
        warehouse -> Text,
        counted_at -> Timestamptz,
        version -> Nullable<Int8>,
        reference -> Text,
        applied_at -> Timestamptz,
    }
}

diesel::allow_tables_to_appear_in_same_query!(products, stock, ledger, count_marks);
