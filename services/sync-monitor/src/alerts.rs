//! Alerts the other services raise (`alerts.<severity>`: low and out of stock, a target
//! stopped, an escalated conflict, bulk results, dead letters), routed to the channels the
//! `alert_routes` setting names for their severity. One alert (its `dedup_key`) is routed once
//! per `MONITOR_ALERT_REPEAT_SECS`: repeats meanwhile are counted, not sent, so a flapping
//! condition never storms a channel.

use chrono::Utc;
use diesel::sql_types::{BigInt, Bool, Text};
use diesel_async::{AsyncConnection, RunQueryDsl};
use shared::{
    bus::{
        Delivery, HandlerError,
        outbox::{self, OutboxRow},
    },
    schemas::{Envelope, sync::AlertRaised},
};

use crate::{AppState, notify::Notification};

pub const CONSUMER: &str = "monitor-alerts";

/// Records an alert and routes it when it is due; the channels it went to.
pub async fn route(state: &AppState, delivery: Delivery<AlertRaised>) -> Result<(), HandlerError> {
    let alert = &delivery.envelope.data;
    let channels: Vec<String> =
        state.settings.current().alert_routes.get(&alert.severity).cloned().unwrap_or_default();
    let repeat = i64::try_from(state.alert_repeat.as_secs()).unwrap_or(i64::MAX);
    let mut conn = state.db.get().await.map_err(|e| anyhow::anyhow!("database: {e}"))?;
    let routed = conn
        .transaction::<_, anyhow::Error, _>(async |conn| {
            #[derive(diesel::QueryableByName)]
            struct Due {
                #[diesel(sql_type = Bool)]
                due: bool,
            }
            let due: Due = diesel::sql_query(
                "INSERT INTO monitor.alerts (dedup_key, severity, kind, title, first_at, last_at, routed_at) \
                 VALUES ($1, $2, $3, $4, now(), now(), now()) \
                 ON CONFLICT (dedup_key) DO UPDATE SET last_at = now(), count = monitor.alerts.count + 1, \
                   severity = excluded.severity, title = excluded.title, \
                   routed_at = CASE WHEN monitor.alerts.routed_at < now() - make_interval(secs => $5) \
                                    THEN now() ELSE monitor.alerts.routed_at END \
                 RETURNING routed_at = now() AS due",
            )
            .bind::<Text, _>(&alert.dedup_key)
            .bind::<Text, _>(alert.severity.as_str())
            .bind::<Text, _>(&alert.kind)
            .bind::<Text, _>(&alert.title)
            .bind::<BigInt, _>(repeat)
            .get_result(conn)
            .await?;
            if !due.due {
                return Ok(false);
            }
            let rows: Vec<OutboxRow> = channels
                .iter()
                .map(|channel| {
                    OutboxRow::new(&Envelope::new(
                        crate::SERVICE,
                        Notification {
                            channel: channel.clone(),
                            severity: alert.severity,
                            title: alert.title.clone(),
                            text: format!("*{}*\n{}", alert.title, alert.text),
                            dedup_key: alert.dedup_key.clone(),
                            resolve: false,
                        },
                    ))
                })
                .collect();
            outbox::enqueue(conn, crate::SCHEMA, &rows).await?;
            Ok(true)
        })
        .await?;
    tracing::info!(kind = %alert.kind, key = %alert.dedup_key, severity = alert.severity.as_str(), routed, channels = ?channels, at = %Utc::now(), "alert");
    Ok(())
}
