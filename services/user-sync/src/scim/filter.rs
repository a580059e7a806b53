//! SCIM filters (RFC 7644 §3.4.2.2) parsed into a [`Filter`], the attributes they name, and
//! their in-memory evaluation for PATCH value paths; the SQL they become is
//! [`super::sql`].
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
pub(super) const CORE_USER: &str = "urn:ietf:params:scim:schemas:core:2.0:user";
pub(super) const CORE_GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:group";

/// The attributes of the stored resources with their canonical names, and whether each is
/// multi-valued.
pub(super) const USER_ATTRS: &[(&str, bool)] = &[
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
pub(super) const GROUP_ATTRS: &[(&str, bool)] =
    &[("displayName", false), ("externalId", false), ("members", true)];
pub(super) const ENTERPRISE_ATTRS: &[(&str, bool)] = &[
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
}
