//! SCIM filters (RFC 7644 §3.4.2.2): parsed into a [`Filter`] and compiled to a PostgreSQL
//! condition over the stored resource (`r.resource`, jsonb), so a list of 100k users is filtered
//! by the database and its indexes, never in memory.
//!
//! Supported: `eq ne co sw ew pr gt ge lt le`, `and or not`, grouping with parentheses, value
//! paths (`emails[type eq "work"]`), and Entra's value path with a sub-attribute after it
//! (`emails[type eq "work"].value eq "x"`). Operators, attribute names and schema URNs are
//! case-insensitive; string comparisons are case-insensitive except for `id` and `externalId`
//! (caseExact in RFC 7643). Values are never spliced into SQL: they travel as one jsonb
//! parameter and are read back by position.

use serde_json::Value;

/// An attribute path: `[urn:...:]name[.sub]`.
#[derive(Clone, Debug, PartialEq)]
pub struct AttrPath {
    /// The schema URN (an extension's), lower-cased; `None` for the core schema.
    pub urn: Option<String>,
    pub name: String,
    pub sub: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    Compare(AttrPath, Op, Value),
    Present(AttrPath),
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    /// `attr[filter]`: some value of the multi-valued `attr` matches.
    ValuePath(AttrPath, Box<Filter>),
}

/// A filter that does not parse: why (a SCIM `invalidFilter`).
#[derive(Debug, PartialEq, Eq)]
pub struct FilterError(pub String);

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Word(String),
    Str(String),
    Open,
    Close,
    OpenBracket,
    CloseBracket,
}

fn tokenize(text: &str) -> Result<Vec<Token>, FilterError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '(' => {
                tokens.push(Token::Open);
                i += 1;
            }
            ')' => {
                tokens.push(Token::Close);
                i += 1;
            }
            '[' => {
                tokens.push(Token::OpenBracket);
                i += 1;
            }
            ']' => {
                tokens.push(Token::CloseBracket);
                i += 1;
            }
            '"' => {
                // A JSON string: escapes as JSON has them.
                let start = i;
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
                if i >= chars.len() {
                    return Err(FilterError("a string is not closed".into()));
                }
                let raw: String = chars[start..=i].iter().collect();
                let s: String = serde_json::from_str(&raw)
                    .map_err(|e| FilterError(format!("bad string {raw}: {e}")))?;
                tokens.push(Token::Str(s));
                i += 1;
            }
            _ => {
                let start = i;
                while i < chars.len()
                    && !matches!(chars[i], ' ' | '\t' | '\n' | '\r' | '(' | ')' | '[' | ']' | '"')
                {
                    i += 1;
                }
                // `].value`: the sub-attribute after a value path is its own word.
                tokens.push(Token::Word(chars[start..i].iter().collect()));
            }
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

fn op(word: &str) -> Option<Op> {
    Some(match word.to_ascii_lowercase().as_str() {
        "eq" => Op::Eq,
        "ne" => Op::Ne,
        "co" => Op::Co,
        "sw" => Op::Sw,
        "ew" => Op::Ew,
        "gt" => Op::Gt,
        "ge" => Op::Ge,
        "lt" => Op::Lt,
        "le" => Op::Le,
        _ => return None,
    })
}

/// Parses `[urn:...:]name[.sub]`.
pub fn attr_path(text: &str) -> Result<AttrPath, FilterError> {
    let (urn, rest) = match text.to_ascii_lowercase().starts_with("urn:") {
        true => {
            let split =
                text.rfind(':').ok_or_else(|| FilterError(format!("bad attribute {text}")))?;
            (Some(text[..split].to_ascii_lowercase()), &text[split + 1..])
        }
        false => (None, text),
    };
    let (name, sub) = match rest.split_once('.') {
        Some((n, s)) => (n, Some(s.to_owned())),
        None => (rest, None),
    };
    let valid = |s: &str| {
        !s.is_empty()
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '$')
    };
    if !valid(name) || sub.as_deref().is_some_and(|s| !valid(s)) {
        return Err(FilterError(format!("bad attribute path {text:?}")));
    }
    Ok(AttrPath { urn, name: name.to_owned(), sub })
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(word))
    }

    fn or(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.and()?;
        while self.keyword("or") {
            self.at += 1;
            left = Filter::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.unary()?;
        while self.keyword("and") {
            self.at += 1;
            left = Filter::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Filter, FilterError> {
        if self.keyword("not") {
            self.at += 1;
            if self.next() != Some(Token::Open) {
                return Err(FilterError("`not` needs a parenthesised filter".into()));
            }
            let inner = self.or()?;
            if self.next() != Some(Token::Close) {
                return Err(FilterError("a `(` is not closed".into()));
            }
            return Ok(Filter::Not(Box::new(inner)));
        }
        if self.peek() == Some(&Token::Open) {
            self.at += 1;
            let inner = self.or()?;
            if self.next() != Some(Token::Close) {
                return Err(FilterError("a `(` is not closed".into()));
            }
            return Ok(inner);
        }
        let Some(Token::Word(word)) = self.next() else {
            return Err(FilterError("an attribute is expected".into()));
        };
        let path = attr_path(&word)?;
        if self.peek() == Some(&Token::OpenBracket) {
            self.at += 1;
            let inner = self.or()?;
            if self.next() != Some(Token::CloseBracket) {
                return Err(FilterError("a `[` is not closed".into()));
            }
            let mut filter = inner;
            // Entra: `emails[type eq "work"].value eq "x"`.
            if let Some(Token::Word(w)) = self.peek().cloned()
                && let Some(sub) = w.strip_prefix('.')
            {
                self.at += 1;
                let sub_path = attr_path(sub)?;
                filter = Filter::And(Box::new(filter), Box::new(self.comparison(sub_path)?));
            }
            return Ok(Filter::ValuePath(path, Box::new(filter)));
        }
        self.comparison(path)
    }

    fn comparison(&mut self, path: AttrPath) -> Result<Filter, FilterError> {
        let Some(Token::Word(operator)) = self.next() else {
            return Err(FilterError(format!("an operator is expected after {}", path.name)));
        };
        if operator.eq_ignore_ascii_case("pr") {
            return Ok(Filter::Present(path));
        }
        let op =
            op(&operator).ok_or_else(|| FilterError(format!("unknown operator {operator:?}")))?;
        let value = match self.next() {
            Some(Token::Str(s)) => Value::String(s),
            Some(Token::Word(w)) => match w.to_ascii_lowercase().as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                "null" => Value::Null,
                _ => w
                    .parse::<serde_json::Number>()
                    .map(Value::Number)
                    .map_err(|_| FilterError(format!("bad value {w:?}")))?,
            },
            _ => return Err(FilterError(format!("a value is expected after {operator}"))),
        };
        Ok(Filter::Compare(path, op, value))
    }
}

/// Parses a filter.
pub fn parse(text: &str) -> Result<Filter, FilterError> {
    let mut parser = Parser { tokens: tokenize(text)?, at: 0 };
    let filter = parser.or()?;
    if parser.at != parser.tokens.len() {
        return Err(FilterError(format!(
            "unexpected text after the filter: {:?}",
            parser.tokens[parser.at..].first()
        )));
    }
    Ok(filter)
}

/// The resource type a filter is compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    User,
    Group,
}

pub const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const CORE_USER: &str = "urn:ietf:params:scim:schemas:core:2.0:user";
const CORE_GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:group";

/// The attributes of the stored resources with their canonical names, and whether each is
/// multi-valued.
const USER_ATTRS: &[(&str, bool)] = &[
    ("userName", false),
    ("name", false),
    ("displayName", false),
    ("nickName", false),
    ("profileUrl", false),
    ("title", false),
    ("userType", false),
    ("preferredLanguage", false),
    ("locale", false),
    ("timezone", false),
    ("active", false),
    ("emails", true),
    ("phoneNumbers", true),
    ("ims", true),
    ("photos", true),
    ("addresses", true),
    ("groups", true),
    ("entitlements", true),
    ("roles", true),
    ("x509Certificates", true),
    ("externalId", false),
];
const GROUP_ATTRS: &[(&str, bool)] =
    &[("displayName", false), ("externalId", false), ("members", true)];
const ENTERPRISE_ATTRS: &[(&str, bool)] = &[
    ("employeeNumber", false),
    ("costCenter", false),
    ("organization", false),
    ("division", false),
    ("department", false),
    ("manager", false),
];

/// The canonical name of an attribute (or sub-attribute) spelled in any case.
pub fn canonical(name: &str) -> String {
    const SUBS: &[&str] = &[
        "value",
        "display",
        "type",
        "primary",
        "$ref",
        "givenName",
        "familyName",
        "middleName",
        "formatted",
        "honorificPrefix",
        "honorificSuffix",
        "streetAddress",
        "locality",
        "region",
        "postalCode",
        "country",
        "created",
        "lastModified",
        "resourceType",
        "version",
        "location",
        "displayName",
    ];
    USER_ATTRS
        .iter()
        .chain(GROUP_ATTRS)
        .chain(ENTERPRISE_ATTRS)
        .map(|(n, _)| *n)
        .chain(SUBS.iter().copied())
        .chain(["id", "meta"])
        .find(|n| n.eq_ignore_ascii_case(name))
        .map_or_else(|| name.to_owned(), str::to_owned)
}

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

/// Whether one element of a multi-valued attribute (`{"value": ..., "type": ...}`) matches a
/// value filter, in memory (PATCH paths such as `members[value eq "..."]`).
pub fn matches(filter: &Filter, element: &Value) -> bool {
    let get = |path: &AttrPath| -> Option<&Value> {
        let name = canonical(&path.name);
        let v = element.get(&name).or_else(|| {
            element.as_object()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(&name)).map(|(_, v)| v)
        })?;
        match &path.sub {
            Some(sub) => v.get(canonical(sub)),
            None => Some(v),
        }
    };
    let text = |v: &Value| match v {
        Value::String(s) => s.to_lowercase(),
        other => other.to_string().to_lowercase(),
    };
    match filter {
        Filter::And(a, b) => matches(a, element) && matches(b, element),
        Filter::Or(a, b) => matches(a, element) || matches(b, element),
        Filter::Not(a) => !matches(a, element),
        Filter::ValuePath(..) => false,
        Filter::Present(p) => {
            get(p).is_some_and(|v| !v.is_null() && v != "" && v != &Value::Array(vec![]))
        }
        Filter::Compare(p, op, value) => {
            let Some(actual) = get(p) else { return *op == Op::Ne };
            let bool_of = |v: &Value| match v {
                Value::Bool(b) => Some(*b),
                Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
                Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
                _ => None,
            };
            if let (Value::Bool(want), Some(have)) = (value, bool_of(actual)) {
                return match op {
                    Op::Eq => have == *want,
                    Op::Ne => have != *want,
                    _ => false,
                };
            }
            let (a, v) = (text(actual), text(value));
            match op {
                Op::Eq => a == v,
                Op::Ne => a != v,
                Op::Co => a.contains(&v),
                Op::Sw => a.starts_with(&v),
                Op::Ew => a.ends_with(&v),
                Op::Gt => a > v,
                Op::Ge => a >= v,
                Op::Lt => a < v,
                Op::Le => a <= v,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(name: &str) -> AttrPath {
        attr_path(name).unwrap()
    }

    #[test]
    fn parses_precedence_grouping_not_and_value_paths() {
        let f = parse(r#"userName eq "a" or title pr and not (active eq false)"#).unwrap();
        assert_eq!(
            f,
            Filter::Or(
                Box::new(Filter::Compare(path("userName"), Op::Eq, "a".into())),
                Box::new(Filter::And(
                    Box::new(Filter::Present(path("title"))),
                    Box::new(Filter::Not(Box::new(Filter::Compare(
                        path("active"),
                        Op::Eq,
                        false.into()
                    ))))
                ))
            )
        );
        let f = parse(
            r#"emails[type eq "work" and value co "@example.com"] AND (name.familyName sw "J")"#,
        )
        .unwrap();
        assert!(matches!(f, Filter::And(a, _) if matches!(*a, Filter::ValuePath(..))));
        // Entra's value path with a sub-attribute after it.
        let f = parse(r#"emails[type eq "work"].value eq "ann@example.com""#).unwrap();
        let Filter::ValuePath(p, inner) = f else { panic!() };
        assert_eq!(p.name, "emails");
        assert!(matches!(*inner, Filter::And(..)));
        // Operators and keywords in any case; numbers, null, escapes.
        assert!(
            parse(r#"userName EQ "a\"b" Or meta.lastModified GT "2011-05-13T04:42:34Z""#).is_ok()
        );
        assert!(parse("x eq null").is_ok());
        let ext = parse(r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "701984""#).unwrap();
        let Filter::Compare(p, ..) = ext else { panic!() };
        assert_eq!(
            (p.urn.as_deref(), p.name.as_str()),
            (Some(ENTERPRISE.to_ascii_lowercase().as_str()), "employeeNumber")
        );
    }

    #[test]
    fn refuses_what_is_not_a_filter() {
        for bad in [
            "",
            "userName",
            r#"userName eq"#,
            r#"userName xx "a""#,
            r#"(userName eq "a""#,
            r#"emails[type eq "work""#,
            r#"userName eq "a" extra"#,
            r#"not userName eq "a""#,
            r#"userName eq "open"#,
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

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
