use std::time::Duration;

use harness::TestNats;
use shared::{
    bus::Bus,
    config::NatsConfig,
    settings::{RuntimeSettings, Settings},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

#[tokio::test]
async fn a_setting_written_by_one_service_reaches_the_others_live_and_after_restart() {
    let nats = TestNats::new();
    let cfg = NatsConfig {
        url: nats.url.clone(),
        prefix: nats.prefix.clone(),
        streams: Default::default(),
        auth: Default::default(),
        tls: Default::default(),
    };
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    let a = Settings::open(
        &Bus::connect(&cfg, "a").await.unwrap(),
        RuntimeSettings::default(),
        None,
        &tasks,
        stop.clone(),
    )
    .await
    .unwrap();
    let b = Settings::open(
        &Bus::connect(&cfg, "b").await.unwrap(),
        RuntimeSettings::default(),
        None,
        &tasks,
        stop.clone(),
    )
    .await
    .unwrap();
    let mut watch = b.subscribe();

    a.set("push_max_attempts", serde_json::json!(3)).await.unwrap();

    tokio::time::timeout(Duration::from_secs(5), watch.wait_for(|s| s.push_max_attempts == 3))
        .await
        .unwrap()
        .unwrap();
    let late = Settings::open(
        &Bus::connect(&cfg, "c").await.unwrap(),
        RuntimeSettings::default(),
        None,
        &tasks,
        stop.clone(),
    )
    .await
    .unwrap();
    assert_eq!(late.current().push_max_attempts, 3, "a service started later reads stored values");
    assert_eq!(
        late.current().sync_priority_source,
        RuntimeSettings::default().sync_priority_source
    );
    stop.cancel();
    tasks.close();
    tokio::time::timeout(Duration::from_secs(5), tasks.wait()).await.expect("the watches stop");
}

#[tokio::test]
async fn invalid_settings_are_refused_naming_the_field() {
    let nats = TestNats::new();
    let cfg = NatsConfig {
        url: nats.url.clone(),
        prefix: nats.prefix.clone(),
        streams: Default::default(),
        auth: Default::default(),
        tls: Default::default(),
    };
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    let s = Settings::open(
        &Bus::connect(&cfg, "a").await.unwrap(),
        RuntimeSettings::default(),
        None,
        &tasks,
        stop.clone(),
    )
    .await
    .unwrap();

    let wrong_type = s.set("push_max_attempts", serde_json::json!("lots")).await.unwrap_err();
    let unknown = s.set("colour", serde_json::json!("blue")).await.unwrap_err();

    assert!(format!("{wrong_type:?}").contains("push_max_attempts"));
    assert!(format!("{unknown:?}").contains("colour"));
    assert_eq!(s.current().push_max_attempts, RuntimeSettings::default().push_max_attempts);
    stop.cancel();
    tasks.close();
    tokio::time::timeout(Duration::from_secs(5), tasks.wait()).await.expect("the watches stop");
}
