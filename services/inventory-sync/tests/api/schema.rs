//! The diesel table definitions (`src/models/schema.rs`) agree with the migrated database:
//! every column of each fixed table by name, nothing missing either way.

use std::collections::BTreeSet;

use diesel::{QueryDsl, debug_query, pg::Pg, sql_types::Text};
use diesel_async::RunQueryDsl;
use inventory_sync::models::schema::{ledger, products, stock};

use crate::helpers::spawn;

/// Column names of a table definition, read from the SQL diesel generates for all its columns.
fn defined(sql: String) -> BTreeSet<String> {
    let columns = sql.split(" FROM ").next().unwrap_or_default().trim_start_matches("SELECT ");
    columns
        .split(", ")
        .map(|c| c.rsplit('.').next().unwrap_or(c).trim_matches('"').to_owned())
        .collect()
}

macro_rules! columns_of {
    ($table:ident) => {
        defined(debug_query::<Pg, _>(&$table::table.select($table::all_columns)).to_string())
    };
}

#[derive(diesel::QueryableByName)]
struct Column {
    #[diesel(sql_type = Text)]
    column_name: String,
}

async fn migrated(conn: &mut diesel_async::AsyncPgConnection, table: &str) -> BTreeSet<String> {
    diesel::sql_query(
        "SELECT column_name::text AS column_name FROM information_schema.columns \
         WHERE table_schema = 'inventory' AND table_name = $1",
    )
    .bind::<Text, _>(table)
    .load::<Column>(conn)
    .await
    .unwrap()
    .into_iter()
    .map(|c| c.column_name)
    .collect()
}

#[tokio::test]
async fn the_table_definitions_match_the_migrated_database() {
    let t = spawn().await;
    let mut conn = t.db.connect().await;

    for (name, columns) in [
        ("products", columns_of!(products)),
        ("stock", columns_of!(stock)),
        ("ledger", columns_of!(ledger)),
    ] {
        assert_eq!(columns, migrated(&mut conn, name).await, "inventory.{name}");
    }
    t.assert_settled(0).await;
}
