//! The real `sync-monitor` binary: refuses bad configuration with one line, serves until SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use harness::{TestDb, TestNats, process};

const BIN: &str = env!("CARGO_BIN_EXE_sync-monitor");

#[tokio::test]
async fn bad_configuration_exits_non_zero_with_one_line_naming_the_variable() {
    let (db, nats) = (TestDb::new().await, TestNats::new());

    let (code, stderr) = process::run_with_bad_env(BIN, &db, &nats, "HTTP_PORT", "eighty");

    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("HTTP_PORT"), "{stderr}");
}

#[tokio::test]
async fn serves_until_sigterm_then_exits_cleanly() {
    let (db, nats) = (TestDb::new().await, TestNats::new());

    let code = process::serve_until_sigterm(BIN, &db, &nats).await;

    assert_eq!(code, Some(0));
}
