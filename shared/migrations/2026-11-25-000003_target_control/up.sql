-- Whether the latest change set the level outright (count/adjustment). Its source then knows
-- the current level even if it missed earlier changes from other systems.
ALTER TABLE inventory.stock ADD COLUMN last_change_absolute boolean NOT NULL DEFAULT false;

-- Targets that answered 410 Gone: nothing is pushed to them until an operator resumes them,
-- which queues every level they have not been told.
CREATE TABLE inventory.stopped_targets (
    target text PRIMARY KEY,
    reason text NOT NULL,
    stopped_at timestamptz NOT NULL DEFAULT now()
);
