//! The diesel table definitions (`src/models/schema.rs`) agree with the migrated database:
//! every column of each fixed table by name, nothing missing either way.

use diesel::{QueryDsl, debug_query, pg::Pg};
use erp_sync::models::schema::{
    customers, invoices, order_lines, orders, products, purchase_orders, shipments,
};

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
        ("customers", columns_of!(customers)),
        ("orders", columns_of!(orders)),
        ("order_lines", columns_of!(order_lines)),
        ("invoices", columns_of!(invoices)),
        ("purchase_orders", columns_of!(purchase_orders)),
        ("shipments", columns_of!(shipments)),
        ("products", columns_of!(products)),
    ] {
        assert_eq!(columns, harness::migrated_columns(&t.db, "erp", name).await, "erp.{name}");
    }
    t.assert_settled().await;
}
