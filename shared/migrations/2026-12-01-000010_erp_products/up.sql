-- The ERP's product catalogue, as its bulk load brings it (the ERP does not report products by
-- webhook). Stock is inventory-sync's, not here.
CREATE TABLE erp.products (
    id bigserial PRIMARY KEY,
    erp_product_id text NOT NULL UNIQUE,
    name text NOT NULL,
    description text,
    unit_price numeric,
    currency text,
    erp_updated_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
