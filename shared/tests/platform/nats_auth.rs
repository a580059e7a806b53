//! NATS with credentials and TLS: a private nats-server (this machine's binary) with
//! authorization, and one with TLS from a CA the test makes (openssl).

use std::{path::PathBuf, process::Child, time::Duration};

use shared::{
    bus::{Bus, streams},
    config::{NatsAuth, NatsConfig, NatsTls, StreamTopology},
};

struct PrivateNats {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start(dir: PathBuf, extra: &str) -> PrivateNats {
    let bin = std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "/usr/sbin/nats-server".into());
    assert!(
        std::path::Path::new(&bin).exists() || bin != "/usr/sbin/nats-server",
        "needs nats-server (NATS_SERVER_BIN)"
    );
    let port = harness::process::free_port();
    let config = format!(
        "listen: 127.0.0.1:{port}\njetstream {{ store_dir: \"{}\" }}\n{extra}\n",
        dir.join("js").display()
    );
    std::fs::write(dir.join("nats.conf"), config).unwrap();
    let child = std::process::Command::new(&bin)
        .arg("-c")
        .arg(dir.join("nats.conf"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
    let up = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up, "nats-server did not listen");
    PrivateNats { child, dir, port }
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
