//! user-sync's SCIM service provider against the real PostgreSQL and NATS, driven with the
//! requests Okta and Microsoft Entra ID really send.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use harness::{TestApp, TestDb, TestNats};
use serde_json::{Value, json};

const OKTA: &str = "okta-token-0123456789abcdef";
const ENTRA: &str = "entra-token-0123456789abcdef";
const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

mod ldap;

struct Scim {
    app: TestApp,
    nats: TestNats,
    _db: TestDb,
}

async fn spawn() -> Scim {
    harness::init_logs();
    let (db, nats) = (TestDb::new().await, TestNats::new());
    let mut config =
        user_sync::Config::defaults(harness::common_config(user_sync::SERVICE, &db, &nats));
    config.scim_tokens = vec![("okta".into(), OKTA.into()), ("entra".into(), ENTRA.into())];
    let app = TestApp::spawn(user_sync::build(config).await.unwrap());
    Scim { app, nats, _db: db }
}

impl Scim {
    async fn call(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut request = self
            .app
            .http
            .request(method, self.app.url(&format!("/scim/v2{path}")))
            .bearer_auth(token);
        if let Some(body) = body {
            request =
                request.header("content-type", "application/scim+json").body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null), headers)
    }

    async fn get(&self, token: &str, path: &str) -> (u16, Value) {
        let (s, b, _) = self.call(token, reqwest::Method::GET, path, None).await;
        (s, b)
    }

    async fn post(&self, token: &str, path: &str, body: Value) -> (u16, Value) {
        let (s, b, _) = self.call(token, reqwest::Method::POST, path, Some(body)).await;
        (s, b)
    }

    async fn patch(&self, token: &str, path: &str, operations: Value) -> (u16, Value) {
        let (s, b, _) = self
            .call(
                token,
                reqwest::Method::PATCH,
                path,
                Some(json!({"schemas": [PATCH], "Operations": operations})),
            )
            .await;
        (s, b)
    }

    /// The newest message on `subject` of the DIRECTORY stream, once the outbox relay has
    /// published one (waits up to 10 s).
    async fn last_event(&self, subject: &str) -> Option<Value> {
        harness::eventually(std::time::Duration::from_secs(10), || async {
            let js = async_nats::jetstream::new(self.nats.client().await);
            let stream = js.get_stream(format!("{}_DIRECTORY", self.nats.prefix)).await.ok()?;
            let m =
                stream.get_last_raw_message_by_subject(&self.nats.subject(subject)).await.ok()?;
            serde_json::from_slice(&m.payload).ok()
        })
        .await
    }
}

fn enc(filter: &str) -> String {
    filter
        .replace('%', "%25")
        .replace(' ', "%20")
        .replace('"', "%22")
        .replace('[', "%5B")
        .replace(']', "%5D")
        .replace('&', "%26")
}

/// Okta's create request (as its SCIM 2.0 guide shows it).
fn okta_user(user_name: &str, given: &str) -> Value {
    json!({"schemas": [USER], "userName": user_name,
        "name": {"givenName": given, "familyName": "Doe"},
        "emails": [{"primary": true, "value": user_name, "type": "work"}],
        "displayName": format!("{given} Doe"), "locale": "en-US", "externalId": format!("00u{given}"),
        "groups": [], "password": "1mz050nq", "active": true})
}

#[tokio::test]
async fn okta_tests_the_connection_looks_up_creates_deprovisions_and_pushes_groups() {
    let t = spawn().await;
    // The connection test.
    let (status, list) = t.get(OKTA, "/Users?startIndex=1&count=2").await;
    assert_eq!(status, 200);
    assert_eq!(
        list,
        json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": 0, "startIndex": 1, "itemsPerPage": 0, "Resources": []})
    );
    // The pre-create lookup, then the create.
    let lookup = format!(
        "/Users?filter={}&startIndex=1&count=100",
        enc(r#"userName eq "jane.doe@example.com""#)
    );
    assert_eq!(t.get(OKTA, &lookup).await.1["totalResults"], 0);
    let (status, body, headers) = t
        .call(
            OKTA,
            reqwest::Method::POST,
            "/Users",
            Some(okta_user("jane.doe@example.com", "Jane")),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(headers["content-type"], "application/scim+json");
    assert_eq!(headers["etag"], "W/\"1\"");
    assert!(
        headers["location"]
            .to_str()
            .unwrap()
            .ends_with(&format!("/scim/v2/Users/{}", body["id"].as_str().unwrap()))
    );
    assert!(body.get("password").is_none(), "a password is never returned (nor kept)");
    let jane = body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (body["meta"]["resourceType"].as_str(), body["active"].as_bool()),
        (Some("User"), Some(true))
    );
    let found = t.get(OKTA, &lookup).await.1;
    assert_eq!(
        (found["totalResults"].as_i64(), found["Resources"][0]["id"].as_str()),
        (Some(1), Some(jane.as_str()))
    );
    // userName is unique case-insensitively.
    let (status, error) = t.post(OKTA, "/Users", okta_user("JANE.DOE@example.com", "Other")).await;
    assert_eq!(
        (status, error["scimType"].as_str(), error["status"].as_str()),
        (409, Some("uniqueness"), Some("409"))
    );
    assert_eq!(error["schemas"], json!(["urn:ietf:params:scim:api:messages:2.0:Error"]));

    // Deprovisioning: Okta never deletes, it deactivates.
    let (status, body) = t
        .patch(
            OKTA,
            &format!("/Users/{jane}"),
            json!([{"op": "replace", "value": {"active": false}}]),
        )
        .await;
    assert_eq!(
        (status, body["active"].as_bool(), body["meta"]["version"].as_str()),
        (200, Some(false), Some("W/\"2\""))
    );
    let event = t.last_event("directory.user.deactivated").await.expect("a deactivation event");
    assert_eq!(
        (event["data"]["id"].as_str(), event["data"]["source"].as_str()),
        (Some(jane.as_str()), Some("okta"))
    );

    // Group push: create with a member, add one, remove one, rename.
    let (_, john) = t.post(OKTA, "/Users", okta_user("john@example.com", "John")).await;
    let john = john["id"].as_str().unwrap().to_owned();
    let (status, group) = t
        .post(
            OKTA,
            "/Groups",
            json!({"schemas": [GROUP], "displayName": "Engineering",
        "members": [{"value": jane, "display": "jane.doe@example.com"}]}),
        )
        .await;
    assert_eq!(status, 201, "{group}");
    let gid = group["id"].as_str().unwrap().to_owned();
    assert_eq!(group["members"][0]["value"], jane.as_str());
    let (status, _) = t.patch(OKTA, &format!("/Groups/{gid}"), json!([{"op": "add", "path": "members", "value": [{"value": john, "display": "john@example.com"}]}])).await;
    assert_eq!(status, 200);
    let (status, _) = t
        .patch(
            OKTA,
            &format!("/Groups/{gid}"),
            json!([{"op": "remove", "path": format!("members[value eq \"{jane}\"]")}]),
        )
        .await;
    assert_eq!(status, 200);
    let (status, renamed) = t
        .patch(
            OKTA,
            &format!("/Groups/{gid}"),
            json!([{"op": "replace", "value": {"id": gid, "displayName": "Eng Team"}}]),
        )
        .await;
    assert_eq!(status, 200, "{renamed}");
    assert_eq!(renamed["displayName"], "Eng Team");
    assert_eq!(
        renamed["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["value"].as_str().unwrap())
            .collect::<Vec<_>>(),
        [john.as_str()]
    );
    let user = t.get(OKTA, &format!("/Users/{john}")).await.1;
    assert_eq!(user["groups"][0]["display"], "Eng Team");

    // Another source sees none of it.
    assert_eq!(t.get(ENTRA, &format!("/Users/{jane}")).await.0, 404);
    assert_eq!(t.get(ENTRA, "/Users").await.1["totalResults"], 0);
    assert_eq!(
        t.patch(
            ENTRA,
            &format!("/Groups/{gid}"),
            json!([{"op": "replace", "path": "displayName", "value": "x"}])
        )
        .await
        .0,
        404
    );
}

#[tokio::test]
async fn entra_filters_sends_strings_for_booleans_capitalised_ops_and_removes_one_member() {
    let t = spawn().await;
    // Entra's create, with the enterprise extension.
    let create = |user_name: &str, external: &str, mail: &str| {
        let number = if external == "ann" { "701984" } else { external };
        json!({
        "schemas": [USER, ENTERPRISE], "externalId": external, "userName": user_name, "active": true,
        "displayName": user_name, "emails": [{"primary": true, "type": "work", "value": mail}],
        "meta": {"resourceType": "User"}, "name": {"formatted": "Ann Lee", "familyName": "Lee", "givenName": "Ann"},
        "title": "Engineer", ENTERPRISE: {"employeeNumber": number, "department": "R&D", "manager": {"value": "mgr-1"}}})
    };
    let (status, ann) =
        t.post(ENTRA, "/Users", create("ann@contoso.com", "ann", "ann@contoso.com")).await;
    assert_eq!(status, 201, "{ann}");
    assert_eq!(ann["schemas"], json!([USER, ENTERPRISE]));
    assert_eq!(ann[ENTERPRISE]["employeeNumber"], "701984");
    let ann = ann["id"].as_str().unwrap().to_owned();
    let mut members = vec![ann.clone()];
    for n in ["bob", "cy"] {
        let (_, u) = t
            .post(
                ENTRA,
                "/Users",
                create(&format!("{n}@contoso.com"), n, &format!("{n}@contoso.com")),
            )
            .await;
        members.push(u["id"].as_str().unwrap().to_owned());
    }

    // Its filters.
    for filter in [
        r#"userName eq "ANN@contoso.com""#,
        r#"externalId eq "ann""#,
        r#"emails[type eq "work"].value eq "ann@contoso.com""#,
        r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "701984" and active eq true"#,
    ] {
        let (status, found) = t.get(ENTRA, &format!("/Users?filter={}", enc(filter))).await;
        assert_eq!((status, found["totalResults"].as_i64()), (200, Some(1)), "{filter}: {found}");
        assert_eq!(found["Resources"][0]["id"], ann.as_str());
    }
    assert_eq!(
        t.get(ENTRA, &format!("/Users?filter={}", enc(r#"externalId eq "ANN""#))).await.1["totalResults"],
        0,
        "externalId is caseExact"
    );

    // Capitalised ops, a boolean as a string, Add without a path carrying the extension URN.
    let (status, body) = t.patch(ENTRA, &format!("/Users/{ann}"), json!([
        {"op": "Replace", "path": "active", "value": "False"},
        {"op": "Add", "value": {"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department": "Sales", "nickName": "annie"}},
        {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "ann.lee@contoso.com"}
    ])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            body["active"].as_bool(),
            body[ENTERPRISE]["department"].as_str(),
            body["nickName"].as_str()
        ),
        (Some(false), Some("Sales"), Some("annie"))
    );
    assert_eq!(body["emails"][0]["value"], "ann.lee@contoso.com");
    assert_eq!(body[ENTERPRISE]["employeeNumber"], "701984", "the rest of the extension stays");

    // A group of three; Entra's member removal names one member and removes only that one.
    let (_, group) = t
        .post(
            ENTRA,
            "/Groups",
            json!({"schemas": [GROUP], "displayName": "Sales", "externalId": "g1",
        "members": members.iter().map(|m| json!({"value": m})).collect::<Vec<_>>()}),
        )
        .await;
    let gid = group["id"].as_str().unwrap().to_owned();
    assert_eq!(group["members"].as_array().unwrap().len(), 3);
    let (status, _) = t
        .patch(
            ENTRA,
            &format!("/Groups/{gid}"),
            json!([{"op": "Remove", "path": "members", "value": [{"value": members[1]}]}]),
        )
        .await;
    assert_eq!(status, 200);
    let (_, found) = t
        .get(
            ENTRA,
            &format!(
                "/Groups?filter={}&excludedAttributes=members",
                enc(r#"displayName eq "Sales""#)
            ),
        )
        .await;
    assert_eq!(found["totalResults"], 1);
    assert!(found["Resources"][0].get("members").is_none(), "{found}");
    let (_, group) = t.get(ENTRA, &format!("/Groups/{gid}")).await;
    let left: Vec<&str> =
        group["members"].as_array().unwrap().iter().map(|m| m["value"].as_str().unwrap()).collect();
    assert_eq!(left.len(), 2);
    assert!(!left.contains(&members[1].as_str()) && left.contains(&members[0].as_str()));

    // DELETE, then GET is 404.
    let (status, _, _) =
        t.call(ENTRA, reqwest::Method::DELETE, &format!("/Users/{ann}"), None).await;
    assert_eq!(status, 204);
    let (status, error) = t.get(ENTRA, &format!("/Users/{ann}")).await;
    assert_eq!((status, error["status"].as_str()), (404, Some("404")));
    assert!(t.last_event("directory.user.deleted").await.is_some());
}

#[tokio::test]
async fn lists_page_sort_and_project_writes_check_etags_and_errors_are_scim() {
    let t = spawn().await;
    for name in ["dave", "alice", "carol", "bob", "erin"] {
        assert_eq!(
            t.post(OKTA, "/Users", okta_user(&format!("{name}@example.com"), name)).await.0,
            201
        );
    }
    let (_, page) =
        t.get(OKTA, "/Users?startIndex=2&count=2&sortBy=userName&attributes=userName").await;
    assert_eq!(
        (page["totalResults"].as_i64(), page["startIndex"].as_i64(), page["itemsPerPage"].as_i64()),
        (Some(5), Some(2), Some(2))
    );
    let names: Vec<&str> = page["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["userName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["bob@example.com", "carol@example.com"]);
    let keys: Vec<&String> = page["Resources"][0].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["id", "schemas", "userName"]);
    let (_, desc) = t.get(OKTA, "/Users?sortBy=name.givenName&sortOrder=descending&count=1").await;
    assert_eq!(desc["Resources"][0]["name"]["givenName"], "erin");
    let (_, co) = t
        .get(
            OKTA,
            &format!(
                "/Users?filter={}",
                enc(r#"userName co "AR" or (name.givenName sw "d" and not (active eq false))"#)
            ),
        )
        .await;
    assert_eq!(co["totalResults"], 2, "carol and dave: {co}");
    for (prefix, expected) in [("ALI", 1), ("%", 0), ("_lice", 0)] {
        let path = format!("/Users?filter={}", enc(&format!(r#"userName sw "{prefix}""#)));
        assert_eq!(
            t.get(OKTA, &path).await.1["totalResults"],
            expected,
            "{prefix}: LIKE's wildcards are literal"
        );
    }
    let (_, pr) = t.get(OKTA, &format!("/Users?filter={}", enc("title pr"))).await;
    assert_eq!(pr["totalResults"], 0);
    // The same list as a POST .search (RFC 7644 §3.4.3): the filter in the body, not the URL.
    let (status, found) = t
        .post(
            OKTA,
            "/Users/.search",
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                "filter": r#"userName co "AR" or name.givenName sw "d""#, "sortBy": "userName",
                "startIndex": 1, "count": 1, "attributes": ["userName"]}),
        )
        .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(
        (found["totalResults"].as_i64(), found["itemsPerPage"].as_i64()),
        (Some(2), Some(1)),
        "{found}"
    );
    let keys: Vec<&str> =
        found["Resources"][0].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        (keys, &found["Resources"][0]["userName"]),
        (vec!["id", "schemas", "userName"], &json!("carol@example.com"))
    );
    let (status, error) = t.post(OKTA, "/Users/.search", json!({"filter": "userName pr"})).await;
    assert_eq!((status, error["scimType"].as_str()), (400, Some("invalidSyntax")), "{error}");
    let (status, _) = t
        .post(
            OKTA,
            "/Groups/.search",
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"]}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, count_only) = t.get(OKTA, "/Users?count=0").await;
    assert_eq!(
        (count_only["totalResults"].as_i64(), count_only["Resources"].as_array().map(Vec::len)),
        (Some(5), Some(0))
    );

    // ETags: a stale If-Match is refused, the current one applies.
    let (_, alice) =
        t.get(OKTA, &format!("/Users?filter={}", enc(r#"userName eq "alice@example.com""#))).await;
    let alice = alice["Resources"][0].clone();
    let id = alice["id"].as_str().unwrap();
    let put = |version: &'static str| {
        let mut body = alice.clone();
        body["title"] = json!("CTO");
        let request = t
            .app
            .http
            .put(t.app.url(&format!("/scim/v2/Users/{id}")))
            .bearer_auth(OKTA)
            .header("if-match", version)
            .json(&body);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(put("W/\"7\"").await, 412);
    assert_eq!(put("W/\"1\"").await, 200);
    assert_eq!(put("W/\"1\"").await, 412, "the version moved on");

    // Errors name what is wrong, as SCIM error documents.
    let (status, e) = t.get(OKTA, &format!("/Users?filter={}", enc("userName eq"))).await;
    assert_eq!((status, e["scimType"].as_str()), (400, Some("invalidFilter")));
    let (status, e) = t.get(OKTA, &format!("/Users?filter={}", enc(r#"shoeSize eq "9""#))).await;
    assert_eq!((status, e["scimType"].as_str()), (400, Some("invalidFilter")));
    let (status, e) =
        t.post(OKTA, "/Users", json!({"schemas": [USER], "name": {"givenName": "x"}})).await;
    assert_eq!((status, e["scimType"].as_str()), (400, Some("invalidValue")));
    assert!(e["detail"].as_str().unwrap().contains("userName"));
    let (status, e) = t.post(OKTA, "/Users", json!({"userName": "x"})).await;
    assert_eq!((status, e["scimType"].as_str()), (400, Some("invalidSyntax")));
    let (status, e) = t.patch(OKTA, &format!("/Users/{id}"), json!([{"op": "remove"}])).await;
    assert_eq!((status, e["scimType"].as_str()), (400, Some("noTarget")));
    assert_eq!(t.get("not-a-token-at-all-000", "/Users").await.0, 401);
    let anonymous = t.app.http.get(t.app.url("/scim/v2/Users")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);

    // Discovery.
    let (status, config) = t.get(OKTA, "/ServiceProviderConfig").await;
    assert_eq!(
        (status, config["patch"]["supported"].as_bool(), config["filter"]["supported"].as_bool()),
        (200, Some(true), Some(true))
    );
    let (_, types) = t.get(OKTA, "/ResourceTypes").await;
    assert_eq!(types["totalResults"], 2);
    let (status, schema) = t.get(OKTA, &format!("/Schemas/{ENTERPRISE}")).await;
    assert_eq!((status, schema["name"].as_str()), (200, Some("EnterpriseUser")));
}
