//! NATS with credentials and TLS: a private nats-server (this machine's binary) with
//! authorization, and one with TLS from a CA the test makes (openssl).

use std::{path::PathBuf, time::Duration};

use harness::private::PrivateNats;

use shared::{
    bus::{Bus, streams},
    config::{NatsAuth, NatsConfig, NatsTls, StreamTopology},
};

fn start(dir: PathBuf, extra: &str) -> PrivateNats {
    PrivateNats::start(dir, extra, &[])
}

fn temp_dir() -> PathBuf {
    harness::private::temp_dir("nats")
}

fn config(url: String, auth: NatsAuth, tls: NatsTls) -> NatsConfig {
    NatsConfig {
        url,
        prefix: format!("authtest{}", uuid::Uuid::new_v4().simple()),
        streams: StreamTopology { max_bytes: 0, ..Default::default() },
        auth,
        tls,
    }
}

#[tokio::test]
async fn a_service_connects_with_its_user_and_password_or_token_and_is_refused_without() {
    let server = start(
        temp_dir(),
        "authorization { users = [ {user: \"crm-sync\", password: \"pw-0123456789abcdef\"} ] }",
    );
    let url = format!("nats://127.0.0.1:{}", server.port);
    let good = NatsAuth::UserPassword("crm-sync".into(), "pw-0123456789abcdef".into());
    let bus = Bus::connect(&config(url.clone(), good, NatsTls::default()), "test").await.unwrap();
    bus.ensure_stream(&streams::SYNC_EVENTS).await.unwrap();
    let wrong = NatsAuth::UserPassword("crm-sync".into(), "guessed-password-0000".into());
    let started = std::time::Instant::now();
    let refused = Bus::connect(&config(url.clone(), wrong, NatsTls::default()), "test").await;
    let error = format!("{:#}", refused.err().expect("a wrong password is refused"));
    assert!(error.contains("authorization violation"), "{error}");
    assert!(!error.contains("guessed-password"), "the password never appears: {error}");
    assert!(started.elapsed() < Duration::from_secs(5), "refused credentials are not retried");
    assert!(Bus::connect(&config(url, NatsAuth::None, NatsTls::default()), "test").await.is_err());

    let token_server = start(temp_dir(), "authorization { token: \"token-0123456789abcdef\" }");
    let url = format!("nats://127.0.0.1:{}", token_server.port);
    let token = NatsAuth::Token("token-0123456789abcdef".into());
    assert!(Bus::connect(&config(url, token, NatsTls::default()), "test").await.is_ok());
}

#[tokio::test]
async fn a_service_connects_over_tls_trusting_the_configured_ca_only() {
    let dir = temp_dir();
    harness::private::certificates(&dir, "IP:127.0.0.1");
    let server = start(
        dir.clone(),
        &format!(
            "tls {{ cert_file: \"{}\", key_file: \"{}\" }}",
            dir.join("server.pem").display(),
            dir.join("server.key").display()
        ),
    );
    let url = format!("tls://127.0.0.1:{}", server.port);
    let tls = NatsTls { required: true, ca_file: Some(dir.join("ca.pem")), client_cert: None };
    let bus = Bus::connect(&config(url.clone(), NatsAuth::None, tls), "test").await.unwrap();
    bus.ensure_stream(&streams::SYNC_EVENTS).await.unwrap();
    // Without the CA the server's certificate is not trusted.
    let untrusted = NatsTls { required: true, ca_file: None, client_cert: None };
    let refused = Bus::connect(&config(url, NatsAuth::None, untrusted), "test").await;
    assert!(refused.is_err());
}
