//! Field tables: how an external system's fields map to local columns, with the type of each.
//! Records are JSON maps on both sides (the external names may be dotted paths into nested
//! objects); a field that is absent is left alone (a partial update), `null` clears it.

use chrono::NaiveDate;
use serde_json::{Map, Value, json};

/// The type of a mapped field (validated inbound, compared by value).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Text,
    /// A PostgreSQL `integer`.
    Integer,
    /// A PostgreSQL `numeric` (money, revenue), a JSON number.
    Decimal,
    /// `YYYY-MM-DD`.
    Date,
    /// A JSON object (addresses).
    Object,
}

/// One mapped field: the CRM's property (a dotted path for nested ones) and the local column.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    /// The external system's name (a dotted path for nested fields).
    pub crm: &'static str,
    pub local: &'static str,
    pub kind: Kind,
}

pub const fn field(crm: &'static str, local: &'static str, kind: Kind) -> Field {
    Field { crm, local, kind }
}

/// A field a system sent that cannot be stored: `(field path, what is wrong)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub detail: String,
}

pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> FieldError {
    FieldError { field: field.into(), detail: detail.into() }
}

pub fn get_path<'a>(map: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut value = map.get(parts.next()?)?;
    for part in parts {
        match value {
            Value::Object(inner) => value = inner.get(part)?,
            // `account: null` clears the nested fields.
            Value::Null => return Some(value),
            _ => return None,
        }
    }
    Some(value)
}

pub fn set_path(map: &mut Map<String, Value>, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            map.insert(path.to_owned(), value);
        }
        Some((head, rest)) => {
            let inner = map.entry(head.to_owned()).or_insert_with(|| json!({}));
            if !inner.is_object() {
                *inner = json!({});
            }
            if let Value::Object(inner) = inner {
                set_path(inner, rest, value);
            }
        }
    }
}

/// Whether any string in `value` holds a NUL (PostgreSQL's text and jsonb refuse it).
fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// `value` as a valid local value of `kind`, or what is wrong with it.
fn checked(kind: Kind, value: &Value) -> Result<Value, String> {
    if value.is_null() {
        return Ok(Value::Null);
    }
    // Some systems (HubSpot) send every property as a string: numbers and dates as their
    // text, and "" for a cleared value.
    if let (Kind::Integer | Kind::Decimal | Kind::Date, Value::String(text)) = (kind, value) {
        let text = text.trim();
        if text.is_empty() {
            return Ok(Value::Null);
        }
        if kind != Kind::Date {
            let number: Value = serde_json::from_str::<serde_json::Number>(text)
                .map(Value::Number)
                .map_err(|_| {
                    format!(
                        "must be a {}",
                        if kind == Kind::Integer { "whole number" } else { "number" }
                    )
                })?;
            return checked(kind, &number);
        }
        // A date, or the date part of a timestamp (HubSpot sends `2026-12-31T00:00:00Z`).
        let date = text.split_once('T').map_or(text, |(day, _)| day);
        return NaiveDate::parse_from_str(date, "%Y-%m-%d")
            .map(|_| Value::from(date))
            .map_err(|_| "must be a date (YYYY-MM-DD)".into());
    }
    match kind {
        Kind::Text => match value.as_str() {
            Some(text) if text.contains('\0') => Err("must not contain NUL characters".into()),
            Some(_) => Ok(value.clone()),
            None => Err("must be a string".into()),
        },
        Kind::Integer => value
            .as_i64()
            .filter(|n| i32::try_from(*n).is_ok())
            .map(Value::from)
            .ok_or("must be a whole number within ±2147483647".into()),
        Kind::Decimal => match value {
            Value::Number(n) if n.as_f64().is_some_and(f64::is_finite) => Ok(value.clone()),
            _ => Err("must be a number".into()),
        },
        Kind::Date => value
            .as_str()
            .filter(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok())
            .map(|_| value.clone())
            .ok_or("must be a date (YYYY-MM-DD)".into()),
        Kind::Object => match value {
            Value::Object(_) if has_nul(value) => Err("must not contain NUL characters".into()),
            Value::Object(_) => Ok(value.clone()),
            _ => Err("must be an object".into()),
        },
    }
}

/// The local columns for the external fields in `props` (only the fields present); an invalid
/// value is an error naming `<prefix><field>`.
pub fn to_local(
    fields: &[Field],
    props: &Map<String, Value>,
    prefix: &str,
) -> Result<Map<String, Value>, FieldError> {
    let mut local = Map::new();
    for f in fields {
        if let Some(value) = get_path(props, f.crm) {
            let value =
                checked(f.kind, value).map_err(|d| invalid(format!("{prefix}{}", f.crm), d))?;
            local.insert(f.local.to_owned(), value);
        }
    }
    Ok(local)
}

/// The external fields for the local columns of `local` (only the mapped columns present).
pub fn to_remote(fields: &[Field], local: &Map<String, Value>) -> Map<String, Value> {
    let mut props = Map::new();
    for f in fields {
        if let Some(value) = local.get(f.local) {
            set_path(&mut props, f.crm, value.clone());
        }
    }
    props
}

/// Whether two local values of `kind` are the same (numbers by value: `100` is `100.0`).
pub fn same(kind: Kind, a: &Value, b: &Value) -> bool {
    match (kind, a, b) {
        (Kind::Decimal | Kind::Integer, Value::Number(x), Value::Number(y)) => {
            x == y || x.as_f64() == y.as_f64()
        }
        _ => a == b,
    }
}
