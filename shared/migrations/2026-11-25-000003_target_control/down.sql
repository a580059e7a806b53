DROP TABLE inventory.stopped_targets;
ALTER TABLE inventory.stock DROP COLUMN last_change_absolute;
