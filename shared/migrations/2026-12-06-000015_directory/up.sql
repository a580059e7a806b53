-- user-sync's local directory: users and groups as their sources provisioned them (SCIM clients,
-- LDAP), memberships with who made them, and each source's sync cursor.

-- A user: its SCIM representation without `id` and `meta` (`resource`), and the columns lists,
-- filters and uniqueness need. userName is unique per source, case-insensitively (RFC 7643).
CREATE TABLE directory.users (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    source text NOT NULL,
    user_name text NOT NULL,
    external_id text,
    active boolean NOT NULL DEFAULT true,
    resource jsonb NOT NULL,
    -- `meta.version` (the ETag): bumped by every change.
    version bigint NOT NULL DEFAULT 1,
    -- An LDAP entry's DN (group members name them).
    dn text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- The emails lower-cased, for the lookups by email value that Entra makes (a containment test
-- the GIN index answers; the exact, case-insensitive condition still decides).
ALTER TABLE directory.users ADD COLUMN emails_lower jsonb
    GENERATED ALWAYS AS (lower(coalesce(resource -> 'emails', '[]'::jsonb)::text)::jsonb) STORED;
CREATE INDEX users_emails ON directory.users USING gin (emails_lower jsonb_path_ops);
CREATE UNIQUE INDEX users_user_name ON directory.users (source, lower(user_name));
-- userName prefixes (`sw`), the search a people picker makes.
CREATE INDEX users_user_name_prefix ON directory.users (source, lower(user_name) text_pattern_ops);
CREATE INDEX users_external_id ON directory.users (source, external_id);
CREATE UNIQUE INDEX users_dn ON directory.users (source, lower(dn)) WHERE dn IS NOT NULL;

CREATE TABLE directory.groups (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    source text NOT NULL,
    display_name text NOT NULL,
    external_id text,
    resource jsonb NOT NULL,
    version bigint NOT NULL DEFAULT 1,
    dn text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX groups_display_name ON directory.groups (source, lower(display_name));
CREATE UNIQUE INDEX groups_dn ON directory.groups (source, lower(dn)) WHERE dn IS NOT NULL;

-- Who made a membership: `scim` (the group's identity provider), `ldap`, or `local` (anyone
-- else, the default for plain SQL): memberships made outside the group's source are drift.
CREATE TABLE directory.memberships (
    group_id uuid NOT NULL REFERENCES directory.groups (id) ON DELETE CASCADE,
    user_id uuid NOT NULL REFERENCES directory.users (id) ON DELETE CASCADE,
    origin text NOT NULL DEFAULT 'local',
    added_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX memberships_user ON directory.memberships (user_id);

-- Each pulled source's cursor (LDAP: the highest modifyTimestamp or uSNChanged seen).
CREATE TABLE directory.sources (
    id text PRIMARY KEY,
    kind text NOT NULL,
    cursor jsonb NOT NULL DEFAULT '{}',
    last_sync_at timestamptz,
    last_full_at timestamptz
);
