//! The LDAP / Active Directory pull against a real OpenLDAP `slapd` (Debian's), started by the
//! test on a loopback port with a directory of its own.

use std::{collections::HashSet, process::Child, time::Duration};

use diesel::sql_types::{Bool, Text};
use diesel_async::RunQueryDsl;
use harness::{ADMIN_TOKEN, TestApp, TestDb, TestNats};
use ldap3::{LdapConnAsync, Mod};
use serde_json::Value;

const SUFFIX: &str = "dc=example,dc=com";
const ADMIN_DN: &str = "cn=admin,dc=example,dc=com";
const PASSWORD: &str = "slapd-test-secret";

/// Active Directory's attributes, for the AD-flavoured test (OpenLDAP has no such schema).
const AD_SCHEMA: &str = "\
attributetype ( 1.3.6.1.4.1.99999.1.1 NAME 'uSNChanged' EQUALITY integerMatch ORDERING integerOrderingMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.99999.1.2 NAME 'userAccountControl' EQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.99999.1.3 NAME 'sAMAccountName' EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.99999.1.4 NAME 'department' EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
objectclass ( 1.3.6.1.4.1.99999.2.1 NAME 'adAccount' SUP top AUXILIARY MAY ( uSNChanged $ userAccountControl $ sAMAccountName $ department ) )
";

/// A private slapd, stopped when dropped.
struct Slapd {
    child: Child,
    dir: std::path::PathBuf,
    url: String,
    /// `ldaps://127.0.0.1:<port>` when started with certificates.
    ldaps_url: Option<String>,
}

impl Slapd {
    async fn start() -> Slapd {
        Self::start_with(None).await
    }

    /// With `certs` (a directory holding `ca.pem`, `server.pem`, `server.key`), slapd also
    /// listens for `ldaps://` and offers StartTLS on `ldap://`.
    async fn start_with(certs: Option<&std::path::Path>) -> Slapd {
        let bin = std::env::var("SLAPD_BIN").unwrap_or_else(|_| "/usr/sbin/slapd".into());
        assert!(
            std::path::Path::new(&bin).exists(),
            "this test needs slapd: apt-get install slapd ldap-utils (or set SLAPD_BIN)"
        );
        let dir =
            std::env::temp_dir().join(format!("datasync-slapd-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::write(dir.join("ad.schema"), AD_SCHEMA).unwrap();
        let tls = certs.map_or(String::new(), |c| {
            format!(
                "TLSCACertificateFile {}\nTLSCertificateFile {}\nTLSCertificateKeyFile {}\n",
                c.join("ca.pem").display(),
                c.join("server.pem").display(),
                c.join("server.key").display()
            )
        });
        let config = format!(
            "{tls}include /etc/ldap/schema/core.schema\ninclude /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\ninclude {ad}\nmodulepath /usr/lib/ldap\n\
             moduleload back_mdb\npidfile {pid}\ndatabase mdb\nmaxsize 104857600\nsuffix \"{SUFFIX}\"\n\
             rootdn \"{ADMIN_DN}\"\nrootpw {PASSWORD}\ndirectory {data}\nindex objectClass eq\n",
            ad = dir.join("ad.schema").display(),
            pid = dir.join("slapd.pid").display(),
            data = dir.join("data").display(),
        );
        std::fs::write(dir.join("slapd.conf"), config).unwrap();
        let port = harness::process::free_port();
        let url = format!("ldap://127.0.0.1:{port}");
        let ldaps_url =
            certs.map(|_| format!("ldaps://127.0.0.1:{}", harness::process::free_port()));
        let listen = match &ldaps_url {
            Some(ldaps) => format!("{url}/ {ldaps}/"),
            None => format!("{url}/"),
        };
        let child = std::process::Command::new(&bin)
            .args(["-h", &listen, "-f"])
            .arg(dir.join("slapd.conf"))
            .args(["-d", "0"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let slapd = Slapd { child, dir, url, ldaps_url };
        let up = harness::eventually(Duration::from_secs(10), || async {
            let (conn, mut ldap) = LdapConnAsync::new(&slapd.url).await.ok()?;
            ldap3::drive!(conn);
            ldap.simple_bind(ADMIN_DN, PASSWORD).await.ok()?.success().ok().map(|_| ())
        })
        .await;
        assert!(up.is_some(), "slapd did not come up");
        slapd
            .add(
                SUFFIX,
                &[
                    ("objectClass", &["dcObject", "organization"]),
                    ("dc", &["example"]),
                    ("o", &["Example"]),
                ],
            )
            .await;
        for ou in ["people", "groups"] {
            slapd
                .add(
                    &format!("ou={ou},{SUFFIX}"),
                    &[("objectClass", &["organizationalUnit"]), ("ou", &[ou])],
                )
                .await;
        }
        slapd
    }

    async fn connect(&self) -> ldap3::Ldap {
        let (conn, mut ldap) = LdapConnAsync::new(&self.url).await.unwrap();
        ldap3::drive!(conn);
        ldap.simple_bind(ADMIN_DN, PASSWORD).await.unwrap().success().unwrap();
        ldap
    }

    async fn add(&self, dn: &str, attrs: &[(&str, &[&str])]) {
        let attrs: Vec<(&str, HashSet<&str>)> =
            attrs.iter().map(|(k, v)| (*k, v.iter().copied().collect())).collect();
        self.connect()
            .await
            .add(dn, attrs)
            .await
            .unwrap()
            .success()
            .unwrap_or_else(|e| panic!("adding {dn}: {e}"));
    }

    async fn replace(&self, dn: &str, attr: &str, values: &[&str]) {
        let m = vec![Mod::Replace(attr, values.iter().copied().collect::<HashSet<_>>())];
        self.connect().await.modify(dn, m).await.unwrap().success().unwrap();
    }

    async fn delete(&self, dn: &str) {
        self.connect().await.delete(dn).await.unwrap().success().unwrap();
    }

    fn config(
        &self,
        flavor: user_sync::ldap::Flavor,
        user_filter: &str,
    ) -> user_sync::ldap::LdapConfig {
        user_sync::ldap::LdapConfig {
            url: self.url.clone(),
            bind_dn: ADMIN_DN.into(),
            bind_password: PASSWORD.into(),
            base_dn: SUFFIX.into(),
            user_filter: user_filter.into(),
            group_filter: "(objectClass=groupOfNames)".into(),
            flavor,
            source: "ldap".into(),
            every: None,
            full_every: Duration::from_secs(3600),
            // Small pages: the pass pages through them.
            page_size: 2,
            starttls: false,
            ca_file: None,
        }
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Adds an `inetOrgPerson`.
async fn add_person(slapd: &Slapd, dn: &str, uid: &str, cn: &str, mail: &str) {
    slapd
        .add(
            dn,
            &[
                ("objectClass", &["inetOrgPerson"]),
                ("uid", &[uid]),
                ("cn", &[cn]),
                ("sn", &[cn]),
                ("mail", &[mail]),
            ],
        )
        .await;
}

async fn spawn(config: user_sync::ldap::LdapConfig) -> (TestApp, TestDb, TestNats) {
    harness::init_logs();
    let (db, nats) = (TestDb::new().await, TestNats::new());
    let mut c = user_sync::Config::defaults(harness::common_config(user_sync::SERVICE, &db, &nats));
    c.ldap = Some(config);
    c.scim_tokens = vec![("ldap".into(), "ldap-reader-token-0123456789".into())];
    (TestApp::spawn(user_sync::build(c).await.unwrap()), db, nats)
}

async fn sync(app: &TestApp, full: bool) -> Value {
    let r = app
        .http
        .post(app.url(&format!("/admin/directory/ldap/sync?full={full}")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[derive(diesel::QueryableByName, Debug, PartialEq)]
struct User {
    #[diesel(sql_type = Text)]
    user_name: String,
    #[diesel(sql_type = Bool)]
    active: bool,
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
    title: Option<String>,
}

async fn users(db: &TestDb) -> Vec<User> {
    let mut conn = db.connect().await;
    diesel::sql_query("SELECT user_name, active, resource->>'title' AS title FROM directory.users ORDER BY user_name")
        .load(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn users_and_groups_are_pulled_deltas_follow_and_deleted_entries_are_deactivated() {
    let slapd = Slapd::start().await;
    let people = |uid: &str| format!("uid={uid},ou=people,{SUFFIX}");
    for (uid, cn) in [("ann", "Ann Lee"), ("bob", "Bob Ray"), ("cy", "Cy Po")] {
        add_person(&slapd, &people(uid), uid, cn, &format!("{uid}@example.com")).await;
    }
    let members = [people("ann"), people("bob")];
    slapd
        .add(
            &format!("cn=eng,ou=groups,{SUFFIX}"),
            &[
                ("objectClass", &["groupOfNames"]),
                ("cn", &["eng"]),
                ("member", &[members[0].as_str(), members[1].as_str()]),
            ],
        )
        .await;
    let (app, db, nats) =
        spawn(slapd.config(user_sync::ldap::Flavor::OpenLdap, "(objectClass=inetOrgPerson)")).await;

    let first = sync(&app, true).await;
    assert_eq!(
        (first["full"].as_bool(), first["created"].as_i64(), first["groups_seen"].as_i64()),
        (Some(true), Some(3), Some(1)),
        "{first}"
    );
    assert_eq!(
        users(&db).await.iter().map(|u| u.user_name.as_str()).collect::<Vec<_>>(),
        ["ann", "bob", "cy"]
    );
    // The same directory through SCIM, with the group's members.
    let scim = app
        .http
        .get(app.url("/scim/v2/Groups"))
        .bearer_auth("ldap-reader-token-0123456789")
        .send()
        .await
        .unwrap();
    let groups: Value = scim.json().await.unwrap();
    assert_eq!(groups["Resources"][0]["members"].as_array().unwrap().len(), 2, "{groups}");

    // Changes in LDAP: a delta pass reads what changed from the cursor's second on (entries of
    // that very second again, harmlessly: LDAP's time has whole seconds and no `>`).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    slapd.replace(&people("bob"), "title", &["Manager"]).await;
    let delta = sync(&app, false).await;
    assert_eq!(
        (delta["full"].as_bool(), delta["updated"].as_i64(), delta["created"].as_i64()),
        (Some(false), Some(1), Some(0)),
        "{delta}"
    );
    assert_eq!(users(&db).await[1].title.as_deref(), Some("Manager"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    slapd.replace(&people("ann"), "title", &["Engineer"]).await;
    let delta = sync(&app, false).await;
    assert_eq!(
        (delta["users_seen"].as_i64(), delta["updated"].as_i64()),
        (Some(2), Some(1)),
        "bob (the cursor's second) and ann only: {delta}"
    );

    // An entry deleted in LDAP: a delta pass cannot see it; the full pass deactivates it.
    slapd.delete(&people("cy")).await;
    assert_eq!(sync(&app, false).await["deactivated"], 0);
    let full = sync(&app, true).await;
    assert_eq!(full["deactivated"], 1, "{full}");
    assert_eq!(
        users(&db).await[2],
        User { user_name: "cy".into(), active: false, title: None },
        "deactivated, never deleted"
    );

    // An entry that cannot be a user is a row of the error ledger; the pass goes on.
    slapd
        .add(
            &format!("cn=nouid,ou=people,{SUFFIX}"),
            &[("objectClass", &["inetOrgPerson"]), ("cn", &["No Uid"]), ("sn", &["x"])],
        )
        .await;
    let with_error = sync(&app, true).await;
    assert_eq!(with_error["failed"], 1, "{with_error}");
    let ledger: Value =
        app.admin_get("/admin/record-errors?system=ldap").await.json().await.unwrap();
    assert_eq!(ledger["count"], 1);
    assert!(ledger["errors"][0]["error"].as_str().unwrap().contains("has no uid"), "{ledger}");

    // A membership made outside LDAP is drift: reported, and raised as an alert.
    let mut conn = db.connect().await;
    diesel::sql_query("INSERT INTO directory.memberships (group_id, user_id) SELECT g.id, u.id FROM directory.groups g, directory.users u \
                       WHERE g.display_name = 'eng' AND u.user_name = 'cy'")
        .execute(&mut conn)
        .await
        .unwrap();
    let pass = sync(&app, false).await;
    assert_eq!(pass["drift"][0]["added_outside"], serde_json::json!(["cy"]), "{pass}");
    let drift: Value = app.admin_get("/admin/directory/drift").await.json().await.unwrap();
    assert_eq!(drift[0]["display_name"], "eng");
    let js = async_nats::jetstream::new(nats.client().await);
    let alerts = harness::eventually(Duration::from_secs(10), || async {
        let stream = js.get_stream(format!("{}_ALERTS", nats.prefix)).await.ok()?;
        let m =
            stream.get_last_raw_message_by_subject(&nats.subject("alerts.warning")).await.ok()?;
        serde_json::from_slice::<Value>(&m.payload).ok()
    })
    .await
    .expect("a drift alert");
    assert_eq!(alerts["data"]["kind"], "group_drift");
}

#[tokio::test]
async fn active_directory_deltas_follow_usn_changed_and_disabled_accounts_are_inactive() {
    let slapd = Slapd::start().await;
    let dn = |name: &str| format!("cn={name},ou=people,{SUFFIX}");
    for (name, uac, usn) in [("dana", "512", "100"), ("eve", "514", "101"), ("finn", "512", "102")]
    {
        slapd
            .add(
                &dn(name),
                &[
                    ("objectClass", &["inetOrgPerson", "adAccount"]),
                    ("cn", &[name]),
                    ("sn", &[name]),
                    ("sAMAccountName", &[name]),
                    ("userAccountControl", &[uac]),
                    ("uSNChanged", &[usn]),
                    ("department", &["Ops"]),
                ],
            )
            .await;
    }
    let (app, db, _nats) =
        spawn(slapd.config(user_sync::ldap::Flavor::ActiveDirectory, "(objectClass=adAccount)"))
            .await;
    let first = sync(&app, true).await;
    assert_eq!(first["created"], 3, "{first}");
    let all = users(&db).await;
    assert_eq!(
        all.iter().map(|u| (u.user_name.as_str(), u.active)).collect::<Vec<_>>(),
        [("dana", true), ("eve", false), ("finn", true)]
    );

    // AD bumps uSNChanged on a change: finn is disabled.
    slapd.replace(&dn("finn"), "userAccountControl", &["514"]).await;
    slapd.replace(&dn("finn"), "uSNChanged", &["150"]).await;
    let delta = sync(&app, false).await;
    assert_eq!(
        (delta["users_seen"].as_i64(), delta["deactivated"].as_i64()),
        (Some(1), Some(1)),
        "{delta}"
    );
    assert!(!users(&db).await[2].active);
    let again = sync(&app, false).await;
    assert_eq!(again["users_seen"], 0, "nothing changed since uSNChanged 150: {again}");
}

async fn admin_post(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    let r = app.http.post(app.url(path)).bearer_auth(ADMIN_TOKEN).json(&body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_full_resync_is_a_bulk_job_with_a_dry_run_first() {
    let slapd = Slapd::start().await;
    let people = |uid: &str| format!("uid={uid},ou=people,{SUFFIX}");
    for n in 0..5 {
        let uid = format!("user{n}");
        add_person(
            &slapd,
            &people(&uid),
            &uid,
            &format!("User {n}"),
            &format!("{uid}@example.com"),
        )
        .await;
    }
    let (app, db, _nats) =
        spawn(slapd.config(user_sync::ldap::Flavor::OpenLdap, "(objectClass=inetOrgPerson)")).await;
    sync(&app, true).await;
    // Changed in LDAP since: one title, one new entry.
    slapd.replace(&people("user2"), "title", &["Lead"]).await;
    add_person(&slapd, &people("user9"), "user9", "User 9", "user9@example.com").await;

    let load = serde_json::json!({"source": "ldap", "target": "directory", "entity": "users"});
    let (status, dry) = admin_post(&app, "/admin/bulk/dry-run", load.clone()).await;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(
        (
            dry["read"].as_i64(),
            dry["create"].as_i64(),
            dry["update"].as_i64(),
            dry["unchanged"].as_i64()
        ),
        (Some(6), Some(1), Some(1), Some(4)),
        "{dry}"
    );
    assert_eq!(
        (dry["differences"][0]["field"].as_str(), dry["differences"][0]["theirs"].as_str()),
        (Some("title"), Some("Lead"))
    );
    assert_eq!(users(&db).await.len(), 5, "a dry run writes nothing");

    let mut job_request = load;
    job_request["batch_size"] = serde_json::json!(2);
    let (status, job) = admin_post(&app, "/admin/bulk/jobs", job_request).await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    let done = harness::eventually(Duration::from_secs(30), || async {
        let job: Value =
            app.admin_get(&format!("/admin/bulk/jobs/{id}")).await.json().await.ok()?;
        matches!(job["status"].as_str(), Some("completed" | "failed")).then_some(job)
    })
    .await
    .expect("the job ends");
    assert_eq!(
        (done["status"].as_str(), done["processed_records"].as_i64(), done["error_count"].as_i64()),
        (Some("completed"), Some(6), Some(0)),
        "{done}"
    );
    let all = users(&db).await;
    assert_eq!(all.len(), 6);
    assert_eq!(all.iter().find(|u| u.user_name == "user2").unwrap().title.as_deref(), Some("Lead"));
}

/// The bind password never crosses the network in the clear: ldaps:// and StartTLS both check
/// the directory's certificate (chain and name) against LDAP_CA_FILE, and a directory whose
/// certificate the service does not trust is not pulled from.
#[tokio::test]
async fn ldaps_and_starttls_check_the_directory_certificate() {
    let certs = harness::private::temp_dir("ldaptls");
    harness::private::certificates(&certs, "IP:127.0.0.1");
    let slapd = Slapd::start_with(Some(&certs)).await;
    add_person(&slapd, &format!("uid=ann,ou=people,{SUFFIX}"), "ann", "Ann", "ann@example.com")
        .await;
    let ca = certs.join("ca.pem").display().to_string();
    let plain = slapd.config(user_sync::ldap::Flavor::OpenLdap, "(objectClass=inetOrgPerson)");

    let ldaps = user_sync::ldap::LdapConfig {
        url: slapd.ldaps_url.clone().unwrap(),
        ca_file: Some(ca.clone()),
        ..plain.clone()
    };
    let starttls =
        user_sync::ldap::LdapConfig { starttls: true, ca_file: Some(ca), ..plain.clone() };
    for config in [ldaps, starttls] {
        assert!(config.encrypted());
        let (app, db, _nats) = spawn(config).await;
        assert_eq!(sync(&app, true).await["users_seen"], 1);
        assert_eq!(users(&db).await.len(), 1);
        app.stop().await;
    }

    // Only the system's roots: the test CA is not among them, so nothing is pulled.
    let untrusted = user_sync::ldap::LdapConfig { url: slapd.ldaps_url.clone().unwrap(), ..plain };
    let (app, db, _nats) = spawn(untrusted).await;
    let r = app
        .http
        .post(app.url("/admin/directory/ldap/sync?full=true"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert!(!r.status().is_success(), "an untrusted directory is refused");
    assert!(users(&db).await.is_empty());
    app.stop().await;
    let _ = std::fs::remove_dir_all(&certs);
}
