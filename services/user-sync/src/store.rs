//! The `directory` schema: users and groups as JSON resources with the columns lists and
//! uniqueness need, memberships with their origin, and the events every change publishes
//! (`directory.user.<change>` / `directory.group.<change>` and `sync.events`) through the outbox
//! in the change's own transaction.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, BigInt, Bool, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde_json::Value;
use shared::{
    bus::outbox::{self, OutboxRow},
    schemas::{
        Envelope,
        directory::{GroupChanged, UserChanged},
        sync::{Direction, SyncRecorded, SyncStatus},
    },
};
use uuid::Uuid;

use crate::scim::filter::Kind;

/// A stored user or group.
#[derive(Clone, Debug, diesel::QueryableByName)]
pub struct Row {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = Text)]
    pub source: String,
    #[diesel(sql_type = Jsonb)]
    pub resource: Value,
    #[diesel(sql_type = BigInt)]
    pub version: i64,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    pub updated_at: DateTime<Utc>,
}

/// A write that collides with another user's userName (case-insensitively).
#[derive(Debug)]
pub enum WriteError {
    Taken,
    Database(diesel::result::Error),
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::Taken => write!(f, "the name is already taken"),
            WriteError::Database(e) => write!(f, "database: {e}"),
        }
    }
}

impl std::error::Error for WriteError {}

impl From<diesel::result::Error> for WriteError {
    fn from(e: diesel::result::Error) -> Self {
        match e {
            diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _,
            ) => WriteError::Taken,
            other => WriteError::Database(other),
        }
    }
}

pub fn table(kind: Kind) -> &'static str {
    match kind {
        Kind::User => "directory.users",
        Kind::Group => "directory.groups",
    }
}

const COLUMNS: &str = "r.id, r.source, r.resource, r.version, r.created_at, r.updated_at";

/// One page of a list: the total matching and the rows. `condition` is SQL over `r` reading
/// its values from `$1` (jsonb); `order` an SQL expression over `r`.
#[allow(clippy::too_many_arguments, reason = "the list's query parameters, each one")]
pub async fn list(
    conn: &mut AsyncPgConnection,
    kind: Kind,
    source: &str,
    condition: &str,
    values: Value,
    order: &str,
    offset: i64,
    limit: i64,
) -> diesel::QueryResult<(i64, Vec<Row>)> {
    #[derive(diesel::QueryableByName)]
    struct Total {
        #[diesel(sql_type = BigInt)]
        total: i64,
    }
    let table = table(kind);
    let total: Total = diesel::sql_query(format!(
        "SELECT count(*) AS total FROM {table} r WHERE r.source = $2 AND ({condition})"
    ))
    .bind::<Jsonb, _>(&values)
    .bind::<Text, _>(source)
    .get_result(conn)
    .await?;
    if limit == 0 || total.total == 0 {
        return Ok((total.total, Vec::new()));
    }
    let rows = diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM {table} r WHERE r.source = $2 AND ({condition}) \
         ORDER BY {order}, r.id OFFSET $3 LIMIT $4"
    ))
    .bind::<Jsonb, _>(&values)
    .bind::<Text, _>(source)
    .bind::<BigInt, _>(offset)
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await?;
    Ok((total.total, rows))
}

/// One resource of `source` (`lock`: for update).
pub async fn get(
    conn: &mut AsyncPgConnection,
    kind: Kind,
    source: &str,
    id: Uuid,
    lock: bool,
) -> diesel::QueryResult<Option<Row>> {
    let rows: Vec<Row> = diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM {} r WHERE r.id = $1 AND r.source = $2{}",
        table(kind),
        if lock { " FOR UPDATE" } else { "" }
    ))
    .bind::<SqlUuid, _>(id)
    .bind::<Text, _>(source)
    .load(conn)
    .await?;
    Ok(rows.into_iter().next())
}

fn text(resource: &Value, name: &str) -> Option<String> {
    resource.get(name).and_then(Value::as_str).map(str::to_owned)
}

/// Stores a new user or group (its `dn` for LDAP entries).
pub async fn insert(
    conn: &mut AsyncPgConnection,
    kind: Kind,
    source: &str,
    resource: &Value,
    dn: Option<&str>,
) -> Result<Row, WriteError> {
    let row: Row = match kind {
        Kind::User => diesel::sql_query(format!(
            "INSERT INTO directory.users AS r (source, user_name, external_id, active, resource, dn) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
        ))
        .bind::<Text, _>(source)
        .bind::<Text, _>(text(resource, "userName").unwrap_or_default())
        .bind::<Nullable<Text>, _>(text(resource, "externalId"))
        .bind::<Bool, _>(resource.get("active").and_then(Value::as_bool).unwrap_or(true))
        .bind::<Jsonb, _>(resource)
        .bind::<Nullable<Text>, _>(dn)
        .get_result(conn)
        .await?,
        Kind::Group => {
            diesel::sql_query(format!(
                "INSERT INTO directory.groups AS r (source, display_name, external_id, resource, dn) \
             VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
            ))
            .bind::<Text, _>(source)
            .bind::<Text, _>(text(resource, "displayName").unwrap_or_default())
            .bind::<Nullable<Text>, _>(text(resource, "externalId"))
            .bind::<Jsonb, _>(resource)
            .bind::<Nullable<Text>, _>(dn)
            .get_result(conn)
            .await?
        }
    };
    Ok(row)
}

/// Replaces a stored resource (its version bumped).
pub async fn replace(
    conn: &mut AsyncPgConnection,
    kind: Kind,
    id: Uuid,
    resource: &Value,
) -> Result<Row, WriteError> {
    let row: Row = match kind {
        Kind::User => diesel::sql_query(format!(
            "UPDATE directory.users r SET user_name = $2, external_id = $3, active = $4, resource = $5, \
             version = version + 1, updated_at = now() WHERE id = $1 RETURNING {COLUMNS}"
        ))
        .bind::<SqlUuid, _>(id)
        .bind::<Text, _>(text(resource, "userName").unwrap_or_default())
        .bind::<Nullable<Text>, _>(text(resource, "externalId"))
        .bind::<Bool, _>(resource.get("active").and_then(Value::as_bool).unwrap_or(true))
        .bind::<Jsonb, _>(resource)
        .get_result(conn)
        .await?,
        Kind::Group => diesel::sql_query(format!(
            "UPDATE directory.groups r SET display_name = $2, external_id = $3, resource = $4, \
             version = version + 1, updated_at = now() WHERE id = $1 RETURNING {COLUMNS}"
        ))
        .bind::<SqlUuid, _>(id)
        .bind::<Text, _>(text(resource, "displayName").unwrap_or_default())
        .bind::<Nullable<Text>, _>(text(resource, "externalId"))
        .bind::<Jsonb, _>(resource)
        .get_result(conn)
        .await?,
    };
    Ok(row)
}

pub async fn delete(
    conn: &mut AsyncPgConnection,
    kind: Kind,
    id: Uuid,
) -> diesel::QueryResult<usize> {
    diesel::sql_query(format!("DELETE FROM {} WHERE id = $1", table(kind)))
        .bind::<SqlUuid, _>(id)
        .execute(conn)
        .await
}

/// A group's or a user's counterpart in a membership: its id and name.
#[derive(Clone, Debug, diesel::QueryableByName)]
pub struct Member {
    #[diesel(sql_type = SqlUuid)]
    pub owner: Uuid,
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = Text)]
    pub origin: String,
}

/// The members of groups (`owner` the group), or the groups of users (`owner` the user).
pub async fn memberships(
    conn: &mut AsyncPgConnection,
    kind: Kind,
    ids: &[Uuid],
) -> diesel::QueryResult<BTreeMap<Uuid, Vec<Member>>> {
    if ids.is_empty() {
        return Ok(BTreeMap::new());
    }
    let sql = match kind {
        Kind::Group => {
            "SELECT m.group_id AS owner, u.id, u.user_name AS name, m.origin FROM directory.memberships m \
                        JOIN directory.users u ON u.id = m.user_id WHERE m.group_id = ANY($1) ORDER BY u.user_name"
        }
        Kind::User => {
            "SELECT m.user_id AS owner, g.id, g.display_name AS name, m.origin FROM directory.memberships m \
                       JOIN directory.groups g ON g.id = m.group_id WHERE m.user_id = ANY($1) ORDER BY g.display_name"
        }
    };
    let rows: Vec<Member> =
        diesel::sql_query(sql).bind::<Array<SqlUuid>, _>(ids).load(conn).await?;
    let mut out: BTreeMap<Uuid, Vec<Member>> = BTreeMap::new();
    for m in rows {
        out.entry(m.owner).or_default().push(m);
    }
    Ok(out)
}

/// Makes a group's members exactly `users` (of the group's source): memberships no longer
/// listed go, new ones are added with `origin`. Returns the users not of that source.
pub async fn set_members(
    conn: &mut AsyncPgConnection,
    group: Uuid,
    source: &str,
    users: &[Uuid],
    origin: &str,
) -> diesel::QueryResult<Vec<Uuid>> {
    #[derive(diesel::QueryableByName)]
    struct Id {
        #[diesel(sql_type = SqlUuid)]
        id: Uuid,
    }
    let known: Vec<Id> =
        diesel::sql_query("SELECT id FROM directory.users WHERE id = ANY($1) AND source = $2")
            .bind::<Array<SqlUuid>, _>(users)
            .bind::<Text, _>(source)
            .load(conn)
            .await?;
    let known: Vec<Uuid> = known.into_iter().map(|k| k.id).collect();
    let unknown: Vec<Uuid> = users.iter().filter(|u| !known.contains(u)).copied().collect();
    if !unknown.is_empty() {
        return Ok(unknown);
    }
    diesel::sql_query(
        "DELETE FROM directory.memberships WHERE group_id = $1 AND NOT (user_id = ANY($2))",
    )
    .bind::<SqlUuid, _>(group)
    .bind::<Array<SqlUuid>, _>(&known)
    .execute(conn)
    .await?;
    diesel::sql_query(
        "INSERT INTO directory.memberships (group_id, user_id, origin) SELECT $1, unnest($2::uuid[]), $3 \
         ON CONFLICT DO NOTHING",
    )
    .bind::<SqlUuid, _>(group)
    .bind::<Array<SqlUuid>, _>(&known)
    .bind::<Text, _>(origin)
    .execute(conn)
    .await?;
    Ok(Vec::new())
}

/// Publishes a change of a user (`directory.user.<change>`) and its sync event.
pub async fn user_changed(
    conn: &mut AsyncPgConnection,
    row: &Row,
    change: &str,
) -> diesel::QueryResult<()> {
    let r = &row.resource;
    let changed = UserChanged {
        source: row.source.clone(),
        id: row.id.to_string(),
        user_name: text(r, "userName").unwrap_or_default(),
        external_id: text(r, "externalId"),
        active: r.get("active").and_then(Value::as_bool).unwrap_or(true),
        change: change.into(),
    };
    announce(conn, OutboxRow::new(&Envelope::new(crate::SERVICE, changed)), row, "user").await
}

/// Publishes a change of a group and its sync event.
pub async fn group_changed(
    conn: &mut AsyncPgConnection,
    row: &Row,
    members: usize,
    change: &str,
) -> diesel::QueryResult<()> {
    let changed = GroupChanged {
        source: row.source.clone(),
        id: row.id.to_string(),
        display_name: text(&row.resource, "displayName").unwrap_or_default(),
        members,
        change: change.into(),
    };
    announce(conn, OutboxRow::new(&Envelope::new(crate::SERVICE, changed)), row, "group").await
}

async fn announce(
    conn: &mut AsyncPgConnection,
    change: OutboxRow,
    row: &Row,
    entity: &str,
) -> diesel::QueryResult<()> {
    let synced = SyncRecorded {
        system: "directory".into(),
        direction: Direction::Inbound,
        entity: entity.into(),
        record_id: format!("{entity}/{}", row.id),
        status: SyncStatus::Synced,
        http_status: None,
        detail: Some(format!("from {}", row.source)),
    };
    outbox::enqueue(
        conn,
        crate::SCHEMA,
        &[change, OutboxRow::new(&Envelope::new(crate::SERVICE, synced))],
    )
    .await
}
