//! diesel table definitions of the `erp` schema's fixed tables. Kept current by hand;
//! `tests/api/schema.rs` fails when a column here and the migrated database disagree.

diesel::table! {
    erp.customers (id) {
        id -> Int8,
        erp_customer_id -> Text,
        name -> Nullable<Text>,
        email -> Nullable<Text>,
        phone -> Nullable<Text>,
        erp_updated_at -> Timestamptz,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        origin -> Text,
        local_version -> Int8,
        synced_version -> Int8,
        local_changed_at -> Nullable<Timestamptz>,
        synced -> Jsonb,
        held -> Jsonb,
        conflict_id -> Nullable<Uuid>,
        pushed_over -> Jsonb,
        pushed_erp_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    erp.orders (id) {
        id -> Int8,
        erp_order_id -> Text,
        order_number -> Text,
        customer_id -> Nullable<Text>,
        order_date -> Nullable<Date>,
        ship_date -> Nullable<Date>,
        status -> Text,
        subtotal -> Nullable<Numeric>,
        tax -> Nullable<Numeric>,
        shipping -> Nullable<Numeric>,
        total -> Nullable<Numeric>,
        currency -> Nullable<Text>,
        delivered_at -> Nullable<Timestamptz>,
        erp_updated_at -> Timestamptz,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        origin -> Text,
        local_version -> Int8,
        synced_version -> Int8,
        local_changed_at -> Nullable<Timestamptz>,
        synced -> Jsonb,
        held -> Jsonb,
        conflict_id -> Nullable<Uuid>,
        pushed_over -> Jsonb,
        pushed_erp_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    erp.order_lines (order_id, line_number) {
        order_id -> Int8,
        line_number -> Int4,
        sku -> Text,
        description -> Nullable<Text>,
        quantity -> Numeric,
        unit_price -> Nullable<Numeric>,
        discount -> Nullable<Numeric>,
        total -> Nullable<Numeric>,
    }
}

diesel::table! {
    erp.invoices (id) {
        id -> Int8,
        erp_invoice_id -> Text,
        invoice_number -> Nullable<Text>,
        order_id -> Nullable<Text>,
        customer_id -> Nullable<Text>,
        status -> Text,
        total -> Nullable<Numeric>,
        currency -> Nullable<Text>,
        issue_date -> Nullable<Date>,
        due_date -> Nullable<Date>,
        erp_updated_at -> Timestamptz,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    erp.purchase_orders (id) {
        id -> Int8,
        erp_po_id -> Text,
        po_number -> Nullable<Text>,
        supplier -> Nullable<Text>,
        status -> Text,
        total -> Nullable<Numeric>,
        currency -> Nullable<Text>,
        expected_date -> Nullable<Date>,
        erp_updated_at -> Timestamptz,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    erp.shipments (id) {
        id -> Int8,
        erp_shipment_id -> Text,
        order_id -> Text,
        carrier -> Nullable<Text>,
        tracking_number -> Nullable<Text>,
        ship_date -> Nullable<Date>,
        estimated_delivery -> Nullable<Date>,
        status -> Text,
        erp_updated_at -> Timestamptz,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    erp.products (id) {
        id -> Int8,
        erp_product_id -> Text,
        name -> Text,
        description -> Nullable<Text>,
        unit_price -> Nullable<Numeric>,
        currency -> Nullable<Text>,
        erp_updated_at -> Timestamptz,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}
