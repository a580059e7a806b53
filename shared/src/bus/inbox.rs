//! The inbox: a consumer records each message id in the same transaction as the message's
//! effect, so a redelivered message finds its id and does nothing.

use diesel::sql_types::Text;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

/// Records `(consumer, message_id)` in `<schema>.inbox`; `true` on the first delivery, `false`
/// when the message was already processed. Call inside the effect's transaction.
pub async fn first_delivery(
    conn: &mut AsyncPgConnection,
    schema: &'static str,
    consumer: &str,
    message_id: &str,
) -> diesel::QueryResult<bool> {
    let inserted = diesel::sql_query(format!(
        "INSERT INTO {schema}.inbox (consumer, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING"
    ))
    .bind::<Text, _>(consumer)
    .bind::<Text, _>(message_id)
    .execute(conn)
    .await?;
    Ok(inserted == 1)
}

/// [`first_delivery`] for many messages at once: the ids seen for the first time.
pub async fn first_deliveries(
    conn: &mut AsyncPgConnection,
    schema: &'static str,
    consumer: &str,
    message_ids: &[String],
) -> diesel::QueryResult<std::collections::HashSet<String>> {
    #[derive(diesel::QueryableByName)]
    struct Inserted {
        #[diesel(sql_type = Text)]
        message_id: String,
    }
    if message_ids.is_empty() {
        return Ok(Default::default());
    }
    let rows: Vec<Inserted> = diesel::sql_query(format!(
        "INSERT INTO {schema}.inbox (consumer, message_id) SELECT $1, unnest($2::text[]) \
         ON CONFLICT DO NOTHING RETURNING message_id"
    ))
    .bind::<Text, _>(consumer)
    .bind::<diesel::sql_types::Array<Text>, _>(message_ids)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.message_id).collect())
}

/// Whether `(consumer, message_id)` was recorded (for effects outside the database, such as
/// an email: check, act, then record).
pub async fn seen(
    conn: &mut AsyncPgConnection,
    schema: &'static str,
    consumer: &str,
    message_id: &str,
) -> diesel::QueryResult<bool> {
    #[derive(diesel::QueryableByName)]
    struct Found {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        found: bool,
    }
    let found: Found = diesel::sql_query(format!(
        "SELECT EXISTS (SELECT 1 FROM {schema}.inbox WHERE consumer = $1 AND message_id = $2) AS found"
    ))
    .bind::<Text, _>(consumer)
    .bind::<Text, _>(message_id)
    .get_result(conn)
    .await?;
    Ok(found.found)
}
