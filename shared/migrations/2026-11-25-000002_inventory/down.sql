DROP TABLE inventory.target_sync_log;
DROP TABLE inventory.target_state;
DROP TABLE inventory.ledger;
DROP TABLE inventory.stock;
DROP TABLE inventory.products;
