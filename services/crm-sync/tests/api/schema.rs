//! The diesel table definitions (`src/models/schema.rs`) agree with the migrated database:
//! every column of each fixed table by name, nothing missing either way.

use crm_sync::models::schema::{accounts, contacts, opportunities, reconcile_cursors, sync_state};
use diesel::{QueryDsl, debug_query, pg::Pg};

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
        ("contacts", columns_of!(contacts)),
        ("accounts", columns_of!(accounts)),
        ("opportunities", columns_of!(opportunities)),
        ("sync_state", columns_of!(sync_state)),
        ("reconcile_cursors", columns_of!(reconcile_cursors)),
    ] {
        assert_eq!(columns, harness::migrated_columns(&t.db, "crm", name).await, "crm.{name}");
    }
    t.assert_settled(0).await;
}
