//! LDAP / Active Directory pull into the local directory (source `LDAP_SOURCE`, default
//! `ldap`).
//!
//! A pass binds, pages through the users (`LDAP_USER_FILTER` under `LDAP_BASE_DN`, simple paged
//! results) and then the groups (`LDAP_GROUP_FILTER`), and stores each entry by its DN:
//! - a delta pass asks only for entries changed since the cursor: `modifyTimestamp` (OpenLDAP,
//!   from the cursor's second on: LDAP time has whole seconds and filters have no `>`, so the
//!   entries of that second are read again, which changes nothing) or `uSNChanged` above the
//!   cursor (Active Directory), kept in `directory.sources`;
//! - a full pass (every `LDAP_FULL_SYNC_SECS`, or on demand) reads everything and deactivates
//!   the users it no longer finds: deleted entries are deactivated, never deleted here;
//! - AD's `userAccountControl` with ACCOUNTDISABLE (2) makes the user inactive;
//! - group members (`member` / `uniqueMember` DNs) become memberships with origin `ldap`; the
//!   ones made elsewhere are kept and reported as drift ([`crate::drift`]);
//! - an entry that cannot be stored (no account name, a name another entry holds) is a row of
//!   the error ledger, and the pass goes on.

use std::{collections::BTreeMap, time::Duration};

use anyhow::Context;
use diesel::sql_types::{Array, Bool, Jsonb, Text, Uuid as SqlUuid};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use ldap3::{LdapConnAsync, Scope, SearchEntry, adapters::PagedResults};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::{Value, json};
use shared::{
    db::PgPool,
    record_errors::{self, Failure},
    schemas::sync::Direction,
};
use uuid::Uuid;

mod entry;

pub use entry::user_resource;
use entry::{all, first};

use crate::{
    scim::filter::Kind,
    store::{self, Row},
};

/// Which directory server speaks: it decides the account attribute, the delta attribute and
/// how disabled accounts look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    OpenLdap,
    ActiveDirectory,
}

/// `LDAP_*`: the directory to pull.
#[derive(Clone, Debug)]
pub struct LdapConfig {
    pub url: String,
    pub bind_dn: String,
    pub bind_password: SecretString,
    pub base_dn: String,
    pub user_filter: String,
    pub group_filter: String,
    pub flavor: Flavor,
    /// The directory source its users and groups belong to.
    pub source: String,
    /// Pause between passes (`None`: only on demand).
    pub every: Option<Duration>,
    /// A delta pass becomes a full one when the last full pass is older than this.
    pub full_every: Duration,
    pub page_size: i32,
    /// `LDAP_STARTTLS`: upgrade an `ldap://` connection with StartTLS before binding.
    pub starttls: bool,
    /// `LDAP_CA_FILE`: the CA (PEM) the directory's certificate is checked against for
    /// `ldaps://` and StartTLS; unset: the system's roots. The name is always checked too.
    pub ca_file: Option<String>,
}

impl LdapConfig {
    /// Whether the connection is encrypted (before the bind sends the password).
    pub fn encrypted(&self) -> bool {
        self.starttls || self.url.starts_with("ldaps://") || self.url.starts_with("ldapi://")
    }

    fn account_attr(&self) -> &'static str {
        match self.flavor {
            Flavor::OpenLdap => "uid",
            Flavor::ActiveDirectory => "sAMAccountName",
        }
    }

    fn delta_attr(&self) -> &'static str {
        match self.flavor {
            Flavor::OpenLdap => "modifyTimestamp",
            Flavor::ActiveDirectory => "uSNChanged",
        }
    }
}

/// What a pass did.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct PassReport {
    pub full: bool,
    pub users_seen: usize,
    pub created: usize,
    pub updated: usize,
    pub deactivated: usize,
    pub groups_seen: usize,
    pub failed: usize,
    pub drift: Vec<crate::drift::Drift>,
}

/// Pages through `filter` under the base DN.
pub(crate) async fn search(
    ldap: &mut ldap3::Ldap,
    config: &LdapConfig,
    filter: &str,
) -> anyhow::Result<Vec<SearchEntry>> {
    let attrs = vec!["*", "entryUUID", "modifyTimestamp", "uSNChanged"];
    let mut stream = ldap
        .streaming_search_with(
            PagedResults::new(config.page_size),
            &config.base_dn,
            Scope::Subtree,
            filter,
            attrs,
        )
        .await
        .with_context(|| format!("searching {filter}"))?;
    let mut entries = Vec::new();
    while let Some(entry) = stream.next().await.context("reading the search")? {
        entries.push(SearchEntry::construct(entry));
    }
    stream.finish().await.success().context("the search")?;
    Ok(entries)
}

/// The cursor after these entries: the highest delta attribute seen.
fn advance(config: &LdapConfig, cursor: Option<Value>, entries: &[SearchEntry]) -> Option<Value> {
    let attr = config.delta_attr();
    entries.iter().filter_map(|e| first(e, attr)).fold(cursor, |best, v| {
        let v = match config.flavor {
            Flavor::OpenLdap => json!(v),
            Flavor::ActiveDirectory => json!(v.parse::<i64>().unwrap_or(0)),
        };
        match &best {
            Some(b)
                if match config.flavor {
                    Flavor::OpenLdap => b.as_str() >= v.as_str(),
                    Flavor::ActiveDirectory => b.as_i64() >= v.as_i64(),
                } =>
            {
                best
            }
            _ => Some(v),
        }
    })
}

/// The delta condition for the cursor (its value is digits and `Z` only, checked).
fn delta(config: &LdapConfig, cursor: Option<&Value>) -> String {
    match (config.flavor, cursor) {
        (Flavor::OpenLdap, Some(Value::String(t)))
            if t.chars().all(|c| c.is_ascii_digit() || c == 'Z' || c == '.') =>
        {
            format!("(modifyTimestamp>={t})")
        }
        (Flavor::ActiveDirectory, Some(v)) if v.as_i64().is_some() => {
            format!("(uSNChanged>={})", v.as_i64().unwrap_or(0) + 1)
        }
        _ => String::new(),
    }
}

/// A bound connection.
pub(crate) async fn connect(config: &LdapConfig) -> anyhow::Result<ldap3::Ldap> {
    let mut settings = ldap3::LdapConnSettings::new().set_starttls(config.starttls);
    if config.encrypted() {
        let tls = shared::tls::roots(config.ca_file.as_deref())
            .and_then(shared::tls::client_config)
            .map_err(|e| anyhow::anyhow!("LDAP_CA_FILE {e}"))?;
        settings = settings.set_config(std::sync::Arc::new(tls));
    }
    let (connection, mut ldap) = LdapConnAsync::with_settings(settings, &config.url)
        .await
        .with_context(|| format!("connecting to {}", config.url))?;
    ldap3::drive!(connection);
    ldap.simple_bind(&config.bind_dn, config.bind_password.expose_secret())
        .await?
        .success()
        .context("binding")?;
    Ok(ldap)
}

#[derive(diesel::QueryableByName)]
struct Cursor {
    #[diesel(sql_type = Jsonb)]
    cursor: Value,
    #[diesel(sql_type = Bool)]
    full_due: bool,
}

/// One pass now (full when asked, or when the last full pass is too old).
pub async fn pass(db: &PgPool, config: &LdapConfig, full: bool) -> anyhow::Result<PassReport> {
    let mut conn = db.get().await?;
    diesel::sql_query(
        "INSERT INTO directory.sources (id, kind) VALUES ($1, 'ldap') ON CONFLICT DO NOTHING",
    )
    .bind::<Text, _>(&config.source)
    .execute(&mut conn)
    .await?;
    let state: Cursor = diesel::sql_query(
        "SELECT cursor, coalesce(last_full_at < now() - make_interval(secs => $2), true) AS full_due \
         FROM directory.sources WHERE id = $1",
    )
    .bind::<Text, _>(&config.source)
    .bind::<diesel::sql_types::Double, _>(config.full_every.as_secs_f64())
    .get_result(&mut conn)
    .await?;
    drop(conn);
    let full = full || state.full_due;
    let cursor = (!full).then(|| state.cursor.get("users").cloned()).flatten();
    let group_cursor = (!full).then(|| state.cursor.get("groups").cloned()).flatten();

    let mut ldap = connect(config).await?;
    let user_filter = format!("(&{}{})", config.user_filter, delta(config, cursor.as_ref()));
    let users = search(&mut ldap, config, &user_filter).await?;
    let group_filter =
        format!("(&{}{})", config.group_filter, delta(config, group_cursor.as_ref()));
    let groups = search(&mut ldap, config, &group_filter).await?;
    let _ = ldap.unbind().await;

    let mut report = PassReport {
        full,
        users_seen: users.len(),
        groups_seen: groups.len(),
        ..PassReport::default()
    };
    let mut conn = db.get().await?;
    conn.transaction::<_, anyhow::Error, _>(async |conn| {
        let failures = store_users(conn, config, &users, full, &mut report).await?;
        for (dn, error) in &failures {
            let payload = users
                .iter()
                .find(|e| &e.dn == dn)
                .map_or(Value::Null, |e| json!({"dn": dn, "attributes": e.attrs}));
            let failure = Failure {
                system: "ldap",
                entity: "user",
                record_id: dn,
                direction: Direction::Inbound,
                error,
                payload: &payload,
            };
            record_errors::record_failure(conn, crate::SCHEMA, &[failure]).await?;
        }
        store_groups(conn, config, &groups).await?;
        let next = json!({
            "users": advance(config, cursor.clone(), &users),
            "groups": advance(config, group_cursor.clone(), &groups),
        });
        diesel::sql_query(
            "UPDATE directory.sources SET cursor = $2, last_sync_at = now(), \
             last_full_at = CASE WHEN $3 THEN now() ELSE last_full_at END WHERE id = $1",
        )
        .bind::<Text, _>(&config.source)
        .bind::<Jsonb, _>(next)
        .bind::<Bool, _>(full)
        .execute(conn)
        .await?;
        report.drift = crate::drift::drift(conn).await?;
        crate::drift::alert(conn, &report.drift).await?;
        Ok(())
    })
    .await?;
    tracing::info!(source = %config.source, full, users = report.users_seen, created = report.created, updated = report.updated,
        deactivated = report.deactivated, groups = report.groups_seen, failed = report.failed, drift = report.drift.len(), "LDAP pass");
    Ok(report)
}

#[derive(diesel::QueryableByName)]
struct Known {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = Text)]
    dn: String,
}

async fn known(
    conn: &mut AsyncPgConnection,
    kind: Kind,
    source: &str,
) -> diesel::QueryResult<BTreeMap<String, Uuid>> {
    let rows: Vec<Known> = diesel::sql_query(format!(
        "SELECT id, lower(dn) AS dn FROM {} WHERE source = $1 AND dn IS NOT NULL",
        store::table(kind)
    ))
    .bind::<Text, _>(source)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|k| (k.dn, k.id)).collect())
}

/// Stores user entries (each in its own savepoint); a full pass also deactivates the users no
/// longer found. Returns the entries that could not be stored: `(dn, why)`.
pub(crate) async fn store_users(
    conn: &mut AsyncPgConnection,
    config: &LdapConfig,
    entries: &[SearchEntry],
    full: bool,
    report: &mut PassReport,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut failures = Vec::new();
    let source = config.source.as_str();
    let by_dn = known(conn, Kind::User, source).await?;
    let mut seen = Vec::new();
    for entry in entries {
        let dn = entry.dn.to_lowercase();
        seen.push(dn.clone());
        let failure = |error: String| (entry.dn.clone(), error);
        let outcome: Result<(), (String, String)> = async {
            let resource = user_resource(config, entry).map_err(failure)?;
            // Each entry in its own savepoint: one that cannot be stored leaves the others.
            let stored = conn
                .transaction::<_, store::WriteError, _>(async |conn| match by_dn.get(&dn) {
                    Some(id) => {
                        let current = store::get(conn, Kind::User, source, *id, true).await?;
                        match current {
                            Some(c) if c.resource == resource => Ok(None),
                            Some(c) => {
                                let row = store::replace(conn, Kind::User, *id, &resource).await?;
                                let was = c
                                    .resource
                                    .get("active")
                                    .and_then(Value::as_bool)
                                    .unwrap_or(true);
                                let is =
                                    resource.get("active").and_then(Value::as_bool).unwrap_or(true);
                                let change = if was && !is { "deactivated" } else { "updated" };
                                store::user_changed(conn, &row, change).await?;
                                Ok(Some(change))
                            }
                            None => Ok(None),
                        }
                    }
                    None => {
                        let row =
                            store::insert(conn, Kind::User, source, &resource, Some(&entry.dn))
                                .await?;
                        store::user_changed(conn, &row, "created").await?;
                        Ok(Some("created"))
                    }
                })
                .await;
            match stored {
                Ok(Some("created")) => report.created += 1,
                Ok(Some("deactivated")) => report.deactivated += 1,
                Ok(Some(_)) => report.updated += 1,
                Ok(None) => {}
                Err(store::WriteError::Taken) => {
                    return Err(failure(format!(
                        "userName {} is held by another entry",
                        resource["userName"]
                    )));
                }
                Err(store::WriteError::Database(e)) => {
                    return Err(failure(format!("database: {e}")));
                }
            }
            Ok(())
        }
        .await;
        match outcome {
            Ok(()) => {
                record_errors::settle(
                    conn,
                    crate::SCHEMA,
                    "ldap",
                    "user",
                    Direction::Inbound,
                    std::slice::from_ref(&entry.dn),
                )
                .await?;
            }
            Err((dn, error)) => {
                report.failed += 1;
                tracing::warn!(dn = %dn, error = %error, "LDAP entry not stored");
                failures.push((dn, error));
            }
        }
    }
    if full {
        // Entries gone from the directory: deactivated, never deleted.
        let gone: Vec<Row> = diesel::sql_query(
            "UPDATE directory.users r SET active = false, resource = jsonb_set(resource, '{active}', 'false'), \
             version = version + 1, updated_at = now() \
             WHERE source = $1 AND dn IS NOT NULL AND active AND NOT (lower(dn) = ANY($2)) \
             RETURNING r.id, r.source, r.resource, r.version, r.created_at, r.updated_at",
        )
        .bind::<Text, _>(source)
        .bind::<Array<Text>, _>(&seen)
        .load(conn)
        .await?;
        for row in &gone {
            store::user_changed(conn, row, "deactivated").await?;
        }
        report.deactivated += gone.len();
    }
    Ok(failures)
}

async fn store_groups(
    conn: &mut AsyncPgConnection,
    config: &LdapConfig,
    entries: &[SearchEntry],
) -> anyhow::Result<()> {
    let source = config.source.as_str();
    let users = known(conn, Kind::User, source).await?;
    let groups = known(conn, Kind::Group, source).await?;
    for entry in entries {
        let Some(name) = first(entry, "cn") else { continue };
        let resource = json!({"displayName": name, "externalId": first(entry, "entryUUID").unwrap_or(&entry.dn)});
        let members: Vec<Uuid> = all(entry, "member")
            .into_iter()
            .chain(all(entry, "uniqueMember"))
            .filter_map(|dn| users.get(&dn.to_lowercase()).copied())
            .collect();
        let (row, change) = match groups.get(&entry.dn.to_lowercase()) {
            Some(id) => (store::replace(conn, Kind::Group, *id, &resource).await?, "updated"),
            None => (
                store::insert(conn, Kind::Group, source, &resource, Some(&entry.dn)).await?,
                "created",
            ),
        };
        // LDAP's members exactly, as LDAP's; memberships made elsewhere stay (they are drift).
        diesel::sql_query("DELETE FROM directory.memberships WHERE group_id = $1 AND origin = 'ldap' AND NOT (user_id = ANY($2))")
            .bind::<SqlUuid, _>(row.id)
            .bind::<Array<SqlUuid>, _>(&members)
            .execute(conn)
            .await?;
        diesel::sql_query(
            "INSERT INTO directory.memberships (group_id, user_id, origin) SELECT $1, unnest($2::uuid[]), 'ldap' \
             ON CONFLICT (group_id, user_id) DO UPDATE SET origin = 'ldap'",
        )
        .bind::<SqlUuid, _>(row.id)
        .bind::<Array<SqlUuid>, _>(&members)
        .execute(conn)
        .await?;
        store::group_changed(conn, &row, members.len(), change).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    pub(super) fn config(flavor: Flavor) -> LdapConfig {
        LdapConfig {
            url: "ldap://127.0.0.1:1".into(),
            bind_dn: "cn=admin".into(),
            bind_password: "x".into(),
            base_dn: "dc=example,dc=com".into(),
            user_filter: "(objectClass=person)".into(),
            group_filter: "(objectClass=groupOfNames)".into(),
            flavor,
            source: "ldap".into(),
            every: None,
            full_every: Duration::from_secs(3600),
            page_size: 100,
            starttls: false,
            ca_file: None,
        }
    }

    pub(super) fn entry(attrs: &[(&str, &str)]) -> SearchEntry {
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        for (k, v) in attrs {
            map.entry((*k).to_owned()).or_default().push((*v).to_owned());
        }
        SearchEntry {
            dn: "uid=ann,ou=people,dc=example,dc=com".into(),
            attrs: map,
            bin_attrs: HashMap::new(),
        }
    }

    #[test]
    fn the_cursor_moves_to_the_newest_change_and_makes_the_delta_filter() {
        let c = config(Flavor::OpenLdap);
        let entries = [
            entry(&[("modifyTimestamp", "20261206101010Z")]),
            entry(&[("modifyTimestamp", "20261206121212Z")]),
        ];
        let next = advance(&c, Some(json!("20261206000000Z")), &entries);
        assert_eq!(next, Some(json!("20261206121212Z")));
        assert_eq!(delta(&c, next.as_ref()), "(modifyTimestamp>=20261206121212Z)");
        assert_eq!(delta(&c, Some(&json!("1)(uid=*"))), "", "never anything but a timestamp");
        let ad = config(Flavor::ActiveDirectory);
        let next =
            advance(&ad, None, &[entry(&[("uSNChanged", "41")]), entry(&[("uSNChanged", "9")])]);
        assert_eq!(delta(&ad, next.as_ref()), "(uSNChanged>=42)");
    }
}
