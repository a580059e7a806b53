//! The ERP's kinds of record as erp-sync keeps them, each described once: the inbound path,
//! the push engine and the bulk loads read the same [`Entity`].

/// One kind of ERP record stored in the `erp` schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entity {
    /// The ERP's webhook entity (`salesOrder`): it names the ERP's fields
    /// (`shared::mappers::erp::webhook`).
    pub webhook: &'static str,
    /// The local table in `erp`.
    pub table: &'static str,
    /// The same with its schema (`erp.orders`).
    pub qualified_table: &'static str,
    /// The table's column holding the ERP's id.
    pub key: &'static str,
    /// The ERP's list API (`GET /api/<list>?offset=&limit=`, `GET /api/<list>/<id>`), where it
    /// has one: bulk loads read it, read-backs and requeues read one record.
    pub list: Option<&'static str>,
    /// Local changes of these columns go back to the ERP (none: never pushed).
    pub pushed: &'static [&'static str],
    /// The name of its pushes (`outbound.erp.<name>`, record keys `<name>/<id>`).
    pub name: &'static str,
}

pub const ORDER: Entity = Entity {
    webhook: "salesOrder",
    table: "orders",
    qualified_table: "erp.orders",
    key: "erp_order_id",
    list: Some("orders"),
    pushed: &["status"],
    name: "order",
};
pub const CUSTOMER: Entity = Entity {
    webhook: "customer",
    table: "customers",
    qualified_table: "erp.customers",
    key: "erp_customer_id",
    list: Some("customers"),
    pushed: &["name", "email", "phone"],
    name: "customer",
};
pub const PRODUCT: Entity = Entity {
    webhook: "product",
    table: "products",
    qualified_table: "erp.products",
    key: "erp_product_id",
    list: Some("products"),
    pushed: &[],
    name: "product",
};
pub const PURCHASE_ORDER: Entity = Entity {
    webhook: "purchaseOrder",
    table: "purchase_orders",
    qualified_table: "erp.purchase_orders",
    key: "erp_po_id",
    list: None,
    pushed: &[],
    name: "purchase_order",
};
pub const INVOICE: Entity = Entity {
    webhook: "invoice",
    table: "invoices",
    qualified_table: "erp.invoices",
    key: "erp_invoice_id",
    list: None,
    pushed: &[],
    name: "invoice",
};
pub const SHIPMENT: Entity = Entity {
    webhook: "shipment",
    table: "shipments",
    qualified_table: "erp.shipments",
    key: "erp_shipment_id",
    list: None,
    pushed: &[],
    name: "shipment",
};

/// Every stored entity (the ERP's inventory messages are counts for inventory-sync, not rows
/// here).
pub const STORED: [Entity; 6] = [ORDER, CUSTOMER, PRODUCT, PURCHASE_ORDER, INVOICE, SHIPMENT];

impl Entity {
    /// The entity of a webhook entity name.
    pub fn of_webhook(webhook: &str) -> Option<Entity> {
        STORED.into_iter().find(|e| e.webhook == webhook)
    }

    /// The entity of a list name.
    pub fn of_list(list: &str) -> Option<Entity> {
        STORED.into_iter().find(|e| e.list == Some(list))
    }

    /// The entities whose local changes are pushed to the ERP.
    pub fn pushed() -> impl Iterator<Item = Entity> {
        STORED.into_iter().filter(|e| !e.pushed.is_empty())
    }

    /// The entities bulk loads read from the ERP's lists.
    pub fn loaded() -> impl Iterator<Item = Entity> {
        STORED.into_iter().filter(|e| e.list.is_some())
    }

    /// The pushed columns of a webhook entity (none for one never pushed).
    pub fn pushed_columns(webhook: &str) -> &'static [&'static str] {
        Self::of_webhook(webhook).map_or(&[], |e| e.pushed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_webhook_entity_but_inventory_is_stored_and_names_are_unique() {
        for webhook in shared::mappers::erp::webhook::ENTITIES {
            assert_eq!(Entity::of_webhook(webhook).is_some(), webhook != "inventory", "{webhook}");
        }
        let names: std::collections::BTreeSet<_> = STORED.iter().map(|e| e.name).collect();
        assert_eq!(names.len(), STORED.len());
        assert_eq!(Entity::pushed().map(|e| e.name).collect::<Vec<_>>(), ["order", "customer"]);
        assert_eq!(Entity::of_list("products"), Some(PRODUCT));
    }
}
