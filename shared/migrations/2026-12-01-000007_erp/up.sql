-- erp-sync's tables: what the ERP tells us about customers, sales orders (with their lines),
-- invoices, purchase orders and shipments. Each row is keyed by the ERP's id; `erp_updated_at`
-- is the time of the newest ERP event applied to it.

CREATE TABLE erp.customers (
    id bigserial PRIMARY KEY,
    erp_customer_id text NOT NULL UNIQUE,
    name text,
    email text,
    phone text,
    erp_updated_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE erp.orders (
    id bigserial PRIMARY KEY,
    erp_order_id text NOT NULL UNIQUE,
    order_number text NOT NULL,
    -- The ERP's customer id.
    customer_id text,
    order_date date,
    ship_date date,
    status text NOT NULL,
    subtotal numeric,
    tax numeric,
    shipping numeric,
    total numeric,
    currency text,
    delivered_at timestamptz,
    erp_updated_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE erp.order_lines (
    order_id bigint NOT NULL REFERENCES erp.orders (id) ON DELETE CASCADE,
    line_number integer NOT NULL,
    sku text NOT NULL,
    description text,
    quantity numeric NOT NULL,
    unit_price numeric,
    discount numeric,
    total numeric,
    PRIMARY KEY (order_id, line_number)
);

CREATE TABLE erp.invoices (
    id bigserial PRIMARY KEY,
    erp_invoice_id text NOT NULL UNIQUE,
    invoice_number text,
    -- The ERP's order and customer ids.
    order_id text,
    customer_id text,
    status text NOT NULL,
    total numeric,
    currency text,
    issue_date date,
    due_date date,
    erp_updated_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE erp.purchase_orders (
    id bigserial PRIMARY KEY,
    erp_po_id text NOT NULL UNIQUE,
    po_number text,
    supplier text,
    status text NOT NULL,
    total numeric,
    currency text,
    expected_date date,
    erp_updated_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE erp.shipments (
    id bigserial PRIMARY KEY,
    erp_shipment_id text NOT NULL UNIQUE,
    -- The ERP's order id.
    order_id text NOT NULL,
    carrier text,
    tracking_number text,
    ship_date date,
    estimated_delivery date,
    status text NOT NULL,
    erp_updated_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
