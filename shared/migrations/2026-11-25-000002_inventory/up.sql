-- inventory-sync owns these tables and is the only writer of stock.

CREATE TABLE inventory.products (
    sku text PRIMARY KEY,
    name text NOT NULL,
    reorder_point bigint NOT NULL DEFAULT 0 CHECK (reorder_point >= 0),
    reorder_quantity bigint NOT NULL DEFAULT 0 CHECK (reorder_quantity >= 0),
    -- Availability last confirmed by the shop (NULL: never pushed).
    shop_available boolean,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE inventory.stock (
    sku text NOT NULL REFERENCES inventory.products (sku),
    warehouse text NOT NULL,
    on_hand bigint NOT NULL DEFAULT 0 CHECK (on_hand >= 0),
    reserved bigint NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    available bigint GENERATED ALWAYS AS (on_hand - reserved) STORED,
    -- Number of changes applied; targets remember the version they were last told.
    version bigint NOT NULL DEFAULT 0,
    -- Source of the latest change: that system already has this level (loop prevention).
    last_source text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sku, warehouse)
);

-- Append-only: the sum of delta per (sku, warehouse) equals stock.on_hand.
CREATE TABLE inventory.ledger (
    id bigserial PRIMARY KEY,
    source text NOT NULL,
    reference text NOT NULL,
    sku text NOT NULL,
    warehouse text NOT NULL,
    type text NOT NULL CHECK (type IN ('receipt', 'transfer_in', 'shipment', 'transfer_out', 'adjustment', 'count')),
    quantity bigint NOT NULL CHECK (quantity >= 0),
    expected_on_hand bigint,
    delta bigint NOT NULL,
    quantity_before bigint NOT NULL,
    quantity_after bigint NOT NULL CHECK (quantity_after >= 0),
    reason text,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- Idempotency: a retried adjustment finds its first answer here.
    UNIQUE (source, reference),
    FOREIGN KEY (sku, warehouse) REFERENCES inventory.stock (sku, warehouse)
);
CREATE INDEX ledger_sku_idx ON inventory.ledger (sku, warehouse, id);

CREATE RULE ledger_no_update AS ON UPDATE TO inventory.ledger DO INSTEAD NOTHING;
CREATE RULE ledger_no_delete AS ON DELETE TO inventory.ledger DO INSTEAD NOTHING;

-- What each target was last told, per sku and warehouse.
CREATE TABLE inventory.target_state (
    target text NOT NULL,
    sku text NOT NULL,
    warehouse text NOT NULL,
    pushed_version bigint NOT NULL,
    pushed_quantity bigint NOT NULL,
    pushed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (target, sku, warehouse)
);

-- Every push attempt to a target.
CREATE TABLE inventory.target_sync_log (
    id bigserial PRIMARY KEY,
    target text NOT NULL,
    sku text NOT NULL,
    warehouse text NOT NULL,
    quantity bigint NOT NULL,
    version bigint NOT NULL,
    status text NOT NULL CHECK (status IN ('synced', 'skipped', 'retrying', 'dead_lettered')),
    http_status integer,
    error text,
    attempt bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX target_sync_log_sku_idx ON inventory.target_sync_log (sku, warehouse, created_at);
