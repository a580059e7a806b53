//! The CRM (HubSpot): webhook events, the CRM objects v3 API (`/crm/v3/objects/<type>`), and
//! the field map between HubSpot's properties and the local columns of `crm.contacts`,
//! `crm.accounts` and `crm.opportunities`.
//!
//! Local records are maps by column name ([`fields`] lists the columns and their kinds). CRM
//! records are maps by HubSpot's internal property names, every value a string (numbers and
//! dates as their text, `""` for a cleared value). The map between them is configuration
//! ([`FieldMap`], HubSpot's standard properties by default); a jsonb column (the billing
//! address) spreads over several properties, one per key.

//!
//! - [`field_map`]: which HubSpot property holds which column, and the values' text form;
//! - [`webhook`]: HubSpot's native webhook events and the seed's own format;
//! - [`api`]: the requests and answers of the CRM objects API.

mod api;
mod field_map;
mod webhook;

use serde_json::{Map, Value};

pub use self::{api::*, field_map::*, webhook::*};
use super::fields::{self, field};
pub use super::fields::{Field, FieldError, Kind, same};
use crate::schemas::crm::Entity;

const CONTACT: &[Field] = &[
    field("first_name", "first_name", Kind::Text),
    field("last_name", "last_name", Kind::Text),
    field("email", "email", Kind::Text),
    field("phone", "phone", Kind::Text),
    field("company", "company", Kind::Text),
    field("title", "title", Kind::Text),
    field("source", "source", Kind::Text),
    field("status", "status", Kind::Text),
];

const ACCOUNT: &[Field] = &[
    field("company_name", "company_name", Kind::Text),
    field("industry", "industry", Kind::Text),
    field("website", "website", Kind::Text),
    field("annual_revenue", "annual_revenue", Kind::Decimal),
    field("employee_count", "employee_count", Kind::Integer),
    field("billing_address", "billing_address", Kind::Object),
];

const OPPORTUNITY: &[Field] = &[
    field("name", "name", Kind::Text),
    field("account_id", "account_id", Kind::Text),
    field("amount", "amount", Kind::Decimal),
    field("stage", "stage", Kind::Text),
    field("probability", "probability", Kind::Integer),
    field("close_date", "close_date", Kind::Date),
];

/// The synced columns of `entity` and their kinds (`crm` is the column name too: the CRM's
/// names are in the [`FieldMap`]).
pub fn fields(entity: Entity) -> &'static [Field] {
    match entity {
        Entity::Contact => CONTACT,
        Entity::Account => ACCOUNT,
        Entity::Opportunity => OPPORTUNITY,
    }
}

/// The local columns of `data` validated by kind (events carry local columns once mapped);
/// an invalid value is an error naming `data.<column>`.
pub fn local_changes(
    entity: Entity,
    data: &Map<String, Value>,
) -> Result<Map<String, Value>, FieldError> {
    fields::to_local(fields(entity), data, "data.")
}

/// Lays the jsonb columns of `changes` (objects of some keys, `null` for a cleared one) over
/// their values in `held`, so a change of one key keeps the others; an empty object is `null`.
pub fn overlay(entity: Entity, held: &Map<String, Value>, changes: &mut Map<String, Value>) {
    for f in fields(entity).iter().filter(|f| f.kind == Kind::Object) {
        let Some(Value::Object(incoming)) = changes.get(f.local) else { continue };
        let mut object = held.get(f.local).and_then(Value::as_object).cloned().unwrap_or_default();
        for (k, v) in incoming {
            if v.is_null() {
                object.remove(k);
            } else {
                object.insert(k.clone(), v.clone());
            }
        }
        let value = if object.is_empty() { Value::Null } else { Value::Object(object) };
        changes.insert(f.local.to_owned(), value);
    }
}

/// The mapped columns whose values differ between `from` and `to` (a column missing on one
/// side counts as `null`).
pub fn changed(
    entity: Entity,
    from: &Map<String, Value>,
    to: &Map<String, Value>,
) -> Vec<&'static str> {
    fields(entity)
        .iter()
        .filter(|f| {
            let a = from.get(f.local).unwrap_or(&Value::Null);
            let b = to.get(f.local).unwrap_or(&Value::Null);
            !same(f.kind, a, b)
        })
        .map(|f| f.local)
        .collect()
}

/// Only the mapped columns of a local record (`to_jsonb(row)` has bookkeeping columns too).
pub fn mapped_columns(entity: Entity, row: &Map<String, Value>) -> Map<String, Value> {
    fields(entity)
        .iter()
        .map(|f| (f.local.to_owned(), row.get(f.local).cloned().unwrap_or(Value::Null)))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;
    use reqwest::Method;
    use serde_json::json;

    use super::*;
    use crate::schemas::crm::ChangeKind;

    fn value_of(kind: Kind) -> BoxedStrategy<Value> {
        let present = match kind {
            Kind::Text => "[^\0]{1,12}".prop_map(Value::from).boxed(),
            Kind::Integer => any::<i32>().prop_map(Value::from).boxed(),
            Kind::Decimal => (any::<i32>(), 0u32..4)
                .prop_map(|(n, scale)| json!(n as f64 / 10f64.powi(scale as i32)))
                .boxed(),
            Kind::Date => (1i32..9999, 1u32..=12, 1u32..=28)
                .prop_map(|(y, m, d)| json!(format!("{y:04}-{m:02}-{d:02}")))
                .boxed(),
            Kind::Object => proptest::collection::btree_map(
                prop_oneof![Just("street"), Just("city"), Just("postal_code"), Just("country")],
                "[^\0]{1,8}",
                1..4,
            )
            .prop_map(|m| json!(m))
            .boxed(),
        };
        prop_oneof![1 => Just(Value::Null), 6 => present].boxed()
    }

    /// A local record of `entity` with any subset of the columns HubSpot's map syncs.
    fn local_record(entity: Entity) -> impl Strategy<Value = Map<String, Value>> {
        let map = FieldMap::hubspot();
        let synced: BTreeSet<&str> = map.properties(entity).iter().map(|p| p.column).collect();
        let columns: Vec<_> = fields(entity)
            .iter()
            .filter(|f| synced.contains(f.local))
            .map(|f| proptest::option::of(value_of(f.kind)).prop_map(move |v| (f.local, v)))
            .collect();
        columns.prop_map(|pairs| {
            pairs.into_iter().filter_map(|(k, v)| Some((k.to_owned(), v?))).collect()
        })
    }

    fn entity() -> impl Strategy<Value = Entity> {
        prop_oneof![Just(Entity::Contact), Just(Entity::Account), Just(Entity::Opportunity)]
    }

    proptest! {
        #[test]
        fn local_to_crm_and_back_is_the_same_record(
            (entity, local) in entity().prop_flat_map(|e| (Just(e), local_record(e)))
        ) {
            let map = FieldMap::hubspot();
            let props = map.to_crm(entity, &local);
            prop_assert!(props.values().all(Value::is_string), "{props:?}");
            let mut back = map.to_local(entity, &props).unwrap();
            overlay(entity, &Map::new(), &mut back);
            for f in fields(entity) {
                if let Some(want) = local.get(f.local) {
                    let got = back.get(f.local).unwrap_or(&Value::Null);
                    prop_assert!(same(f.kind, got, want), "{}: {got} != {want}", f.local);
                }
            }
        }

        #[test]
        fn a_wrongly_typed_property_is_refused_naming_it(
            entity in entity(), pick in any::<prop::sample::Index>()
        ) {
            let map = FieldMap::hubspot();
            let p = pick.get(map.properties(entity));
            let wrong = match p.kind { Kind::Text => json!(12), _ => json!("x") };
            let mut props = Map::new();
            props.insert(p.name.clone(), wrong);
            let err = map.to_local(entity, &props).unwrap_err();
            prop_assert_eq!(err.field, format!("data.{}", p.name));
        }

        #[test]
        fn changed_lists_exactly_the_differing_columns(
            (entity, a, b) in entity().prop_flat_map(|e| (Just(e), local_record(e), local_record(e)))
        ) {
            let diff = changed(entity, &a, &b);
            for f in fields(entity) {
                let x = a.get(f.local).unwrap_or(&Value::Null);
                let y = b.get(f.local).unwrap_or(&Value::Null);
                prop_assert_eq!(diff.contains(&f.local), !same(f.kind, x, y));
            }
            prop_assert!(changed(entity, &a, &a).is_empty());
        }
    }

    #[test]
    fn hubspot_names_and_string_values_go_out_and_come_back_typed() {
        let map = FieldMap::hubspot();
        let deal = json!({"name": "Anvils", "amount": 1200.5, "probability": 40,
            "close_date": "2026-12-31", "stage": null, "account_id": "7"});
        let props = map.to_crm(Entity::Opportunity, deal.as_object().unwrap());
        assert_eq!(
            Value::Object(props.clone()),
            json!({"dealname": "Anvils", "amount": "1200.5", "hs_deal_stage_probability": "40",
                   "closedate": "2026-12-31T00:00:00Z", "dealstage": ""})
        );
        let back = map.to_local(Entity::Opportunity, &props).unwrap();
        assert_eq!(
            Value::Object(back),
            json!({"name": "Anvils", "amount": 1200.5, "probability": 40,
                   "close_date": "2026-12-31", "stage": null})
        );
        // Webhooks send dates as epoch milliseconds.
        let changed = json!({"closedate": "1798675200000"});
        let local = map.to_local(Entity::Opportunity, changed.as_object().unwrap()).unwrap();
        assert_eq!(local["close_date"], "2026-12-31");
        let bad = json!({"hs_deal_stage_probability": "forty"});
        let err = map.to_local(Entity::Opportunity, bad.as_object().unwrap()).unwrap_err();
        assert_eq!(err.field, "data.hs_deal_stage_probability");
    }

    #[test]
    fn the_billing_address_spreads_over_hubspot_address_properties() {
        let map = FieldMap::hubspot();
        let account = json!({"company_name": "Acme", "billing_address": {"city": "Lyon", "postal_code": "69001"}});
        let props = map.to_crm(Entity::Account, account.as_object().unwrap());
        assert_eq!(
            Value::Object(props),
            json!({"name": "Acme", "address": "", "address2": "", "city": "Lyon", "state": "",
                   "zip": "69001", "country": ""})
        );
        // A change of one key keeps the others.
        let change = json!({"city": "Paris"});
        let mut local = map.to_local(Entity::Account, change.as_object().unwrap()).unwrap();
        overlay(Entity::Account, account.as_object().unwrap(), &mut local);
        assert_eq!(local["billing_address"], json!({"city": "Paris", "postal_code": "69001"}));
    }

    #[test]
    fn the_field_map_takes_overrides_and_refuses_unknown_columns() {
        let map = FieldMap::with_overrides(
            r#"{"contact": {"source": "lead_source", "status": null}, "opportunity": {"account_id": "company_ref"}}"#,
        )
        .unwrap();
        let contact = json!({"source": "web", "status": "new", "first_name": "Ann"});
        assert_eq!(
            Value::Object(map.to_crm(Entity::Contact, contact.as_object().unwrap())),
            json!({"firstname": "Ann", "lead_source": "web"})
        );
        assert!(map.names(Entity::Opportunity).contains(&"company_ref".to_owned()));
        for bad in [
            r#"{"lead": {}}"#,
            r#"{"contact": {"nickname": "x"}}"#,
            r#"{"contact": {"title": "firstname"}}"#,
            r#"{"account": {"billing_address": "address"}}"#,
            "[]",
        ] {
            assert!(FieldMap::with_overrides(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hubspot_native_events_become_changes_and_reads() {
        let body = json!([
            {"eventId": 100, "subscriptionId": 1, "portalId": 62515, "appId": 54321,
             "occurredAt": 1733400000000i64, "subscriptionType": "contact.propertyChange",
             "attemptNumber": 0, "objectId": 123, "propertyName": "firstname",
             "propertyValue": "Ada", "changeSource": "CRM"},
            {"eventId": 101, "occurredAt": 1733400000001i64, "subscriptionType": "company.creation", "objectId": 7},
            {"eventId": 102, "occurredAt": 1733400000002i64, "subscriptionType": "deal.deletion", "objectId": 8},
            {"eventId": 103, "occurredAt": 1733400000003i64, "subscriptionType": "contact.merge",
             "objectId": 123, "primaryObjectId": 123, "mergedObjectIds": [124], "newObjectId": 125},
            {"eventId": 104, "occurredAt": 1733400000004i64, "subscriptionType": "ticket.creation", "objectId": 9},
            {"eventId": 105, "occurredAt": 1733400000005i64, "subscriptionType": "contact.associationChange", "objectId": 9}
        ]);
        let events = parse_webhook(&body, None).unwrap();
        assert_eq!(
            events.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(),
            ["100", "101", "102", "103"]
        );
        let change = &events[0].1;
        assert_eq!((change.event, change.id.as_str()), (ChangeKind::Updated, "123"));
        assert_eq!(Value::Object(change.data.clone()), json!({"firstname": "Ada"}));
        assert_eq!(change.timestamp.timestamp_millis(), 1733400000000);
        assert!(events[1].1.read && events[1].1.entity == Entity::Account);
        assert_eq!(events[2].1.event, ChangeKind::Deleted);
        let merge = &events[3].1;
        assert_eq!(
            (merge.event, merge.id.as_str(), merge.merged.clone()),
            (ChangeKind::Merged, "125", vec!["123".to_owned(), "124".to_owned()])
        );
        let no_time =
            json!([{"eventId": 1, "subscriptionType": "contact.creation", "objectId": 1}]);
        assert_eq!(parse_webhook(&no_time, None).unwrap_err().field, "[0].occurredAt");
    }

    #[test]
    fn the_seed_format_is_one_event_or_a_batch_and_unknown_types_are_named() {
        let one = json!({"event": "updated", "type": "contact", "id": "c-1",
            "timestamp": "2026-12-01T10:00:00Z", "data": {"email": "a@b.c"}});
        let events = parse_webhook(&one, Some("msg_1")).unwrap();
        assert_eq!(events[0].0, "msg_1");
        assert_eq!(events[0].1.entity, Entity::Contact);
        let batch = json!([
            {"eventId": "e1", "event": "deleted", "type": "account", "id": "a-1", "timestamp": 1764583200000i64},
            {"eventId": "e2", "event": "created", "type": "opportunity", "id": "o-1",
             "timestamp": "2026-12-01T10:00:00Z", "data": {"amount": "5"}}
        ]);
        let events = parse_webhook(&batch, None).unwrap();
        assert_eq!(events.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(), ["e1", "e2"]);
        let lead =
            json!({"event": "created", "type": "lead", "id": "l-1", "timestamp": 1, "data": {}});
        let err = parse_webhook(&lead, Some("m")).unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.detail.as_str()),
            ("type", "Unknown record type: lead")
        );
        let bad = json!([{"eventId": "e", "event": "created", "type": "account", "id": "a", "timestamp": 1,
            "data": {"numberofemployees": "many"}}]);
        assert_eq!(parse_webhook(&bad, None).unwrap_err().field, "[0].data.numberofemployees");
        let no_id = json!([{"event": "deleted", "type": "account", "id": "a", "timestamp": 1}]);
        assert_eq!(parse_webhook(&no_id, Some("m")).unwrap_err().field, "[0].eventId");
    }

    #[test]
    fn requests_use_the_objects_api_with_escaped_ids() {
        let map = FieldMap::hubspot();
        let changes = json!({"stage": "Won"});
        let r = update(&map, Entity::Opportunity, "d/1", changes.as_object().unwrap());
        assert_eq!((r.method, r.path.as_str()), (Method::PATCH, "/crm/v3/objects/deals/d%2F1"));
        assert_eq!(r.body, json!({"properties": {"dealstage": "Won"}}));
        assert!(
            list_path(&map, Entity::Account, Some("x y"), 50, false)
                .starts_with("/crm/v3/objects/companies?limit=50&archived=false&properties=name,")
        );
        let c = create(
            &map,
            Entity::Contact,
            "contact/7",
            json!({"first_name": "Ann"}).as_object().unwrap(),
        );
        assert_eq!(c.path, "/crm/v3/objects/contacts/batch/upsert");
        assert_eq!(
            c.body["inputs"][0],
            json!({"id": "contact/7", "idProperty": "datasync_id", "objectWriteTraceId": "contact/7",
            "properties": {"firstname": "Ann", "datasync_id": "contact/7"}})
        );
        let (records, next) = page(&json!({"results": [{"id": "1", "properties": {"name": "A"},
            "updatedAt": "2026-12-01T10:00:00Z"}], "paging": {"next": {"after": "1"}}}))
        .unwrap();
        assert_eq!((records[0].id.as_str(), next.as_deref()), ("1", Some("1")));
        let answer = json!({"status": "COMPLETE", "results": [], "numErrors": 1, "errors": [
            {"status": "error", "category": "VALIDATION_ERROR", "message": "Email is invalid",
             "context": {"objectWriteTraceId": ["contact/8"]}}]});
        assert_eq!(refusal(&answer, "contact/7"), None);
        assert_eq!(refusal(&answer, "contact/8").unwrap().0, "VALIDATION_ERROR");
    }
}
