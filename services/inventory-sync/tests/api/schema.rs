//! The diesel table definitions (`src/models/schema.rs`) agree with the migrated database:
//! every column of each fixed table by name, nothing missing either way.

use diesel::{QueryDsl, debug_query, pg::Pg};
use inventory_sync::models::schema::{count_marks, ledger, products, stock};

use crate::helpers::spawn;

macro_rules! columns_of {
    ($table:ident) => {
        harness::defined_columns(
            &debug_query::<Pg, _>(&$table::table.select($table::all_columns)).to_string(),
        )
    };
}

#[tokio::test]
async fn the_table_definitions_match_the_migrated_database() {
    let t = spawn().await;

    for (name, columns) in [
        ("products", columns_of!(products)),
        ("stock", columns_of!(stock)),
        ("ledger", columns_of!(ledger)),
        ("count_marks", columns_of!(count_marks)),
    ] {
        assert_eq!(
            columns,
            harness::migrated_columns(&t.db, "inventory", name).await,
            "inventory.{name}"
        );
    }
    t.assert_settled(0).await;
}
