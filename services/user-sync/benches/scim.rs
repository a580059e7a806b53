//! SCIM creates per second, and filtered list latency with 100,000 users, beside a single-row
//! INSERT baseline measured in the same run.
//!
//! Run: `cargo bench -p user-sync --bench scim` (PostgreSQL and NATS on 127.0.0.1 as for the
//! tests; `BENCH_SECS` each phase's length, default 10; `USERS` the stored users of the list
//! phase, default 100,000).
//!
//! - baseline: 8 connections running single-row `INSERT` transactions into a trigger-less copy of
//!   `directory.users` (a user as JSON, like the service stores it);
//! - service: the real `user-sync` binary (release build), 8 clients posting Okta's create
//!   request (`POST /scim/v2/Users`, each a new userName): parse, validate, uniqueness, the row
//!   and two outbox events in one transaction;
//! - lists: one client back to back, with `USERS` users stored: the lookups Okta and Entra do
//!   before a create (`userName eq`, `externalId eq`, Entra's `emails[type eq "work"].value eq`),
//!   and a prefix search with paging and sorting.
//!
//! Figures are printed; nothing is asserted (this is a benchmark, not a test).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark fails loudly")]

use diesel::sql_types::BigInt;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use harness::bench::{Bench, closed_loop, header, insert_baseline, line};
use serde_json::json;

const CLIENTS: usize = 8;
const TOKEN: &str = "bench-scim-token-0123456789abcdef";
const INSERT_SETUP: &str = "CREATE TABLE public.bench_users (LIKE directory.users INCLUDING ALL)";
const INSERT: &str = "INSERT INTO public.bench_users (source, user_name, resource) \
    VALUES ('bench', $1, jsonb_build_object('userName', $1::text, 'active', true))";

fn enc(filter: &str) -> String {
    filter.replace(' ', "%20").replace('"', "%22").replace('[', "%5B").replace(']', "%5D")
}

fn main() {
    harness::bench::run(|Bench { db, nats, secs, duration }| async move {
        let users: i64 =
            std::env::var("USERS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
        let baseline = insert_baseline(&db, CLIENTS, duration, INSERT_SETUP, INSERT).await;
        let svc = harness::process::Running::start(
            env!("CARGO_BIN_EXE_user-sync"),
            &db,
            &nats,
            vec![
                ("SCIM_TOKENS".into(), format!("bench={TOKEN}")),
                ("DATABASE_POOL_SIZE".into(), "16".into()),
                ("RUST_LOG".into(), "warn".into()),
            ],
            &[],
        )
        .await;
        let http = reqwest::Client::builder().pool_max_idle_per_host(CLIENTS).build().unwrap();
        let url = format!("{}/scim/v2/Users", svc.base);
        let creates = closed_loop(CLIENTS, duration, {
            let (http, url) = (http.clone(), url.clone());
            move |client, n| {
                let (http, url) = (http.clone(), url.clone());
                async move {
                    let user = format!("okta-{client}-{n}@example.com");
                    let body = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": user,
                        "name": {"givenName": "Bench", "familyName": format!("User{n}")},
                        "emails": [{"primary": true, "value": user, "type": "work"}],
                        "displayName": "Bench User", "locale": "en-US", "externalId": format!("00u{client}x{n}"),
                        "groups": [], "active": true});
                    match http.post(url).bearer_auth(TOKEN).header("content-type", "application/scim+json").body(body.to_string()).send().await {
                        Ok(r) => r.status() == 201,
                        Err(_) => false,
                    }
                }
            }
        })
        .await;

        // Fill up to `users` with the same shape, then list.
        let mut conn = AsyncPgConnection::establish(&db.url).await.unwrap();
        diesel::sql_query(
            "INSERT INTO directory.users (source, user_name, external_id, active, resource) \
             SELECT 'bench', 'user-' || g || '@example.com', 'ext-' || g, true, \
                    jsonb_build_object('userName', 'user-' || g || '@example.com', 'externalId', 'ext-' || g, 'active', true, \
                      'name', jsonb_build_object('givenName', 'Given' || g, 'familyName', 'Family' || (g % 1000)), \
                      'emails', jsonb_build_array(jsonb_build_object('value', 'user-' || g || '@example.com', 'type', 'work', 'primary', true))) \
             FROM generate_series(1, greatest($1 - (SELECT count(*) FROM directory.users), 0)) g",
        )
        .bind::<BigInt, _>(users)
        .execute(&mut conn)
        .await
        .unwrap();
        diesel::sql_query("ANALYZE directory.users").execute(&mut conn).await.unwrap();
        let stored = db.count("SELECT count(*) AS n FROM directory.users").await;
        let list = |make: fn(u64) -> String| {
            let (http, url) = (http.clone(), url.clone());
            move |_: usize, n: u64| {
                let (http, url) = (http.clone(), format!("{url}?{}", make(n)));
                async move {
                    match http.get(url).bearer_auth(TOKEN).send().await {
                        Ok(r) => r.status() == 200 && r.bytes().await.is_ok(),
                        Err(_) => false,
                    }
                }
            }
        };
        let by_name = closed_loop(
            1,
            duration,
            list(|n| {
                format!(
                    "filter={}",
                    enc(&format!(r#"userName eq "USER-{}@example.com""#, 1 + n * 7919 % 99_000))
                )
            }),
        )
        .await;
        let by_external = closed_loop(
            1,
            duration,
            list(|n| {
                format!(
                    "filter={}",
                    enc(&format!(r#"externalId eq "ext-{}""#, 1 + n * 7919 % 99_000))
                )
            }),
        )
        .await;
        let by_email = closed_loop(
            1,
            duration,
            list(|n| {
                format!(
                    "filter={}",
                    enc(&format!(
                        r#"emails[type eq "work"].value eq "user-{}@example.com""#,
                        1 + n * 7919 % 99_000
                    ))
                )
            }),
        )
        .await;
        let prefix = closed_loop(
            1,
            duration,
            list(|n| {
                format!(
                    "filter={}&sortBy=userName&startIndex=1&count=20",
                    enc(&format!(r#"userName sw "user-{}""#, 1 + n % 9))
                )
            }),
        )
        .await;
        svc.stop();

        println!(
            "user-sync SCIM benchmark: {CLIENTS} clients creating, {secs} s per phase, {stored} users stored for the \
             list phases (one client), 2 cores shared by clients, service, PostgreSQL and NATS"
        );
        header();
        line("baseline: single-row INSERT, 8 conns", &baseline);
        line("service: POST /Users (Okta's create)", &creates);
        line("list: userName eq", &by_name);
        line("list: externalId eq", &by_external);
        line("list: emails[type eq work].value eq", &by_email);
        line("list: userName sw, sorted, 20/page", &prefix);
        println!(
            "SCIM creates: {:.0}/s, {:.2}x the same-run single-INSERT baseline ({:.0}/s); filtered lists at {stored} users: \
             userName eq p50 {:.2} ms, externalId eq p50 {:.2} ms, emails value path p50 {:.2} ms, prefix+sort p50 {:.2} ms \
             (single INSERT p50 {:.2} ms)",
            creates.ops_per_sec,
            creates.ops_per_sec / baseline.ops_per_sec,
            baseline.ops_per_sec,
            by_name.p50_ms,
            by_external.p50_ms,
            by_email.p50_ms,
            prefix.p50_ms,
            baseline.p50_ms
        );
    });
}
