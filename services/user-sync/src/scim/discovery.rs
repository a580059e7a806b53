//! SCIM's discovery endpoints: `ServiceProviderConfig`, `ResourceTypes` and `Schemas`.

use actix_web::{HttpResponse, get, web};
use serde_json::{Value, json};

use super::{
    MEDIA_TYPE, ScimError, ScimSource,
    filter::ENTERPRISE,
    representation::{GROUP_SCHEMA, MAX_COUNT, USER_SCHEMA, list_of},
};
use crate::AppState;

fn discovery(body: Value) -> HttpResponse {
    HttpResponse::Ok().content_type(MEDIA_TYPE).body(body.to_string())
}

#[get("/scim/v2/ServiceProviderConfig")]
async fn service_provider_config(_: ScimSource, state: web::Data<AppState>) -> HttpResponse {
    discovery(json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "documentationUri": "https://github.com/datasync/datasync#user-sync",
        "patch": {"supported": true},
        "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": true, "maxResults": MAX_COUNT},
        "changePassword": {"supported": false},
        "sort": {"supported": true},
        "etag": {"supported": true},
        "authenticationSchemes": [{"type": "oauthbearertoken", "name": "Bearer token",
            "description": "A bearer token per source (SCIM_TOKENS)", "primary": true}],
        "meta": {"resourceType": "ServiceProviderConfig", "location": format!("{}/ServiceProviderConfig", state.scim_base_url)},
    }))
}

fn resource_types(base: &str) -> Vec<Value> {
    vec![
        json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"], "id": "User", "name": "User",
            "endpoint": "/Users", "description": "User Account", "schema": USER_SCHEMA,
            "schemaExtensions": [{"schema": ENTERPRISE, "required": false}],
            "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/User")}}),
        json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"], "id": "Group", "name": "Group",
            "endpoint": "/Groups", "description": "Group", "schema": GROUP_SCHEMA,
            "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/Group")}}),
    ]
}

#[get("/scim/v2/ResourceTypes")]
async fn list_resource_types(_: ScimSource, state: web::Data<AppState>) -> HttpResponse {
    discovery(list_of(resource_types(&state.scim_base_url)))
}

#[get("/scim/v2/ResourceTypes/{name}")]
async fn get_resource_type(
    _: ScimSource,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ScimError> {
    resource_types(&state.scim_base_url)
        .into_iter()
        .find(|t| t["id"] == name.as_str())
        .map(discovery)
        .ok_or_else(|| ScimError::not_found(format!("resource type {name}")))
}

fn attribute(name: &str, kind: &str, multi: bool, extra: Value) -> Value {
    let mut a = json!({"name": name, "type": kind, "multiValued": multi, "required": false,
        "caseExact": false, "mutability": "readWrite", "returned": "default", "uniqueness": "none"});
    if let (Some(a), Value::Object(extra)) = (a.as_object_mut(), extra) {
        a.extend(extra);
    }
    a
}

fn multi_complex(name: &str) -> Value {
    attribute(
        name,
        "complex",
        true,
        json!({"subAttributes": [
        attribute("value", "string", false, json!({})), attribute("display", "string", false, json!({})),
        attribute("type", "string", false, json!({})), attribute("primary", "boolean", false, json!({}))]}),
    )
}

fn schemas(base: &str) -> Vec<Value> {
    let name_parts: Vec<Value> = [
        "formatted",
        "familyName",
        "givenName",
        "middleName",
        "honorificPrefix",
        "honorificSuffix",
    ]
    .iter()
    .map(|n| attribute(n, "string", false, json!({})))
    .collect();
    let schema = |id: &str, name: &str, attributes: Vec<Value>| {
        json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"], "id": id, "name": name,
        "attributes": attributes, "meta": {"resourceType": "Schema", "location": format!("{base}/Schemas/{id}")}})
    };
    vec![
        schema(
            USER_SCHEMA,
            "User",
            vec![
                attribute(
                    "userName",
                    "string",
                    false,
                    json!({"required": true, "uniqueness": "server"}),
                ),
                attribute("name", "complex", false, json!({"subAttributes": name_parts})),
                attribute("displayName", "string", false, json!({})),
                attribute("title", "string", false, json!({})),
                attribute("userType", "string", false, json!({})),
                attribute("preferredLanguage", "string", false, json!({})),
                attribute("locale", "string", false, json!({})),
                attribute("timezone", "string", false, json!({})),
                attribute("active", "boolean", false, json!({})),
                attribute("externalId", "string", false, json!({"caseExact": true})),
                multi_complex("emails"),
                multi_complex("phoneNumbers"),
                multi_complex("addresses"),
                attribute("groups", "complex", true, json!({"mutability": "readOnly"})),
            ],
        ),
        schema(
            GROUP_SCHEMA,
            "Group",
            vec![
                attribute("displayName", "string", false, json!({"required": true})),
                attribute("externalId", "string", false, json!({"caseExact": true})),
                attribute(
                    "members",
                    "complex",
                    true,
                    json!({"subAttributes": [
                attribute("value", "string", false, json!({"mutability": "immutable"})),
                attribute("display", "string", false, json!({"mutability": "readOnly"})),
                attribute("$ref", "reference", false, json!({"mutability": "immutable"}))]}),
                ),
            ],
        ),
        schema(
            ENTERPRISE,
            "EnterpriseUser",
            vec![
                attribute("employeeNumber", "string", false, json!({})),
                attribute("costCenter", "string", false, json!({})),
                attribute("organization", "string", false, json!({})),
                attribute("division", "string", false, json!({})),
                attribute("department", "string", false, json!({})),
                attribute(
                    "manager",
                    "complex",
                    false,
                    json!({"subAttributes": [
                attribute("value", "string", false, json!({})), attribute("displayName", "string", false, json!({"mutability": "readOnly"}))]}),
                ),
            ],
        ),
    ]
}

#[get("/scim/v2/Schemas")]
async fn list_schemas(_: ScimSource, state: web::Data<AppState>) -> HttpResponse {
    discovery(list_of(schemas(&state.scim_base_url)))
}

#[get("/scim/v2/Schemas/{id}")]
async fn get_schema(
    _: ScimSource,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ScimError> {
    schemas(&state.scim_base_url)
        .into_iter()
        .find(|s| s["id"].as_str().is_some_and(|s| s.eq_ignore_ascii_case(&id)))
        .map(discovery)
        .ok_or_else(|| ScimError::not_found(format!("schema {id}")))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(service_provider_config)
        .service(list_resource_types)
        .service(get_resource_type)
        .service(list_schemas)
        .service(get_schema);
}
