//! Group drift: groups whose members differ from what their identity provider set. Reported
//! by `GET /admin/directory/drift`, and raised as a `group_drift` alert by each LDAP pass.

use diesel::sql_types::{Array, Text, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use serde_json::json;
use shared::{
    bus::outbox::{self, OutboxRow},
    schemas::{
        Envelope,
        sync::{AlertRaised, Severity},
    },
};
use uuid::Uuid;

/// A group whose members differ from what its identity provider set.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Drift {
    pub group_id: Uuid,
    pub source: String,
    pub display_name: String,
    /// Members the provider did not set (added locally, or only in LDAP for a SCIM group).
    pub added_outside: Vec<String>,
    /// Members the provider set that another directory lacks (a SCIM group's same-named LDAP
    /// group).
    pub missing_elsewhere: Vec<String>,
}

#[derive(diesel::QueryableByName)]
struct DriftRow {
    #[diesel(sql_type = SqlUuid)]
    group_id: Uuid,
    #[diesel(sql_type = Text)]
    source: String,
    #[diesel(sql_type = Text)]
    display_name: String,
    #[diesel(sql_type = Array<Text>)]
    added_outside: Vec<String>,
    #[diesel(sql_type = Array<Text>)]
    missing_elsewhere: Vec<String>,
}

/// Groups whose members differ from what their provider set: memberships another origin made
/// (an LDAP group's `local` ones; a SCIM group's `local` or `ldap` ones), and for a SCIM group
/// with a same-named group in a pulled directory, the users only one of them holds (Entra never
/// reads members back, so nobody else would notice).
pub async fn drift(conn: &mut AsyncPgConnection) -> diesel::QueryResult<Vec<Drift>> {
    let rows: Vec<DriftRow> = diesel::sql_query(
        "WITH kinds AS (SELECT g.id, g.source, g.display_name, \
                               CASE WHEN s.kind = 'ldap' THEN 'ldap' ELSE 'scim' END AS owner \
                        FROM directory.groups g LEFT JOIN directory.sources s ON s.id = g.source), \
              outside AS (SELECT k.id, array_agg(u.user_name ORDER BY u.user_name) AS names \
                          FROM kinds k JOIN directory.memberships m ON m.group_id = k.id \
                          JOIN directory.users u ON u.id = m.user_id WHERE m.origin <> k.owner GROUP BY k.id), \
              twins AS (SELECT k.id, \
                               array(SELECT lower(u.user_name) FROM directory.memberships m JOIN directory.users u ON u.id = m.user_id \
                                     WHERE m.group_id = l.id \
                                     EXCEPT SELECT lower(u.user_name) FROM directory.memberships m JOIN directory.users u ON u.id = m.user_id \
                                     WHERE m.group_id = k.id ORDER BY 1) AS only_there, \
                               array(SELECT lower(u.user_name) FROM directory.memberships m JOIN directory.users u ON u.id = m.user_id \
                                     WHERE m.group_id = k.id \
                                     EXCEPT SELECT lower(u.user_name) FROM directory.memberships m JOIN directory.users u ON u.id = m.user_id \
                                     WHERE m.group_id = l.id ORDER BY 1) AS only_here \
                        FROM kinds k JOIN kinds l ON l.owner = 'ldap' AND k.owner = 'scim' \
                             AND lower(l.display_name) = lower(k.display_name)) \
         SELECT k.id AS group_id, k.source, k.display_name, \
                coalesce(o.names, '{}') || coalesce(t.only_there, '{}') AS added_outside, \
                coalesce(t.only_here, '{}') AS missing_elsewhere \
         FROM kinds k LEFT JOIN outside o ON o.id = k.id LEFT JOIN twins t ON t.id = k.id \
         WHERE o.names IS NOT NULL OR cardinality(t.only_there) > 0 OR cardinality(t.only_here) > 0 \
         ORDER BY k.source, k.display_name",
    )
    .load(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Drift {
            group_id: r.group_id,
            source: r.source,
            display_name: r.display_name,
            added_outside: r.added_outside,
            missing_elsewhere: r.missing_elsewhere,
        })
        .collect())
}

/// One warning per drifting group (sync-monitor routes it; its key keeps repeats quiet).
pub async fn alert(conn: &mut AsyncPgConnection, drift: &[Drift]) -> diesel::QueryResult<()> {
    let rows: Vec<OutboxRow> = drift
        .iter()
        .map(|d| {
            OutboxRow::new(&Envelope::new(
                crate::SERVICE,
                AlertRaised {
                    severity: Severity::Warning,
                    kind: "group_drift".into(),
                    title: format!("Group drift: {} ({})", d.display_name, d.source),
                    text: format!(
                        "Members not set by its provider: {:?}; members another directory lacks: {:?}",
                        d.added_outside, d.missing_elsewhere
                    ),
                    dedup_key: format!("group_drift:{}", d.group_id),
                    fields: [("group_id".to_owned(), json!(d.group_id))].into_iter().collect(),
                },
            ))
        })
        .collect();
    outbox::enqueue(conn, crate::SCHEMA, &rows).await
}
