//! diesel table definitions of the `crm` schema's fixed tables. Kept current by hand;
//! `tests/api/schema.rs` fails when a column here and the migrated database disagree.

diesel::table! {
    crm.contacts (id) {
        id -> Int8,
        external_id -> Nullable<Text>,
        external_source -> Nullable<Text>,
        first_name -> Nullable<Text>,
        last_name -> Nullable<Text>,
        email -> Nullable<Text>,
        phone -> Nullable<Text>,
        company -> Nullable<Text>,
        title -> Nullable<Text>,
        source -> Nullable<Text>,
        status -> Nullable<Text>,
        deleted_at -> Nullable<Timestamptz>,
        deleted_from -> Nullable<Text>,
        origin -> Text,
        local_version -> Int8,
        local_changed_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        synced_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    crm.accounts (id) {
        id -> Int8,
        external_id -> Nullable<Text>,
        external_source -> Nullable<Text>,
        company_name -> Nullable<Text>,
        industry -> Nullable<Text>,
        website -> Nullable<Text>,
        annual_revenue -> Nullable<Numeric>,
        employee_count -> Nullable<Int4>,
        billing_address -> Nullable<Jsonb>,
        deleted_at -> Nullable<Timestamptz>,
        deleted_from -> Nullable<Text>,
        origin -> Text,
        local_version -> Int8,
        local_changed_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        synced_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    crm.opportunities (id) {
        id -> Int8,
        external_id -> Nullable<Text>,
        external_source -> Nullable<Text>,
        name -> Nullable<Text>,
        account_id -> Nullable<Text>,
        amount -> Nullable<Numeric>,
        stage -> Nullable<Text>,
        probability -> Nullable<Int4>,
        close_date -> Nullable<Date>,
        deleted_at -> Nullable<Timestamptz>,
        deleted_from -> Nullable<Text>,
        origin -> Text,
        local_version -> Int8,
        local_changed_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        synced_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    crm.sync_state (entity, record_id) {
        entity -> Text,
        record_id -> Int8,
        base -> Jsonb,
        synced_version -> Int8,
        remote_updated_at -> Nullable<Timestamptz>,
        field_times -> Jsonb,
        synced_at -> Timestamptz,
        held -> Jsonb,
        conflict_id -> Nullable<Uuid>,
    }
}

diesel::table! {
    crm.reconcile_cursors (entity) {
        entity -> Text,
        modified_after -> Timestamptz,
        updated_at -> Timestamptz,
    }
}
