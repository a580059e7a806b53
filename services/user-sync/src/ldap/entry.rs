//! An LDAP entry's attributes, and a user entry as a SCIM resource (OpenLDAP's
//! `inetOrgPerson` or Active Directory's user, with its disabled flag).

use ldap3::SearchEntry;
use serde_json::{Map, Value, json};

use super::{Flavor, LdapConfig};
use crate::scim::filter::ENTERPRISE;

pub(super) fn first<'a>(entry: &'a SearchEntry, name: &str) -> Option<&'a str> {
    entry
        .attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.iter().next())
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

pub(super) fn all<'a>(entry: &'a SearchEntry, name: &str) -> Vec<&'a str> {
    entry
        .attrs
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .flat_map(|(_, v)| v.iter().map(String::as_str))
        .collect()
}

/// A user entry as a SCIM resource, or why it cannot be one.
pub fn user_resource(config: &LdapConfig, entry: &SearchEntry) -> Result<Value, String> {
    let account = config.account_attr();
    let user_name = first(entry, account)
        .or_else(|| {
            (config.flavor == Flavor::ActiveDirectory)
                .then(|| first(entry, "userPrincipalName"))
                .flatten()
        })
        .ok_or_else(|| format!("{} has no {account}", entry.dn))?;
    let disabled = first(entry, "userAccountControl")
        .and_then(|v| v.parse::<i64>().ok())
        .is_some_and(|uac| uac & 2 != 0);
    let mut r = Map::new();
    r.insert("userName".into(), json!(user_name));
    r.insert(
        "externalId".into(),
        json!(first(entry, "entryUUID").or(first(entry, "objectGUID")).unwrap_or(&entry.dn)),
    );
    r.insert("active".into(), json!(!disabled));
    let mut name = Map::new();
    for (ldap, scim) in [("givenName", "givenName"), ("sn", "familyName"), ("cn", "formatted")] {
        if let Some(v) = first(entry, ldap) {
            name.insert(scim.into(), json!(v));
        }
    }
    if !name.is_empty() {
        r.insert("name".into(), Value::Object(name));
    }
    if let Some(v) = first(entry, "displayName").or(first(entry, "cn")) {
        r.insert("displayName".into(), json!(v));
    }
    if let Some(v) = first(entry, "title") {
        r.insert("title".into(), json!(v));
    }
    let mails = all(entry, "mail");
    if !mails.is_empty() {
        r.insert(
            "emails".into(),
            Value::Array(
                mails
                    .iter()
                    .enumerate()
                    .map(|(i, m)| json!({"value": m, "type": "work", "primary": i == 0}))
                    .collect(),
            ),
        );
    }
    let phones = all(entry, "telephoneNumber");
    if !phones.is_empty() {
        r.insert(
            "phoneNumbers".into(),
            Value::Array(phones.iter().map(|p| json!({"value": p, "type": "work"})).collect()),
        );
    }
    let mut enterprise = Map::new();
    if let Some(v) = first(entry, "employeeNumber").or(first(entry, "employeeID")) {
        enterprise.insert("employeeNumber".into(), json!(v));
    }
    if let Some(v) = first(entry, "department").or(first(entry, "departmentNumber")) {
        enterprise.insert("department".into(), json!(v));
    }
    if let Some(v) = first(entry, "manager") {
        enterprise.insert("manager".into(), json!({"value": v}));
    }
    if !enterprise.is_empty() {
        r.insert(ENTERPRISE.into(), Value::Object(enterprise));
    }
    Ok(Value::Object(r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ldap::tests::{config, entry};

    #[test]
    fn entries_become_scim_users_and_ad_disabled_accounts_are_inactive() {
        let ann = entry(&[
            ("uid", "ann"),
            ("givenName", "Ann"),
            ("sn", "Lee"),
            ("cn", "Ann Lee"),
            ("mail", "ann@example.com"),
            ("employeeNumber", "7"),
            ("departmentNumber", "R&D"),
            ("entryUUID", "u-1"),
        ]);
        let r = user_resource(&config(Flavor::OpenLdap), &ann).unwrap();
        assert_eq!(r["userName"], "ann");
        assert_eq!(
            (r["name"]["familyName"].as_str(), r["emails"][0]["value"].as_str()),
            (Some("Lee"), Some("ann@example.com"))
        );
        assert_eq!(
            (
                r[ENTERPRISE]["employeeNumber"].as_str(),
                r["externalId"].as_str(),
                r["active"].as_bool()
            ),
            (Some("7"), Some("u-1"), Some(true))
        );
        let disabled = entry(&[("sAMAccountName", "bob"), ("userAccountControl", "514")]);
        assert_eq!(
            user_resource(&config(Flavor::ActiveDirectory), &disabled).unwrap()["active"],
            false
        );
        let enabled = entry(&[("sAMAccountName", "bob"), ("userAccountControl", "512")]);
        assert_eq!(
            user_resource(&config(Flavor::ActiveDirectory), &enabled).unwrap()["active"],
            true
        );
        assert!(user_resource(&config(Flavor::OpenLdap), &entry(&[("cn", "No Uid")])).is_err());
    }
}
