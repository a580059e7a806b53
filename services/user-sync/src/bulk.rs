//! A full resync of the LDAP source through the shared bulk job engine
//! (`{"source": "<LDAP_SOURCE>", "target": "directory", "entity": "users"}` on
//! `/admin/bulk/jobs`, with its dry run on `/admin/bulk/dry-run`): every user entry read again a
//! page at a time and stored like a pass stores it; a dry run shows what would be created or
//! changed, field by field.
//!
//! LDAP has no stable offset paging across connections, so each page is cut from a fresh
//! (simple-paged) search sorted by DN: a page costs one search of the whole subtree. Fine for a
//! resync job; the scheduled passes are what run often.

use std::{collections::HashMap, sync::Arc};

use diesel::sql_types::{Array, Jsonb, Text};
use diesel_async::{AsyncConnection, RunQueryDsl};
use futures::future::BoxFuture;
use ldap3::SearchEntry;
use serde_json::{Value, json};
use shared::{
    bulk::{BulkKind, BulkSource, Difference, Job, Page, Preview, PreviewError, RecordError},
    db::PgPool,
    outbound::Outcome,
};

use crate::ldap::{self, LdapConfig, PassReport};

/// The LDAP source's users, loaded in bulk.
pub struct LdapLoad {
    pub db: PgPool,
    pub config: LdapConfig,
}

impl LdapLoad {
    pub fn offered(self) -> (BulkKind, Arc<dyn BulkSource>) {
        (BulkKind::new(&self.config.source, "directory", "users"), Arc::new(self))
    }
}

fn entry_of(record: &Value) -> Option<SearchEntry> {
    let dn = record.get("dn")?.as_str()?.to_owned();
    let attrs: HashMap<String, Vec<String>> =
        serde_json::from_value(record.get("attrs")?.clone()).ok()?;
    Some(SearchEntry { dn, attrs, bin_attrs: HashMap::new() })
}

impl BulkSource for LdapLoad {
    fn fetch<'a>(
        &'a self,
        cursor: Option<&'a Value>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Page, Outcome>> {
        Box::pin(async move {
            let offset = cursor.and_then(|c| c["offset"].as_u64()).unwrap_or(0) as usize;
            let unavailable = |e: anyhow::Error| Outcome::Retry {
                status: None,
                after: None,
                error: format!("{e:#}"),
            };
            let mut conn = ldap::connect(&self.config).await.map_err(unavailable)?;
            let mut entries = ldap::search(&mut conn, &self.config, &self.config.user_filter)
                .await
                .map_err(unavailable)?;
            let _ = conn.unbind().await;
            entries.sort_by_key(|e| e.dn.to_lowercase());
            let records: Vec<Value> = entries
                .iter()
                .skip(offset)
                .take(limit)
                .map(|e| json!({"dn": e.dn, "attrs": e.attrs}))
                .collect();
            let next = (offset + records.len() < entries.len())
                .then(|| json!({"offset": offset + records.len()}));
            Ok(Page { records, next })
        })
    }

    fn apply<'a>(
        &'a self,
        _job: &'a Job,
        records: &'a [Value],
    ) -> BoxFuture<'a, anyhow::Result<Vec<RecordError>>> {
        Box::pin(async move {
            let (entries, mut errors) = shared::bulk::split(records, |i, r| {
                entry_of(r).ok_or_else(|| RecordError {
                    record_id: format!("#{i}"),
                    error: "not an LDAP entry".into(),
                })
            });
            let mut conn = self.db.get().await?;
            let failures = conn
                .transaction::<_, anyhow::Error, _>(async |conn| {
                    ldap::store_users(
                        conn,
                        &self.config,
                        &entries,
                        false,
                        &mut PassReport::default(),
                    )
                    .await
                })
                .await?;
            errors.extend(
                failures.into_iter().map(|(record_id, error)| RecordError { record_id, error }),
            );
            Ok(errors)
        })
    }

    fn preview<'a>(
        &'a self,
        records: &'a [Value],
    ) -> BoxFuture<'a, anyhow::Result<Option<Preview>>> {
        Box::pin(async move {
            #[derive(diesel::QueryableByName)]
            struct Stored {
                #[diesel(sql_type = Text)]
                dn: String,
                #[diesel(sql_type = Jsonb)]
                resource: Value,
            }
            let mut preview = Preview::default();
            let mut resources = Vec::new();
            for (i, record) in records.iter().enumerate() {
                let converted = entry_of(record)
                    .ok_or_else(|| (format!("#{i}"), "not an LDAP entry".to_owned()))
                    .and_then(|e| {
                        ldap::user_resource(&self.config, &e)
                            .map(|r| (e.dn.to_lowercase(), r))
                            .map_err(|why| (e.dn.clone(), why))
                    });
                match converted {
                    Ok(pair) => resources.push(pair),
                    Err((record_id, error)) => {
                        preview.errors.push(PreviewError { record_id, error })
                    }
                }
            }
            let dns: Vec<&str> = resources.iter().map(|(dn, _)| dn.as_str()).collect();
            let mut conn = self.db.get().await?;
            let stored: HashMap<String, Value> = diesel::sql_query(
                "SELECT lower(dn) AS dn, resource FROM directory.users WHERE source = $1 AND lower(dn) = ANY($2)",
            )
            .bind::<Text, _>(&self.config.source)
            .bind::<Array<Text>, _>(&dns)
            .load::<Stored>(&mut conn)
            .await?
            .into_iter()
            .map(|s| (s.dn, s.resource))
            .collect();
            for (dn, theirs) in resources {
                match stored.get(&dn) {
                    None => preview.create += 1,
                    Some(ours) if *ours == theirs => preview.unchanged += 1,
                    Some(ours) => {
                        preview.update += 1;
                        let keys: std::collections::BTreeSet<&String> = ours
                            .as_object()
                            .into_iter()
                            .chain(theirs.as_object())
                            .flat_map(|o| o.keys())
                            .collect();
                        for key in keys {
                            if ours.get(key) != theirs.get(key) {
                                preview.differences.push(Difference {
                                    record_id: dn.clone(),
                                    field: key.clone(),
                                    ours: ours.get(key).cloned().unwrap_or(Value::Null),
                                    theirs: theirs.get(key).cloned().unwrap_or(Value::Null),
                                });
                            }
                        }
                    }
                }
            }
            Ok(Some(preview))
        })
    }
}
