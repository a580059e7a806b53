DROP TABLE erp.products;
