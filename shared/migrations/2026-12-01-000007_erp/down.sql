DROP TABLE erp.order_lines, erp.orders, erp.customers, erp.invoices, erp.purchase_orders, erp.shipments;
