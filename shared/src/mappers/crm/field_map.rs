//! Which HubSpot property holds which local column ([`FieldMap`], configuration with HubSpot's
//! standard properties by default), and local values as HubSpot's text and back.

use std::collections::BTreeSet;

use chrono::{NaiveDate, TimeZone, Utc};
use serde_json::{Map, Value, json};

use super::{FieldError, Kind, LOCAL_KEY_PROPERTY, fields};
use crate::{
    mappers::fields::{field, invalid},
    schemas::crm::Entity,
};

/// HubSpot's standard properties for the local columns: `(local, property)`, where `local` is
/// a column or `<jsonb column>.<key>`. Not mapped by default: a contact's `source` (HubSpot's
/// `hs_analytics_source` is read-only) and a deal's `account_id` (an association in HubSpot,
/// not a property); map them to custom properties with `CRM_FIELD_MAP`.
const HUBSPOT: [&[(&str, &str)]; 3] = [
    &[
        ("first_name", "firstname"),
        ("last_name", "lastname"),
        ("email", "email"),
        ("phone", "phone"),
        ("company", "company"),
        ("title", "jobtitle"),
        ("status", "hs_lead_status"),
    ],
    &[
        ("company_name", "name"),
        ("industry", "industry"),
        ("website", "website"),
        ("annual_revenue", "annualrevenue"),
        ("employee_count", "numberofemployees"),
        ("billing_address.street", "address"),
        ("billing_address.street2", "address2"),
        ("billing_address.city", "city"),
        ("billing_address.state", "state"),
        ("billing_address.postal_code", "zip"),
        ("billing_address.country", "country"),
    ],
    &[
        ("name", "dealname"),
        ("amount", "amount"),
        ("stage", "dealstage"),
        ("probability", "hs_deal_stage_probability"),
        ("close_date", "closedate"),
    ],
];

fn index(entity: Entity) -> usize {
    match entity {
        Entity::Contact => 0,
        Entity::Account => 1,
        Entity::Opportunity => 2,
    }
}

/// One mapped CRM property.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Property {
    /// HubSpot's internal name.
    pub name: String,
    /// The local column.
    pub column: &'static str,
    /// For a jsonb column: the key inside it.
    pub key: Option<String>,
    pub kind: Kind,
}

/// Which CRM property holds which local column, per entity: configuration (`CRM_FIELD_MAP`),
/// HubSpot's standard properties by default ([`FieldMap::hubspot`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldMap {
    entities: [Vec<Property>; 3],
}

impl Default for FieldMap {
    fn default() -> Self {
        Self::hubspot()
    }
}

impl FieldMap {
    /// HubSpot's standard properties.
    pub fn hubspot() -> Self {
        let pairs = |entity: Entity| {
            HUBSPOT[index(entity)].iter().map(|(l, p)| ((*l).to_owned(), Some((*p).to_owned())))
        };
        Self::build(|entity| Ok(pairs(entity).collect())).unwrap_or_else(|_| Self::empty())
    }

    fn empty() -> Self {
        Self { entities: [Vec::new(), Vec::new(), Vec::new()] }
    }

    /// The defaults with overrides, as `CRM_FIELD_MAP` gives them: `{"contact": {"source":
    /// "lead_source", "status": null}, "account": {"billing_address.postal_code": "zip"}}`; a
    /// key is a column or `<jsonb column>.<key>`, a value the CRM property (`null`: not
    /// synced). An unknown entity or column, or two columns on one property, is an error.
    pub fn with_overrides(json: &str) -> Result<Self, String> {
        let overrides: Map<String, Value> =
            serde_json::from_str(json).map_err(|e| format!("not a JSON object: {e}"))?;
        for name in overrides.keys() {
            Entity::parse(name)
                .ok_or(format!("unknown entity {name:?} (contact, account or opportunity)"))?;
        }
        Self::build(|entity| {
            let mut pairs: Vec<(String, Option<String>)> = HUBSPOT[index(entity)]
                .iter()
                .map(|(l, p)| ((*l).to_owned(), Some((*p).to_owned())))
                .collect();
            if let Some(Value::Object(over)) = overrides.get(entity.as_str()) {
                for (local, property) in over {
                    let property = match property {
                        Value::String(p) if !p.is_empty() => Some(p.clone()),
                        Value::Null => None,
                        _ => {
                            return Err(format!(
                                "{entity}.{local}: the property must be a name or null"
                            ));
                        }
                    };
                    pairs.retain(|(l, _)| l != local);
                    pairs.push((local.clone(), property));
                }
            } else if overrides.contains_key(entity.as_str()) {
                return Err(format!("{entity}: must be an object"));
            }
            Ok(pairs)
        })
    }

    fn build(
        mut pairs: impl FnMut(Entity) -> Result<Vec<(String, Option<String>)>, String>,
    ) -> Result<Self, String> {
        let mut map = Self::empty();
        for entity in Entity::ALL {
            let mut seen = BTreeSet::new();
            for (local, property) in pairs(entity)? {
                let Some(name) = property else { continue };
                let (column, key) = match local.split_once('.') {
                    Some((c, k)) => (c, Some(k.to_owned())),
                    None => (local.as_str(), None),
                };
                let f = fields(entity)
                    .iter()
                    .find(|f| f.local == column)
                    .ok_or(format!("{entity}.{local}: no such column in crm.{}", entity.table()))?;
                let kind = match (f.kind, &key) {
                    (Kind::Object, Some(_)) => Kind::Text,
                    (Kind::Object, None) => {
                        return Err(format!("{entity}.{local}: map the keys of a jsonb column"));
                    }
                    (_, Some(_)) => return Err(format!("{entity}.{local}: not a jsonb column")),
                    (kind, None) => kind,
                };
                if name == LOCAL_KEY_PROPERTY || !seen.insert(name.clone()) {
                    return Err(format!("{entity}: property {name} is mapped twice"));
                }
                map.entities[index(entity)].push(Property { name, column: f.local, key, kind });
            }
        }
        Ok(map)
    }

    /// The mapped properties of `entity`.
    pub fn properties(&self, entity: Entity) -> &[Property] {
        &self.entities[index(entity)]
    }

    /// The property names a read asks for: the mapped ones and our key.
    pub fn names(&self, entity: Entity) -> Vec<String> {
        self.properties(entity)
            .iter()
            .map(|p| p.name.clone())
            .chain([LOCAL_KEY_PROPERTY.to_owned()])
            .collect()
    }

    /// The local columns for the CRM properties in `props` (only the mapped ones present;
    /// others are ignored). A jsonb column comes as an object of the keys present (`null`
    /// for a cleared one), to lay over the value held ([`overlay`]). Our key
    /// ([`LOCAL_KEY_PROPERTY`]) is kept under its name. An invalid value is an error naming
    /// `data.<property>`.
    pub fn to_local(
        &self,
        entity: Entity,
        props: &Map<String, Value>,
    ) -> Result<Map<String, Value>, FieldError> {
        let mut local = Map::new();
        for p in self.properties(entity) {
            let Some(value) = props.get(&p.name) else { continue };
            let value = from_crm(p.kind, value)
                .map_err(|detail| invalid(format!("data.{}", p.name), detail))?;
            match &p.key {
                None => {
                    local.insert(p.column.to_owned(), value);
                }
                Some(key) => {
                    let object = local.entry(p.column).or_insert_with(|| json!({}));
                    if let Value::Object(object) = object {
                        object.insert(key.clone(), value);
                    }
                }
            }
        }
        if let Some(Value::String(key)) = props.get(LOCAL_KEY_PROPERTY) {
            local.insert(LOCAL_KEY_PROPERTY.to_owned(), Value::from(key.clone()));
        }
        Ok(local)
    }

    /// The CRM properties for the columns present in `local`, every value a string (`""`
    /// clears); a jsonb column sets each of its mapped keys.
    pub fn to_crm(&self, entity: Entity, local: &Map<String, Value>) -> Map<String, Value> {
        let mut props = Map::new();
        for p in self.properties(entity) {
            let Some(value) = local.get(p.column) else { continue };
            let value = match &p.key {
                None => value,
                Some(key) => value.get(key).unwrap_or(&Value::Null),
            };
            props.insert(p.name.clone(), Value::from(to_crm_text(p.kind, value)));
        }
        props
    }
}

/// A CRM value (a string, as HubSpot sends it; or a JSON value) as a local value of `kind`:
/// `""` is `null`, a date may be epoch milliseconds (webhooks) or an ISO time.
fn from_crm(kind: Kind, value: &Value) -> Result<Value, String> {
    let one = [field("v", "v", kind)];
    let value = match (kind, value) {
        (_, Value::String(s)) if s.is_empty() => return Ok(Value::Null),
        (Kind::Date, Value::String(s))
            if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) =>
        {
            let day = s
                .parse::<i64>()
                .ok()
                .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
                .ok_or("must be a date")?;
            Value::from(day.date_naive().format("%Y-%m-%d").to_string())
        }
        _ => value.clone(),
    };
    let mut props = Map::new();
    props.insert("v".into(), value);
    let mut local = fields::to_local(&one, &props, "").map_err(|e| e.detail)?;
    Ok(local.remove("v").unwrap_or(Value::Null))
}

/// A local value as HubSpot's text: numbers as written, a date as midnight UTC in ISO 8601
/// (HubSpot's date and datetime properties both take it), `""` for `null`.
fn to_crm_text(kind: Kind, value: &Value) -> String {
    match (kind, value) {
        (_, Value::Null) => String::new(),
        (_, Value::String(s)) if kind == Kind::Date && !s.is_empty() => {
            match NaiveDate::parse_from_str(s, "%Y-%m-%d") {
                Ok(_) => format!("{s}T00:00:00Z"),
                Err(_) => s.clone(),
            }
        }
        (_, Value::String(s)) => s.clone(),
        (_, other) => other.to_string(),
    }
}
