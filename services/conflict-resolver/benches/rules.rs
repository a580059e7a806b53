//! Conflicts tried per second by the rules, with a backlog of pending conflicts, beside a
//! baseline measured in the same run.
//!
//! Run: `cargo bench -p conflict-resolver --bench rules` (needs PostgreSQL and NATS on
//! 127.0.0.1 as for the tests; `CONFLICTS` sets the backlog, default 10,000; `BENCH_SECS` the
//! baseline's length, default 10).
//!
//! - baseline: one connection running single-row `INSERT` transactions into a trigger-less copy
//!   of `resolver.conflicts` (the resolver also decides one conflict per transaction).
//! - service: the real `conflict-resolver` binary (release build) with a backlog of pending
//!   conflicts that changed different fields (each decided by the field merge: its row locked,
//!   decided, updated, and its resolution written to the outbox) and its scheduled pass every
//!   second. Measured from the first conflict resolved to the last, from their `resolved_at`.
//!
//! Figures are printed; nothing is asserted (this is a benchmark, not a test).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark fails loudly")]

use std::time::Duration;

use diesel::sql_types::{BigInt, Double};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use harness::bench::{Bench, Figures, header, insert_baseline, line};

const INSERT_SETUP: &str =
    "CREATE TABLE public.bench_conflicts (LIKE resolver.conflicts INCLUDING ALL)";
const INSERT: &str = "INSERT INTO public.bench_conflicts (id, system, entity, record_id, external_id, \
    fields, base, local, remote, local_at, local_clock, remote_at, remote_clock) \
    VALUES (gen_random_uuid(), 'crm', 'contact', 1, '1', '[\"a\"]', '{\"a\": 0, \"b\": 0}', \
    '{\"a\": 1, \"b\": 0}', '{\"a\": 0, \"b\": 1}', now(), 'local', now(), 'crm')";

#[derive(diesel::QueryableByName)]
struct Progress {
    #[diesel(sql_type = BigInt)]
    resolved: i64,
    #[diesel(sql_type = Double)]
    seconds: f64,
}

fn main() {
    harness::bench::run(|Bench { db, nats, secs, duration }| async move {
        let backlog: i64 =
            std::env::var("CONFLICTS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
        let baseline = insert_baseline(&db, 1, duration, INSERT_SETUP, INSERT).await;

        let mut conn = AsyncPgConnection::establish(&db.url).await.unwrap();
        diesel::sql_query(
            "INSERT INTO resolver.conflicts (id, system, entity, record_id, external_id, fields, \
                 base, local, remote, local_at, local_clock, remote_at, remote_clock) \
             SELECT gen_random_uuid(), 'crm', 'contact', g, g::text, '[\"a\"]', \
                 '{\"a\": 0, \"b\": 0}', '{\"a\": 1, \"b\": 0}', '{\"a\": 0, \"b\": 1}', \
                 now(), 'local', now(), 'crm' \
             FROM generate_series(1, $1) g",
        )
        .bind::<BigInt, _>(backlog)
        .execute(&mut conn)
        .await
        .unwrap();

        let env = vec![("RESOLVER_RETRY_SECS".to_owned(), "1".to_owned())];
        let (mut child, _base) = harness::process::spawn_ready(
            env!("CARGO_BIN_EXE_conflict-resolver"),
            &db,
            &nats,
            &env,
        )
        .await;
        let progress = harness::eventually(Duration::from_secs(600), || async {
            let mut conn = AsyncPgConnection::establish(&db.url).await.ok()?;
            let p: Progress = diesel::sql_query(
                "SELECT count(*) AS resolved, \
                     coalesce(extract(epoch FROM max(resolved_at) - min(resolved_at)), 0)::float8 AS seconds \
                 FROM resolver.conflicts WHERE status = 'resolved'",
            )
            .get_result(&mut conn)
            .await
            .ok()?;
            (p.resolved >= backlog).then_some(p)
        })
        .await
        .expect("the backlog is resolved");
        let _ =
            std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let _ = child.wait();

        let rate = progress.resolved as f64 / progress.seconds.max(0.001);
        println!(
            "conflict-resolver rules benchmark: a backlog of {backlog} pending conflicts (field \
             merges), baseline phase {secs} s, 2 cores shared by the service, PostgreSQL and NATS"
        );
        header();
        line("baseline: single-row INSERT, 1 conn", &baseline);
        line(
            "service: conflicts decided (pass)",
            &Figures { ops_per_sec: rate, p50_ms: 0.0, p99_ms: 0.0, errors: 0 },
        );
        println!(
            "conflicts decided: {rate:.0}/s, {:.2}x the same-run single-INSERT baseline ({} in {:.2} s)",
            rate / baseline.ops_per_sec,
            progress.resolved,
            progress.seconds
        );
    });
}
