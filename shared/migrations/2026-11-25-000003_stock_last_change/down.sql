ALTER TABLE inventory.stock DROP COLUMN last_change_absolute;
