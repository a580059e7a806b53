//! PostgreSQL over TLS, against a cluster of the test's own that refuses plaintext
//! (`hostnossl ... reject`), with a certificate for `localhost` from a CA the test makes.

use diesel::{QueryableByName, sql_types::Bool};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use harness::private::{PrivatePostgres, certificates, temp_dir};
use shared::{config::DbConfig, db};

#[derive(QueryableByName)]
struct Ssl {
    #[diesel(sql_type = Bool)]
    ssl: bool,
}

async fn encrypted(conn: &mut AsyncPgConnection) -> bool {
    diesel::sql_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .get_result::<Ssl>(conn)
        .await
        .unwrap()
        .ssl
}

#[tokio::test]
async fn every_connection_honours_sslmode_and_a_tls_only_server_is_reachable() {
    let certs = temp_dir("pgtls");
    certificates(&certs, "DNS:localhost");
    let stranger = temp_dir("pgtls-other");
    certificates(&stranger, "DNS:localhost");
    let server = PrivatePostgres::start(
        "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'",
        "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
        &[(&certs.join("server.pem"), "server.crt"), (&certs.join("server.key"), "server.key")],
    );
    let ca = certs.join("ca.pem");
    let url = |host: &str, query: &str| {
        format!("postgres://postgres@{host}:{}/postgres?{query}", server.port)
    };

    // verify-full: the chain and the name both check out.
    let full = url("localhost", &format!("sslmode=verify-full&sslrootcert={}", ca.display()));
    assert!(encrypted(&mut db::connect(&full).await.unwrap()).await);

    // The name is wrong (the certificate is for localhost only): verify-full refuses,
    // verify-ca accepts.
    let by_ip = url("127.0.0.1", &format!("sslmode=verify-full&sslrootcert={}", ca.display()));
    let error = db::connect(&by_ip).await.err().expect("a name mismatch is refused").to_string();
    assert!(error.contains("not valid for name"), "{error}");
    let ca_only = url("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={}", ca.display()));
    assert!(encrypted(&mut db::connect(&ca_only).await.unwrap()).await);

    // Another CA's root: the chain is not trusted, whatever the name.
    let other = url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", stranger.join("ca.pem").display()),
    );
    let error = db::connect(&other).await.err().expect("an unknown issuer is refused").to_string();
    assert!(error.contains("invalid peer certificate"), "{error}");
    let other_ca = url(
        "localhost",
        &format!("sslmode=require&sslrootcert={}", stranger.join("ca.pem").display()),
    );
    assert!(db::connect(&other_ca).await.is_err(), "require with a root checks the chain (libpq)");

    // require and prefer (the default) encrypt without checking; disable is refused here.
    assert!(encrypted(&mut db::connect(&url("127.0.0.1", "sslmode=require")).await.unwrap()).await);
    assert!(encrypted(&mut db::connect(&url("127.0.0.1", "")).await.unwrap()).await);
    let error = db::connect(&url("127.0.0.1", "sslmode=disable")).await.err().unwrap().to_string();
    assert!(error.contains("no encryption"), "{error}");

    // The migrations, the pool and readiness all go the same way.
    assert!(db::pending(&full).await.unwrap() > 0);
    assert!(db::migrate(&full).await.unwrap() > 0);
    assert_eq!(db::pending(&full).await.unwrap(), 0);
    let pool = db::pool(
        &DbConfig {
            url: full.clone(),
            pool_size: 2,
            pool_timeout: std::time::Duration::from_secs(5),
            app_role: None,
        },
        "main",
    )
    .unwrap();
    assert!(encrypted(&mut pool.get().await.unwrap()).await);
    db::ReadinessProbe::new(&full).check().await.unwrap();
    let _ = std::fs::remove_dir_all(&certs);
    let _ = std::fs::remove_dir_all(&stranger);
}
