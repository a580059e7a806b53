//! diesel table definitions of the bulk job engine's fixed tables (schema `bulk`). Kept current
//! by hand; `shared/tests/platform/db.rs` fails when a column here and the migrated database
//! disagree.

diesel::table! {
    bulk.jobs (id) {
        id -> Text,
        service -> Text,
        source -> Text,
        target -> Text,
        entity -> Text,
        batch_size -> Int4,
        status -> Text,
        checkpoint -> Nullable<Jsonb>,
        pages -> Int8,
        total_records -> Int8,
        processed_records -> Int8,
        error_count -> Int8,
        error -> Nullable<Text>,
        lease_owner -> Nullable<Text>,
        lease_until -> Nullable<Timestamptz>,
        attempts -> Int4,
        created_at -> Timestamptz,
        started_at -> Nullable<Timestamptz>,
        updated_at -> Timestamptz,
        completed_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    bulk.job_errors (id) {
        id -> Int8,
        job_id -> Text,
        record_id -> Text,
        error -> Text,
        created_at -> Timestamptz,
    }
}

diesel::joinable!(job_errors -> jobs (job_id));
diesel::allow_tables_to_appear_in_same_query!(jobs, job_errors);
