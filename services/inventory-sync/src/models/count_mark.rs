//! `inventory.count_marks`: the last count applied from each source per sku and warehouse,
//! with the source's own time and version of it. Read and written under the stock row locks
//! of the adjuster's transaction.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use diesel::{
    QueryResult, QueryableByName,
    sql_types::{Array, BigInt, Nullable, Text, Timestamptz},
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::domain::plan::{MarkKey, Stamp};

#[derive(QueryableByName)]
pub struct CountMark {
    #[diesel(sql_type = Text)]
    source: String,
    #[diesel(sql_type = Text)]
    sku: String,
    #[diesel(sql_type = Text)]
    warehouse: String,
    #[diesel(sql_type = Timestamptz)]
    counted_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<BigInt>)]
    version: Option<i64>,
}

impl CountMark {
    /// The marks of `keys` (source, sku, warehouse); keys never counted are absent.
    pub async fn of(
        conn: &mut AsyncPgConnection,
        keys: &[(&str, &str, &str)],
    ) -> QueryResult<HashMap<MarkKey, Stamp>> {
        let sources: Vec<&str> = keys.iter().map(|k| k.0).collect();
        let skus: Vec<&str> = keys.iter().map(|k| k.1).collect();
        let warehouses: Vec<&str> = keys.iter().map(|k| k.2).collect();
        let rows: Vec<CountMark> = diesel::sql_query(
            "SELECT source, sku, warehouse, counted_at, version FROM inventory.count_marks \
             WHERE (source, sku, warehouse) IN \
             (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]))",
        )
        .bind::<Array<Text>, _>(&sources)
        .bind::<Array<Text>, _>(&skus)
        .bind::<Array<Text>, _>(&warehouses)
        .load(conn)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                ((r.source, r.sku, r.warehouse), Stamp { at: r.counted_at, version: r.version })
            })
            .collect())
    }

    /// Records the counts just applied (their stamp and reference), one per key.
    pub async fn save(
        conn: &mut AsyncPgConnection,
        marks: &BTreeMap<MarkKey, (&Stamp, &str)>,
    ) -> QueryResult<()> {
        let sources: Vec<&str> = marks.keys().map(|k| k.0.as_str()).collect();
        let skus: Vec<&str> = marks.keys().map(|k| k.1.as_str()).collect();
        let warehouses: Vec<&str> = marks.keys().map(|k| k.2.as_str()).collect();
        let times: Vec<DateTime<Utc>> = marks.values().map(|(s, _)| s.at).collect();
        let versions: Vec<Option<i64>> = marks.values().map(|(s, _)| s.version).collect();
        let references: Vec<&str> = marks.values().map(|(_, r)| *r).collect();
        diesel::sql_query(
            "INSERT INTO inventory.count_marks (source, sku, warehouse, counted_at, version, reference) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::int8[], $6::text[]) \
             ON CONFLICT (source, sku, warehouse) DO UPDATE SET counted_at = excluded.counted_at, \
             version = excluded.version, reference = excluded.reference, applied_at = now()",
        )
        .bind::<Array<Text>, _>(&sources)
        .bind::<Array<Text>, _>(&skus)
        .bind::<Array<Text>, _>(&warehouses)
        .bind::<Array<Timestamptz>, _>(&times)
        .bind::<Array<Nullable<BigInt>>, _>(&versions)
        .bind::<Array<Text>, _>(&references)
        .execute(conn)
        .await?;
        Ok(())
    }
}
