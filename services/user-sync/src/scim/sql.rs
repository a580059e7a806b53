//! A SCIM filter compiled to a PostgreSQL condition over the stored resource (`r.resource`,
//! jsonb), so a list of 100k users is filtered by the database and its indexes, never in
//! memory. Values are never spliced into SQL: they travel as one jsonb parameter and are read
//! back by position. `userName` and `externalId` lookups use their indexed columns, and a
//! user's email value paths a GIN-indexed containment prefilter.

use serde_json::Value;

use super::filter::{
    AttrPath, CORE_GROUP, CORE_USER, ENTERPRISE, ENTERPRISE_ATTRS, Filter, FilterError,
    GROUP_ATTRS, Kind, Op, USER_ATTRS, canonical,
};

fn sql_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Compiles filters to SQL over `r` (the resource row), reading values from `params`.
pub struct Compiler {
    pub kind: Kind,
    /// The values, in order: the query binds them as one jsonb array.
    pub values: Vec<Value>,
    /// The SQL of the jsonb parameter holding them (`$1`).
    pub param: &'static str,
}

impl Compiler {
    fn value(&mut self, v: &Value) -> String {
        self.values.push(v.clone());
        format!("({}::jsonb -> {})", self.param, self.values.len() - 1)
    }

    fn text(&mut self, v: &Value) -> String {
        self.values.push(match v {
            Value::String(_) => v.clone(),
            other => Value::String(other.to_string()),
        });
        format!("({}::jsonb ->> {})", self.param, self.values.len() - 1)
    }

    /// The jsonb of an attribute of the resource `r`, or of a multi-valued element `e`.
    fn json_of(&self, base: &str, path: &AttrPath) -> Result<(String, bool, bool), FilterError> {
        let name = canonical(&path.name);
        let attrs: &[(&str, bool)] = match (&path.urn, self.kind) {
            (Some(urn), Kind::User) if urn == &ENTERPRISE.to_ascii_lowercase() => ENTERPRISE_ATTRS,
            (Some(urn), Kind::User) if urn == CORE_USER => USER_ATTRS,
            (Some(urn), Kind::Group) if urn == CORE_GROUP => GROUP_ATTRS,
            (Some(urn), _) => return Err(FilterError(format!("unknown schema {urn}"))),
            (None, Kind::User) => USER_ATTRS,
            (None, Kind::Group) => GROUP_ATTRS,
        };
        let extension = path.urn.as_deref() == Some(&*ENTERPRISE.to_ascii_lowercase());
        let root = if extension { format!("({base} -> '{ENTERPRISE}')") } else { base.to_owned() };
        let multi = attrs.iter().find(|(n, _)| *n == name).map(|(_, m)| *m);
        let known = multi.is_some() || matches!(name.as_str(), "id" | "meta");
        if !known && base == "r.resource" {
            return Err(FilterError(format!("unknown attribute {}", path.name)));
        }
        let case_exact = matches!(name.as_str(), "id" | "externalId");
        Ok((format!("({root} -> {})", sql_string(&name)), multi.unwrap_or(false), case_exact))
    }

    /// One comparison of the jsonb `json` (a scalar) with `value`.
    fn compare(&mut self, json: &str, op: Op, value: &Value, case_exact: bool) -> String {
        let text = format!("({json} #>> '{{}}')");
        match value {
            Value::Bool(_) | Value::Null | Value::Number(_) if matches!(op, Op::Eq | Op::Ne) => {
                // Booleans sent as strings ("True") compare as booleans.
                let v = self.value(value);
                let json_norm = format!(
                    "(CASE WHEN jsonb_typeof({json}) = 'string' AND lower({json} #>> '{{}}') IN ('true', 'false') \
                     THEN to_jsonb(lower({json} #>> '{{}}') = 'true') ELSE {json} END)"
                );
                let eq = format!("({json_norm} = {v})");
                if op == Op::Eq { eq } else { format!("({json} IS NULL OR NOT {eq})") }
            }
            Value::Number(_) => {
                let v = self.text(value);
                let sql_op = match op {
                    Op::Gt => ">",
                    Op::Ge => ">=",
                    Op::Lt => "<",
                    _ => "<=",
                };
                format!(
                    "(jsonb_typeof({json}) = 'number' AND ({text})::numeric {sql_op} ({v})::numeric)"
                )
            }
            _ => {
                let v = self.text(value);
                let (l, r) = if case_exact {
                    (text.clone(), v)
                } else {
                    (format!("lower({text})"), format!("lower({v})"))
                };
                match op {
                    Op::Eq => format!("({l} = {r})"),
                    Op::Ne => format!("({text} IS NULL OR {l} <> {r})"),
                    Op::Co => format!("(strpos({l}, {r}) > 0)"),
                    Op::Sw => format!("(left({l}, length({r})) = {r})"),
                    Op::Ew => format!("(right({l}, length({r})) = {r})"),
                    Op::Gt => format!("({l} > {r})"),
                    Op::Ge => format!("({l} >= {r})"),
                    Op::Lt => format!("({l} < {r})"),
                    Op::Le => format!("({l} <= {r})"),
                }
            }
        }
    }

    /// Compiles `filter` against the resource `r` (or, inside a value path, the element `e`).
    pub fn compile(&mut self, filter: &Filter) -> Result<String, FilterError> {
        self.compile_on("r.resource", filter)
    }

    fn column(&mut self, path: &AttrPath, op: Op, value: &Value) -> Option<String> {
        // Attributes kept in (indexed) columns: id, meta's times, and a user's userName and
        // externalId for the lookups every provider makes before a create.
        let core = path.urn.as_deref().is_none_or(|u| u == CORE_USER);
        if self.kind == Kind::User && core && path.sub.is_none() && value.is_string() {
            match (canonical(&path.name).as_str(), op) {
                ("userName", Op::Eq) => {
                    let v = self.text(value);
                    return Some(format!("(lower(r.user_name) = lower({v}))"));
                }
                // A prefix the `text_pattern_ops` index answers (LIKE's wildcards escaped).
                ("userName", Op::Sw) => {
                    let v = self.text(value);
                    return Some(format!(
                        r"(lower(r.user_name) LIKE (replace(replace(replace(lower({v}), '\', '\\'), '%', '\%'), '_', '\_') || '%'))"
                    ));
                }
                ("externalId", Op::Eq) => {
                    let v = self.text(value);
                    return Some(format!("(r.external_id = {v})"));
                }
                _ => {}
            }
        }
        match (canonical(&path.name).as_str(), path.sub.as_deref().map(canonical).as_deref()) {
            ("id", None) => {
                let v = self.text(value);
                Some(match op {
                    Op::Eq => format!("(r.id::text = {v})"),
                    Op::Ne => format!("(r.id::text <> {v})"),
                    _ => "false".into(),
                })
            }
            ("meta", Some(sub @ ("created" | "lastModified"))) => {
                let column = if sub == "created" { "r.created_at" } else { "r.updated_at" };
                let v = self.text(value);
                let sql_op = match op {
                    Op::Eq => "=",
                    Op::Ne => "<>",
                    Op::Gt => ">",
                    Op::Ge => ">=",
                    Op::Lt => "<",
                    Op::Le => "<=",
                    _ => return Some("false".into()),
                };
                Some(format!("({column} {sql_op} ({v})::timestamptz)"))
            }
            _ => None,
        }
    }

    fn compile_on(&mut self, base: &str, filter: &Filter) -> Result<String, FilterError> {
        Ok(match filter {
            Filter::And(a, b) => {
                format!("({} AND {})", self.compile_on(base, a)?, self.compile_on(base, b)?)
            }
            Filter::Or(a, b) => {
                format!("({} OR {})", self.compile_on(base, a)?, self.compile_on(base, b)?)
            }
            Filter::Not(a) => format!("(NOT coalesce({}, false))", self.compile_on(base, a)?),
            Filter::ValuePath(path, inner) => {
                let prefilter = self.emails_prefilter(base, path, inner);
                let elements = self.elements(base, path)?;
                let exists = format!(
                    "EXISTS (SELECT 1 FROM {elements} WHERE {})",
                    self.compile_on("e.v", inner)?
                );
                match prefilter {
                    Some(p) => format!("({p} AND {exists})"),
                    None => exists,
                }
            }
            Filter::Present(path) => {
                let (json, multi, _) = self.json_of(base, path)?;
                match (&path.sub, multi) {
                    (Some(sub), true) => {
                        let elements = self.elements(base, path)?;
                        format!(
                            "EXISTS (SELECT 1 FROM {elements} WHERE {})",
                            present(&format!("(e.v -> {})", sql_string(&canonical(sub))))
                        )
                    }
                    (Some(sub), false) => {
                        present(&format!("({json} -> {})", sql_string(&canonical(sub))))
                    }
                    (None, _) => present(&json),
                }
            }
            Filter::Compare(path, op, value) => {
                if base == "r.resource"
                    && let Some(sql) = self.column(path, *op, value)
                {
                    return Ok(sql);
                }
                let (json, multi, case_exact) = self.json_of(base, path)?;
                if multi {
                    // `emails eq "x"` compares the values; `emails.type eq "x"` a sub-attribute.
                    let sub = canonical(path.sub.as_deref().unwrap_or("value"));
                    let elements = self.elements(base, path)?;
                    let cmp =
                        self.compare(&format!("(e.v -> {})", sql_string(&sub)), *op, value, false);
                    format!("EXISTS (SELECT 1 FROM {elements} WHERE {cmp})")
                } else {
                    let json = match &path.sub {
                        Some(sub) => format!("({json} -> {})", sql_string(&canonical(sub))),
                        None => json,
                    };
                    self.compare(&json, *op, value, case_exact)
                }
            }
        })
    }

    /// For a user's `emails[...]` whose filter only ANDs string `eq`s of sub-attributes: a
    /// containment test on the lower-cased emails (`r.emails_lower`, GIN-indexed) that lets the
    /// index find the candidates; the exact condition still decides.
    fn emails_prefilter(&mut self, base: &str, path: &AttrPath, inner: &Filter) -> Option<String> {
        fn pairs(f: &Filter, out: &mut Vec<(String, String)>) -> bool {
            match f {
                Filter::And(a, b) => pairs(a, out) && pairs(b, out),
                Filter::Compare(p, Op::Eq, Value::String(v))
                    if p.sub.is_none() && p.urn.is_none() =>
                {
                    out.push((canonical(&p.name), v.to_lowercase()));
                    true
                }
                _ => false,
            }
        }
        if self.kind != Kind::User
            || base != "r.resource"
            || canonical(&path.name) != "emails"
            || path.urn.is_some()
        {
            return None;
        }
        let mut found = Vec::new();
        if !pairs(inner, &mut found) || found.is_empty() {
            return None;
        }
        let object: serde_json::Map<String, Value> =
            found.into_iter().map(|(k, v)| (k.to_lowercase(), Value::String(v))).collect();
        let v = self.value(&Value::Array(vec![Value::Object(object)]));
        Some(format!("(r.emails_lower @> {v})"))
    }

    /// The elements of a multi-valued attribute as rows `e(v)`.
    fn elements(&mut self, base: &str, path: &AttrPath) -> Result<String, FilterError> {
        if self.kind == Kind::Group && canonical(&path.name) == "members" {
            return Ok(
                "(SELECT jsonb_build_object('value', m.user_id::text, 'type', 'User') AS v \
                        FROM directory.memberships m WHERE m.group_id = r.id) e"
                    .into(),
            );
        }
        let (json, _, _) = self.json_of(base, &AttrPath { sub: None, ..path.clone() })?;
        Ok(format!(
            "jsonb_array_elements(CASE WHEN jsonb_typeof({json}) = 'array' THEN {json} ELSE '[]' END) e(v)"
        ))
    }
}

fn present(json: &str) -> String {
    format!(
        "({json} IS NOT NULL AND {json} <> 'null'::jsonb AND {json} <> '\"\"'::jsonb \
         AND {json} <> '[]'::jsonb AND {json} <> '{{}}'::jsonb)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::filter::parse;

    #[test]
    fn compiles_with_values_as_parameters_never_spliced() {
        let mut c = Compiler { kind: Kind::User, values: vec![], param: "$1" };
        let sql = c
            .compile(&parse(r#"userName eq "O'Brien" and emails[type eq "work"]"#).unwrap())
            .unwrap();
        assert!(!sql.contains("O'Brien") && !sql.contains("O''Brien"), "{sql}");
        // The emails value path also gets its index prefilter (lower-cased).
        assert_eq!(
            c.values,
            [Value::from("O'Brien"), serde_json::json!([{"type": "work"}]), Value::from("work")]
        );
        assert!(sql.contains("r.emails_lower @>") && sql.contains("lower(r.user_name)"), "{sql}");
        assert!(sql.contains("lower"), "userName is case-insensitive: {sql}");
        let mut c = Compiler { kind: Kind::User, values: vec![], param: "$1" };
        let sql = c.compile(&parse(r#"externalId eq "AbC""#).unwrap()).unwrap();
        assert!(!sql.contains("lower"), "externalId is caseExact: {sql}");
        let mut c = Compiler { kind: Kind::User, values: vec![], param: "$1" };
        assert!(c.compile(&parse(r#"shoeSize eq "9""#).unwrap()).is_err());
    }
}
