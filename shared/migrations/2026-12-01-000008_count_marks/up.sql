-- The last count inventory-sync applied from each system, per sku and warehouse, with that
-- system's own time (and version) of it: a count that is not newer is not applied.
CREATE TABLE inventory.count_marks (
    source text NOT NULL,
    sku text NOT NULL,
    warehouse text NOT NULL,
    counted_at timestamptz NOT NULL,
    version bigint,
    reference text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, sku, warehouse)
);
