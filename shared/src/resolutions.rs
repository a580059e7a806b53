//! Applying conflict resolutions in the service that owns the record, the same way for every
//! connector: `sync.conflicts.resolved.<system>` ([`ConflictResolved`]) is handled once per
//! message (the schema's inbox), in one transaction, by the service's own [`Resolve::apply`];
//! a resolution whose record no longer exists comes back as a new conflict
//! ([`ConflictDetected::unapplied`]) for a person, never dropped.

use diesel_async::{AsyncConnection, AsyncPgConnection};
use futures::future::BoxFuture;

use crate::{
    bus::{
        Delivery, HandlerError, inbox,
        outbox::{self, OutboxRow},
    },
    db::PgPool,
    schemas::{
        Envelope,
        conflict::{ConflictDetected, ConflictResolved},
    },
};

/// What applying a resolution did.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// Already applied (a redelivery).
    Again,
    /// The record no longer exists here.
    Gone,
    /// None of its fields is in conflict any more (a later change settled them).
    Superseded,
    Done {
        /// The local record changed.
        local_update: bool,
        /// The system gets the decided values (it held something else).
        push: bool,
    },
}

/// How one service applies the resolutions of its system.
pub trait Resolve: Send + Sync {
    /// The system (`crm`, `erp`): resolutions of other systems are not this service's.
    const SYSTEM: &'static str;
    /// The schema whose inbox and outbox are used, and the consumer's name.
    const SCHEMA: &'static str;
    const CONSUMER: &'static str;
    /// The service publishing the unapplied ones.
    const SERVICE: &'static str;

    /// A resolution that can never be applied (unknown entity or field): why.
    fn invalid(&self, resolution: &ConflictResolved) -> Option<String>;

    /// Applies a resolution in the caller's transaction.
    fn apply<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        resolution: &'a ConflictResolved,
    ) -> BoxFuture<'a, anyhow::Result<Applied>>;
}

/// Handles one delivery of `sync.conflicts.resolved.<system>`.
pub async fn handle<R: Resolve>(
    resolver: &R,
    db: &PgPool,
    delivery: Delivery<ConflictResolved>,
) -> Result<(), HandlerError> {
    let resolution = &delivery.envelope.data;
    if resolution.system != R::SYSTEM {
        return Ok(());
    }
    if let Some(why) = resolver.invalid(resolution) {
        return Err(HandlerError::Permanent(anyhow::anyhow!(
            "resolution {}: {why}",
            resolution.conflict_id
        )));
    }
    let mut conn = db.get().await.map_err(|e| anyhow::anyhow!("database: {e}"))?;
    let message_id = delivery.envelope.id.to_string();
    let applied = conn
        .transaction::<_, anyhow::Error, _>(async |conn| {
            if !inbox::first_delivery(conn, R::SCHEMA, R::CONSUMER, &message_id).await? {
                return Ok(Applied::Again);
            }
            let applied = resolver.apply(conn, resolution).await?;
            if applied == Applied::Gone {
                // Never dropped silently: it comes back as a conflict for a person.
                let again = ConflictDetected::unapplied(resolution, "the record no longer exists");
                outbox::enqueue(
                    conn,
                    R::SCHEMA,
                    &[OutboxRow::new(&Envelope::new(R::SERVICE, again))],
                )
                .await?;
            }
            Ok(applied)
        })
        .await?;
    tracing::info!(conflict = %resolution.conflict_id, system = R::SYSTEM, entity = %resolution.entity, id = resolution.record_id, ?applied, "conflict resolution applied");
    Ok(())
}
