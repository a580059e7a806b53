-- Whether the latest change set the level outright (count/adjustment). Its source then knows
-- the current level even if it missed earlier changes from other systems.
ALTER TABLE inventory.stock ADD COLUMN last_change_absolute boolean NOT NULL DEFAULT false;
