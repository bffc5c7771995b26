//! Lenient decoding, shared by every adapter, and the rule that nothing is lost silently.
//!
//! Providers send lists whose items sometimes do not decode (a number where an object was
//! expected, a field of the wrong JSON type) or that repeat an id. One such item must not fail
//! the whole answer, and it must not vanish either: DESIGN.md's `partial` says that items
//! skipped as undecodable and connections collapsed as duplicate ids are reported as one
//! `decode` error naming how many and up to [`MAX_NAMED`] ids, and that a list whose every item
//! is undecodable is `failed`. The pieces:
//!
//! - [`LenientList`]: decode a list item by item, keeping what decodes and recording what did
//!   not ([`Skipped`], with its position and, where the item names one, its id);
//! - [`collapse_duplicates`]: one connection per id, the most severe kept;
//! - [`Losses`]: what one answer left out, turned into that `decode` error;
//! - [`Mapped`]: one unit of work's connections plus its losses, turned into the [`Batch`]es a
//!   provider yields (`ok` + a `decode` error → `partial`; only the error → `failed`);
//! - [`scrub_values`]: serde messages without the document's values (no personal data);
//! - [`Lenient`] and [`FromJson`]: one field that never fails to decode (missing, usable, or
//!   of the wrong JSON type), with [`object_from_json!`](crate::object_from_json) for structs;
//! - [`lenient_enum!`](crate::lenient_enum): the one wire-enum macro (unknown values kept as
//!   `Other(String)`, exact or case-insensitive matching);
//! - [`parse_time`]: the one date-time parser.
//!
//! ```
//! use connhealth_core::lenient::LenientList;
//!
//! #[derive(serde::Deserialize)]
//! struct Item { id: String }
//!
//! let list: LenientList<Item> =
//!     serde_json::from_str(r#"[{"id": "a"}, 7, {"id": 5, "connection_id": "c9"}]"#).unwrap();
//! assert_eq!(list.items.len(), 1);
//! assert_eq!(list.skipped.len(), 2);
//! assert_eq!(list.skipped[0].index, 1);
//! assert_eq!(list.skipped[1].id.as_deref(), Some("c9"));
//! ```

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::marker::PhantomData;

use serde::de::{self, DeserializeOwned, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, ErrorKind};
use crate::model::Connection;
use crate::provider::Batch;

/// The most ids a loss report names (the count is always complete).
pub const MAX_NAMED: usize = 20;

/// Keys under which a list item may carry its id, tried in this order when the item did not
/// decode (so the report can name it).
const ID_KEYS: [&str; 6] = [
    "connection_id",
    "connectionId",
    "merchant_id",
    "merchantId",
    "customer_id",
    "id",
];

/// A list item that could not be decoded and was left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Its position in the list (0-based).
    pub index: usize,
    /// The id it carries, when it is an object with a readable one.
    pub id: Option<String>,
    /// Why, without any value from the document (so no personal data).
    pub reason: String,
}

impl Skipped {
    /// The item at `index` (the raw JSON value) did not decode because of `reason` (scrubbed
    /// here of any quoted value).
    pub fn new(index: usize, item: &Value, reason: &str) -> Self {
        Skipped {
            index,
            id: item_id(item),
            reason: scrub_values(reason),
        }
    }
}

/// A readable id of a JSON item: a string or number under one of the usual id keys.
pub fn item_id(item: &Value) -> Option<String> {
    let map = item.as_object()?;
    ID_KEYS.iter().find_map(|k| match map.get(*k)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

/// A list decoded item by item: every item that decodes as `T`, and every one that did not.
#[derive(Debug, Clone, PartialEq)]
pub struct LenientList<T> {
    /// The items that decoded, in order.
    pub items: Vec<T>,
    /// The items that did not.
    pub skipped: Vec<Skipped>,
}

impl<T> Default for LenientList<T> {
    fn default() -> Self {
        LenientList {
            items: Vec::new(),
            skipped: Vec::new(),
        }
    }
}

impl<T: DeserializeOwned> LenientList<T> {
    /// Decode `values` one by one.
    pub fn from_values(values: Vec<Value>) -> Self {
        let mut out = LenientList {
            items: Vec::with_capacity(values.len()),
            skipped: Vec::new(),
        };
        for (index, item) in values.into_iter().enumerate() {
            // Decoded from a reference, so a failed item is still there to be named.
            match T::deserialize(&item) {
                Ok(v) => out.items.push(v),
                Err(e) => out.skipped.push(Skipped::new(index, &item, &e.to_string())),
            }
        }
        out
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for LenientList<T> {
    /// A JSON list (`null` is an empty one).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let values = Option::<Vec<Value>>::deserialize(d)?.unwrap_or_default();
        Ok(LenientList::from_values(values))
    }
}

/// Keeps one connection per id, in the order ids first appear; of several with one id, the
/// most severe is kept (the first of equally severe ones). Returns the ids of the connections
/// dropped (an id appears once per extra copy).
pub fn collapse_duplicates(connections: &mut Vec<Connection>) -> Vec<String> {
    let mut dropped = Vec::new();
    if connections.len() < 2 {
        return dropped;
    }
    let mut at: HashMap<String, usize> = HashMap::with_capacity(connections.len());
    let mut kept: Vec<Connection> = Vec::with_capacity(connections.len());
    for c in connections.drain(..) {
        match at.get(&c.id) {
            Some(&i) => {
                dropped.push(c.id.clone());
                if c.status > kept[i].status {
                    kept[i] = c;
                }
            }
            None => {
                at.insert(c.id.clone(), kept.len());
                kept.push(c);
            }
        }
    }
    *connections = kept;
    dropped
}

/// What one answer left out: undecodable items and collapsed duplicate ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Losses {
    /// Items that could not be decoded (or mapped: an entry that cannot be identified).
    pub skipped: Vec<Skipped>,
    /// Ids of connections dropped because another one had the same id.
    pub duplicates: Vec<String>,
}

impl Losses {
    /// Nothing was left out.
    pub fn is_empty(&self) -> bool {
        self.skipped.is_empty() && self.duplicates.is_empty()
    }

    /// The `decode` error that reports these losses, or `None` when there are none. `what`
    /// names the items (`"connection entries"`, `"report entries"`).
    pub fn to_error(
        &self,
        provider: &str,
        endpoint: &str,
        customer_id: Option<&str>,
        what: &str,
    ) -> Option<Error> {
        if self.is_empty() {
            return None;
        }
        let mut msg = String::new();
        if !self.skipped.is_empty() {
            let n = self.skipped.len();
            let _ = write!(
                msg,
                "{what} left out as undecodable: {n} ({})",
                name_skipped(&self.skipped)
            );
            if let Some(first) = self.skipped.first() {
                let _ = write!(msg, "; first reason: {}", first.reason);
            }
        }
        if !self.duplicates.is_empty() {
            if !msg.is_empty() {
                msg.push_str("; ");
            }
            let mut unique: Vec<&str> = Vec::new();
            for id in &self.duplicates {
                if !unique.contains(&id.as_str()) {
                    unique.push(id);
                }
            }
            let _ = write!(
                msg,
                "{what} collapsed into another with the same id, the most severe kept: {} (ids {})",
                self.duplicates.len(),
                name_list(&unique)
            );
        }
        let mut e = Error::new(provider, endpoint, ErrorKind::Decode, msg);
        if let Some(c) = customer_id {
            e = e.with_customer(c);
        }
        Some(e)
    }
}

fn name_skipped(skipped: &[Skipped]) -> String {
    let names: Vec<String> = skipped
        .iter()
        .map(|s| match &s.id {
            Some(id) => format!("#{} id {id}", s.index),
            None => format!("#{}", s.index),
        })
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    format!("items {}", name_list(&refs))
}

/// `a, b, c` with at most [`MAX_NAMED`] names, then `and N more`.
fn name_list(names: &[&str]) -> String {
    let mut out = names
        .iter()
        .take(MAX_NAMED)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > MAX_NAMED {
        let _ = write!(out, " and {} more", names.len() - MAX_NAMED);
    }
    out
}

/// One unit of work's mapped answer (one customer's list, one report): the connections, and
/// the error reporting what was left out of it.
#[derive(Debug, Default)]
pub struct Mapped {
    /// The connections.
    pub connections: Vec<Connection>,
    /// The `decode` error naming the skipped items and collapsed duplicates, if any.
    pub lost: Option<Error>,
}

impl Mapped {
    /// The batches a provider yields for this answer: the connections alone; the connections
    /// and the loss error (the outcome becomes `partial`); or, when items were lost and none
    /// is left, only the error (nothing usable came: `failed` unless others answered).
    pub fn into_batches(self) -> Vec<Batch> {
        match self.lost {
            None => vec![Ok(self.connections)],
            Some(e) if self.connections.is_empty() => vec![Err(e)],
            Some(e) => vec![Ok(self.connections), Err(e)],
        }
    }
}

impl Mapped {
    /// For callers that want connections, not batches: the connections, unless items were
    /// lost and none is left (then the loss error). Partial losses are not returned here.
    pub fn into_result(self) -> crate::Result<Vec<Connection>> {
        match self.lost {
            Some(e) if self.connections.is_empty() => Err(e),
            _ => Ok(self.connections),
        }
    }
}

/// Parses a provider's date-time: RFC 3339, or one without an offset (`2024-05-01T10:00:00`,
/// `2024-05-01 10:00:00.5`, as FastAPI and others emit naive datetimes), read as UTC.
/// Anything else is `None` (a mapping then leaves the time out rather than failing).
///
/// ```
/// use connhealth_core::lenient::parse_time;
/// assert_eq!(parse_time("2024-05-01T10:00:00+02:00").unwrap().to_rfc3339(), "2024-05-01T08:00:00+00:00");
/// assert_eq!(parse_time(" 2024-05-01 10:00:00 ").unwrap().to_rfc3339(), "2024-05-01T10:00:00+00:00");
/// assert_eq!(parse_time("yesterday"), None);
/// ```
pub fn parse_time(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let s = s.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&chrono::Utc));
    }
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f"))
        .ok()
        .map(|n| n.and_utc())
}

/// Removes quoted values from a serde message (`invalid type: string "x"` → `string "…"`,
/// ``integer `5` `` → ``integer `…` ``), so personal data in a malformed document never reaches
/// an error, and drops serde's `at line L column C` suffix. Field names stay: serde quotes
/// them in backticks right after `field ` (``missing field `merchant_id` ``), and they come
/// from our types, not from the document.
pub fn scrub_values(msg: &str) -> String {
    let msg = msg.split(" at line ").next().unwrap_or(msg);
    let mut out = String::with_capacity(msg.len());
    let mut quote: Option<(char, bool)> = None; // (quote char, keep its content)
    for ch in msg.chars() {
        match quote {
            None if ch == '"' || ch == '`' => {
                let keep = ch == '`' && out.ends_with("field ");
                quote = Some((ch, keep));
                out.push(ch);
            }
            None => out.push(ch),
            Some((q, keep)) if ch == q => {
                if !keep {
                    out.push('…');
                }
                quote = None;
                out.push(ch);
            }
            Some((_, true)) => out.push(ch),
            Some((_, false)) => {}
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Lenient fields
// ---------------------------------------------------------------------------------------------

/// A field that never fails to decode: missing/`null`, a usable value, or a value of a JSON
/// type that does not fit (kept as the name of that type, never as the value, so no personal
/// data is kept).
///
/// `T` says per JSON type what fits through [`FromJson`]; compound values that do not fit are
/// skipped without being materialized.
///
/// ```
/// use connhealth_core::lenient::Lenient;
///
/// let v: Vec<Lenient<u64>> = serde_json::from_str(r#"[7, "8", null, {"a": 1}, -1]"#).unwrap();
/// assert_eq!(
///     v,
///     [
///         Lenient::Present(7),
///         Lenient::Present(8),
///         Lenient::Absent,
///         Lenient::Invalid("object"),
///         Lenient::Invalid("number"),
///     ]
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Lenient<T> {
    /// Missing or `null`.
    #[default]
    Absent,
    /// A usable value.
    Present(T),
    /// A value of a type that does not fit; the JSON type it had (`"number"`, `"object"`…).
    Invalid(&'static str),
}

impl<T> Lenient<T> {
    /// The value, if usable.
    pub fn get(&self) -> Option<&T> {
        match self {
            Lenient::Present(v) => Some(v),
            _ => None,
        }
    }

    /// Whether the field was missing or null.
    pub fn is_absent(&self) -> bool {
        matches!(self, Lenient::Absent)
    }
}

/// How a JSON value of each type converts into `Self` inside a [`Lenient`]; `None` (the
/// default for every JSON type) means "does not fit".
///
/// Structs with a derived `Deserialize` get an implementation from [`object_from_json!`](crate::object_from_json)
/// (an object decodes through the derive, anything else does not fit); enums defined with
/// [`lenient_enum!`](crate::lenient_enum) take strings only.
pub trait FromJson: Sized {
    /// A JSON boolean.
    fn from_bool(_v: bool) -> Option<Self> {
        None
    }
    /// A negative JSON integer (or one serde reads as `i64`).
    fn from_i64(_v: i64) -> Option<Self> {
        None
    }
    /// A non-negative JSON integer.
    fn from_u64(_v: u64) -> Option<Self> {
        None
    }
    /// A JSON number with a fraction or exponent.
    fn from_f64(_v: f64) -> Option<Self> {
        None
    }
    /// A JSON string (borrowed).
    fn from_str(_v: &str) -> Option<Self> {
        None
    }
    /// A JSON string (owned); by default [`FromJson::from_str`].
    fn from_string(v: String) -> Option<Self> {
        Self::from_str(&v)
    }
    /// A JSON object; by default skipped without being built.
    fn from_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Option<Self>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    /// A JSON array; by default skipped without being built.
    fn from_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Option<Self>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

impl<'de, T: FromJson> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LenientVisitor(PhantomData))
    }
}

struct LenientVisitor<T>(PhantomData<T>);

fn wrap<T>(v: Option<T>, kind: &'static str) -> Lenient<T> {
    match v {
        Some(v) => Lenient::Present(v),
        None => Lenient::Invalid(kind),
    }
}

impl<'de, T: FromJson> Visitor<'de> for LenientVisitor<T> {
    type Value = Lenient<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Lenient::Absent)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Lenient::Absent)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(wrap(T::from_bool(v), "boolean"))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(wrap(T::from_i64(v), "number"))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(wrap(T::from_u64(v), "number"))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(wrap(T::from_f64(v), "number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(wrap(T::from_str(v), "string"))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(wrap(T::from_string(v), "string"))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Ok(wrap(T::from_map(map)?, "object"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Ok(wrap(T::from_seq(seq)?, "array"))
    }
}

/// Implements [`FromJson`] for structs with a derived `Deserialize`: an object decodes through
/// the derive, anything else does not fit.
///
/// ```
/// use connhealth_core::lenient::Lenient;
///
/// #[derive(Debug, PartialEq, serde::Deserialize)]
/// struct Scope { name: Lenient<String> }
/// connhealth_core::object_from_json!(Scope);
///
/// let v: Lenient<Scope> = serde_json::from_str(r#"{"name": "read"}"#).unwrap();
/// assert_eq!(v.get().unwrap().name.get().map(String::as_str), Some("read"));
/// let v: Lenient<Scope> = serde_json::from_str(r#""read""#).unwrap();
/// assert_eq!(v, Lenient::Invalid("string"));
/// ```
#[macro_export]
macro_rules! object_from_json {
    ($($t:ty),* $(,)?) => {$(
        impl $crate::lenient::FromJson for $t {
            fn from_map<'de, A: $crate::lenient::__private::serde::de::MapAccess<'de>>(
                map: A,
            ) -> ::std::result::Result<::std::option::Option<Self>, A::Error> {
                <$t as $crate::lenient::__private::serde::Deserialize<'de>>::deserialize(
                    $crate::lenient::__private::serde::de::value::MapAccessDeserializer::new(map),
                )
                .map(::std::option::Option::Some)
            }
        }
    )*};
}

/// Any scalar as its text: strings as they are, booleans and numbers as their JSON text.
impl FromJson for String {
    fn from_bool(v: bool) -> Option<Self> {
        Some(v.to_string())
    }
    fn from_i64(v: i64) -> Option<Self> {
        Some(v.to_string())
    }
    fn from_u64(v: u64) -> Option<Self> {
        Some(v.to_string())
    }
    fn from_f64(v: f64) -> Option<Self> {
        Some(v.to_string())
    }
    fn from_str(v: &str) -> Option<Self> {
        Some(v.to_owned())
    }
    fn from_string(v: String) -> Option<Self> {
        Some(v)
    }
}

/// `true`/`false`, `0`/`1`, and the strings `"true"`/`"false"` in any case.
impl FromJson for bool {
    fn from_bool(v: bool) -> Option<Self> {
        Some(v)
    }
    fn from_u64(v: u64) -> Option<Self> {
        match v {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }
    fn from_i64(v: i64) -> Option<Self> {
        u64::try_from(v).ok().and_then(Self::from_u64)
    }
    fn from_str(v: &str) -> Option<Self> {
        let v = v.trim();
        if v.eq_ignore_ascii_case("true") {
            Some(true)
        } else if v.eq_ignore_ascii_case("false") {
            Some(false)
        } else {
            None
        }
    }
}

/// Non-negative integers, also as whole floats and as strings (`"123"`).
impl FromJson for u64 {
    fn from_u64(v: u64) -> Option<Self> {
        Some(v)
    }
    fn from_i64(v: i64) -> Option<Self> {
        u64::try_from(v).ok()
    }
    fn from_f64(v: f64) -> Option<Self> {
        (v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v < 1.8e19).then_some(v as u64)
    }
    fn from_str(v: &str) -> Option<Self> {
        let v = v.trim();
        v.parse::<u64>()
            .ok()
            .or_else(|| v.parse::<f64>().ok().and_then(Self::from_f64))
    }
}

/// A string through [`parse_time`]; an integer as epoch milliseconds (when its magnitude is at
/// least 10^11) or epoch seconds.
impl FromJson for chrono::DateTime<chrono::Utc> {
    fn from_str(v: &str) -> Option<Self> {
        parse_time(v)
    }
    fn from_i64(v: i64) -> Option<Self> {
        use chrono::TimeZone as _;
        if v.abs() >= 100_000_000_000 {
            chrono::Utc.timestamp_millis_opt(v).single()
        } else {
            chrono::Utc.timestamp_opt(v, 0).single()
        }
    }
    fn from_u64(v: u64) -> Option<Self> {
        i64::try_from(v).ok().and_then(Self::from_i64)
    }
}

/// An array; items that do not fit are dropped, the rest kept.
impl<T: FromJson> FromJson for Vec<T> {
    fn from_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Option<Self>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element::<Lenient<T>>()? {
            if let Lenient::Present(v) = item {
                out.push(v);
            }
        }
        Ok(Some(out))
    }
}

/// A value that is accepted whatever it is and not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ignored;

impl FromJson for Ignored {
    fn from_bool(_: bool) -> Option<Self> {
        Some(Ignored)
    }
    fn from_i64(_: i64) -> Option<Self> {
        Some(Ignored)
    }
    fn from_u64(_: u64) -> Option<Self> {
        Some(Ignored)
    }
    fn from_f64(_: f64) -> Option<Self> {
        Some(Ignored)
    }
    fn from_str(_: &str) -> Option<Self> {
        Some(Ignored)
    }
    fn from_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Option<Self>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Some(Ignored))
    }
    fn from_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Option<Self>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Some(Ignored))
    }
}

// ---------------------------------------------------------------------------------------------
// Enums
// ---------------------------------------------------------------------------------------------

/// Defines a wire enum whose unknown values are kept: the documented variants plus
/// `Other(String)`. One macro for every adapter.
///
/// Matching is exact by default; write `ignoring case` after the name to match ignoring ASCII
/// case and surrounding blanks (the raw value, untrimmed, is still what `Other` keeps).
///
/// The enum gets `KNOWN` (every documented variant), `parse`, `as_str` (the documented
/// spelling, or the unknown value verbatim), `is_known`, `From<&str>`, `Display`, `Serialize`
/// (as `as_str`), `Deserialize` and [`FromJson`].
///
/// **Non-string values.** Through plain `Deserialize`, a value that is not a string is not an
/// error: it becomes `Other` holding its JSON text (`7`, `true`, `1.5`, `null`), an object or
/// array as `{…}` / `[…]` (never its content, which could hold personal data). Inside a
/// [`Lenient`] only strings fit, so a non-string is [`Lenient::Invalid`] naming its JSON type.
///
/// ```
/// use connhealth_core::lenient::Lenient;
///
/// connhealth_core::lenient_enum! {
///     /// A check's status.
///     pub enum CheckStatus ignoring case {
///         /// `COMPLETE`
///         Complete = "COMPLETE",
///         /// `NEEDS_ATTENTION`
///         NeedsAttention = "NEEDS_ATTENTION",
///     }
/// }
/// connhealth_core::lenient_enum! {
///     /// A connection's status.
///     pub enum ConnStatus {
///         /// `active`
///         Active = "active",
///     }
/// }
///
/// assert_eq!(CheckStatus::parse(" complete "), CheckStatus::Complete);
/// assert_eq!(CheckStatus::Complete.as_str(), "COMPLETE");
/// assert_eq!(ConnStatus::parse("ACTIVE"), ConnStatus::Other("ACTIVE".into()));
/// let s: ConnStatus = serde_json::from_str("7").unwrap();
/// assert_eq!(s, ConnStatus::Other("7".into()));
/// let s: ConnStatus = serde_json::from_str(r#"{"secret": "x"}"#).unwrap();
/// assert_eq!(s.as_str(), "{…}");
/// let s: Lenient<CheckStatus> = serde_json::from_str("7").unwrap();
/// assert_eq!(s, Lenient::Invalid("number"));
/// assert_eq!(serde_json::to_string(&ConnStatus::Active).unwrap(), r#""active""#);
/// ```
#[macro_export]
macro_rules! lenient_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident ignoring case {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),+ $(,)?
        }
    ) => {
        $crate::lenient_enum!(@define
            [$(#[$meta])*] $vis $name
            [$( [$(#[$vmeta])*] $variant $text )+]
            |raw| {
                let v = raw.trim();
                $( if v.eq_ignore_ascii_case($text) { return $name::$variant; } )+
                $name::Other(raw.to_owned())
            }
        );
    };
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),+ $(,)?
        }
    ) => {
        $crate::lenient_enum!(@define
            [$(#[$meta])*] $vis $name
            [$( [$(#[$vmeta])*] $variant $text )+]
            |raw| {
                match raw {
                    $( $text => $name::$variant, )+
                    other => $name::Other(other.to_owned()),
                }
            }
        );
    };
    (@define
        [$(#[$meta:meta])*] $vis:vis $name:ident
        [$( [$(#[$vmeta:meta])*] $variant:ident $text:literal )+]
        |$raw:ident| $parse:block
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A value not in the documented list, kept verbatim (a non-string JSON value as
            /// its JSON text; an object or array as `{…}` / `[…]`).
            Other(::std::string::String),
        }

        #[allow(dead_code)]
        impl $name {
            /// Every documented value, in the order of the provider's documentation.
            $vis const KNOWN: &'static [$name] = &[ $( $name::$variant, )+ ];

            /// Classify a raw value.
            $vis fn parse($raw: &str) -> Self $parse

            /// The value as the provider spells it (an unknown one verbatim).
            $vis fn as_str(&self) -> &str {
                match self {
                    $( $name::$variant => $text, )+
                    $name::Other(s) => s,
                }
            }

            /// Whether this is a documented value.
            $vis fn is_known(&self) -> bool {
                !matches!(self, $name::Other(_))
            }
        }

        impl ::std::convert::From<&str> for $name {
            fn from(s: &str) -> Self {
                $name::parse(s)
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl $crate::lenient::__private::serde::Serialize for $name {
            fn serialize<S: $crate::lenient::__private::serde::Serializer>(
                &self,
                s: S,
            ) -> ::std::result::Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> $crate::lenient::__private::serde::Deserialize<'de> for $name {
            fn deserialize<D: $crate::lenient::__private::serde::Deserializer<'de>>(
                d: D,
            ) -> ::std::result::Result<Self, D::Error> {
                d.deserialize_any($crate::lenient::EnumVisitor::<$name>::new())
            }
        }

        impl $crate::lenient::FromJson for $name {
            fn from_str(v: &str) -> ::std::option::Option<Self> {
                ::std::option::Option::Some($name::parse(v))
            }
        }
    };
}

/// Reads any JSON value as text without building a `serde_json::Value`: strings as they are,
/// numbers and booleans as their JSON text, `null` as `null`, objects and arrays as `{…}` /
/// `[…]` (their content skipped).
///
/// ```
/// use serde::Deserializer as _;
/// let mut d = serde_json::Deserializer::from_str(r#"[1, {"email": "a@b.example"}]"#);
/// let text = d.deserialize_any(connhealth_core::lenient::JsonText).unwrap();
/// assert_eq!(text, "[…]");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct JsonText;

impl<'de> Visitor<'de> for JsonText {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_unit<E: de::Error>(self) -> Result<String, E> {
        Ok("null".to_owned())
    }
    fn visit_none<E: de::Error>(self) -> Result<String, E> {
        Ok("null".to_owned())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<String, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok("{…}".to_owned())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<String, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok("[…]".to_owned())
    }
}

/// The `Deserialize` of [`lenient_enum!`](crate::lenient_enum) enums: a string maps straight
/// to its variant (no allocation for a documented value); any other value is read as
/// [`JsonText`] reads it and kept as `Other`.
#[derive(Debug)]
pub struct EnumVisitor<T>(PhantomData<T>);

impl<T> EnumVisitor<T> {
    /// The visitor.
    pub fn new() -> Self {
        EnumVisitor(PhantomData)
    }
}

impl<T> Default for EnumVisitor<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'de, T: for<'a> From<&'a str>> Visitor<'de> for EnumVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        Ok(T::from(v))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<T, E> {
        JsonText.visit_bool(v).map(|t| T::from(&t))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        JsonText.visit_i64(v).map(|t| T::from(&t))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        JsonText.visit_u64(v).map(|t| T::from(&t))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        JsonText.visit_f64(v).map(|t| T::from(&t))
    }
    fn visit_unit<E: de::Error>(self) -> Result<T, E> {
        JsonText.visit_unit().map(|t| T::from(&t))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        JsonText.visit_map(map).map(|t| T::from(&t))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<T, A::Error> {
        JsonText.visit_seq(seq).map(|t| T::from(&t))
    }
}

/// What the exported macros use; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use serde;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Customer, Role, Status};

    fn conn(id: &str, status: Status) -> Connection {
        let mut c = Connection::new(
            "p",
            None,
            Customer::new("c"),
            "shopify",
            Role::Source,
            status,
            chrono::Utc::now(),
        );
        c.id = id.to_owned();
        c
    }

    #[test]
    fn duplicates_collapse_to_the_most_severe_in_first_seen_order() {
        let mut v = vec![
            conn("b", Status::Healthy),
            conn("a", Status::Healthy),
            conn("b", Status::ActionRequired),
            conn("b", Status::Degraded),
        ];
        let dropped = collapse_duplicates(&mut v);
        assert_eq!(dropped, ["b", "b"]);
        let got: Vec<_> = v.iter().map(|c| (c.id.as_str(), c.status)).collect();
        assert_eq!(got, [("b", Status::ActionRequired), ("a", Status::Healthy)]);
    }

    #[test]
    fn losses_name_the_count_and_at_most_twenty_ids() {
        let losses = Losses {
            skipped: vec![],
            duplicates: (0..25).map(|i| format!("p:{i:02}")).collect(),
        };
        let e = losses
            .to_error("p", "GET /x", Some("c1"), "entries")
            .unwrap();
        assert_eq!(e.kind(), ErrorKind::Decode);
        assert_eq!(e.customer_id(), Some("c1"));
        let m = e.message();
        assert!(m.starts_with("entries collapsed into another with the same id, the most severe kept: 25 (ids p:00, "), "{m}");
        assert!(
            m.contains("p:19") && !m.contains("p:20") && m.ends_with("and 5 more)"),
            "{m}"
        );
        assert!(Losses::default().to_error("p", "x", None, "e").is_none());
    }

    #[test]
    fn skipped_items_keep_no_values() {
        let list: LenientList<Customer> =
            serde_json::from_str(r#"[{"id": "cus_9", "name": 5}, 1, null]"#).unwrap();
        assert!(list.items.is_empty());
        assert_eq!(list.skipped.len(), 3);
        assert_eq!(list.skipped[0].id.as_deref(), Some("cus_9"));
        let e = Losses {
            skipped: list.skipped,
            duplicates: vec![],
        }
        .to_error("p", "x", None, "entries")
        .unwrap();
        assert!(
            e.message()
                .starts_with("entries left out as undecodable: 3 (items #0 id cus_9, #1, #2)"),
            "{e}"
        );
        assert!(!e.message().contains("line 1"), "{e}");
    }

    #[test]
    fn batches_make_partial_or_failed() {
        let lost = || Some(Error::new("p", "x", ErrorKind::Decode, "lost"));
        let b = Mapped {
            connections: vec![conn("a", Status::Healthy)],
            lost: lost(),
        }
        .into_batches();
        assert!(b[0].is_ok() && b[1].is_err());
        let b = Mapped {
            connections: vec![],
            lost: lost(),
        }
        .into_batches();
        assert_eq!(b.len(), 1);
        assert!(b[0].is_err());
        let b = Mapped::default().into_batches();
        assert!(matches!(&b[..], [Ok(v)] if v.is_empty()));
    }

    #[test]
    fn scrubbed_messages_drop_values() {
        assert_eq!(
            scrub_values(
                "invalid type: string \"alice@example.com\", expected u64 at line 1 column 9"
            ),
            "invalid type: string \"…\", expected u64"
        );
        assert_eq!(
            scrub_values("invalid type: integer `5551234`, expected a string at line 2 column 1"),
            "invalid type: integer `…`, expected a string"
        );
        assert_eq!(
            scrub_values("missing field `merchant_id`"),
            "missing field `merchant_id`"
        );
        assert_eq!(
            scrub_values("unknown variant `bob@example.com`, expected `A` or `B`"),
            "unknown variant `…`, expected `…` or `…`"
        );
    }

    crate::lenient_enum! {
        /// Matched exactly.
        pub(crate) enum Exact {
            /// `active`
            Active = "active",
            /// `disconnected`
            Disconnected = "disconnected",
        }
    }

    crate::lenient_enum! {
        /// Matched ignoring case.
        pub(crate) enum Loose ignoring case {
            /// `NEEDS_ATTENTION`
            NeedsAttention = "NEEDS_ATTENTION",
        }
    }

    #[test]
    fn enums_match_exactly_or_ignoring_case_and_keep_unknown_values() {
        assert_eq!(Exact::parse("active"), Exact::Active);
        assert_eq!(Exact::parse("ACTIVE"), Exact::Other("ACTIVE".into()));
        assert_eq!(Exact::parse(" active"), Exact::Other(" active".into()));
        assert_eq!(Loose::parse(" needs_attention\n"), Loose::NeedsAttention);
        // The raw value, untrimmed, is what an unknown one keeps.
        assert_eq!(Loose::parse(" odd "), Loose::Other(" odd ".into()));
        assert_eq!(Loose::parse(" odd ").as_str(), " odd ");
        assert_eq!(Loose::NeedsAttention.to_string(), "NEEDS_ATTENTION");
        assert_eq!(Exact::KNOWN, [Exact::Active, Exact::Disconnected]);
        assert!(Exact::Active.is_known() && !Exact::Other("x".into()).is_known());
        assert_eq!(Exact::from("disconnected"), Exact::Disconnected);
    }

    #[test]
    fn enums_keep_non_string_values_as_json_text_never_their_content() {
        let got: Vec<Exact> = serde_json::from_str(
            r#"["active", "paused", 7, -2, 1.5, true, null, {"email": "a@b.example"}, ["x"]]"#,
        )
        .unwrap();
        let text: Vec<&str> = got.iter().map(Exact::as_str).collect();
        assert_eq!(
            text,
            ["active", "paused", "7", "-2", "1.5", "true", "null", "{…}", "[…]"]
        );
        assert_eq!(got[0], Exact::Active);
        // `Option<_>` turns null into None before the enum sees it.
        let none: Option<Exact> = serde_json::from_str("null").unwrap();
        assert_eq!(none, None);
        // Serialized as the provider spells it, unknown ones verbatim.
        assert_eq!(
            serde_json::to_string(&[Exact::Active, Exact::Other("x y".into())]).unwrap(),
            r#"["active","x y"]"#
        );
        // Inside a Lenient only strings fit.
        let l: Vec<Lenient<Loose>> =
            serde_json::from_str(r#"["needs_attention", "nope", 7, {"a": 1}, null]"#).unwrap();
        assert_eq!(
            l,
            [
                Lenient::Present(Loose::NeedsAttention),
                Lenient::Present(Loose::Other("nope".into())),
                Lenient::Invalid("number"),
                Lenient::Invalid("object"),
                Lenient::Absent,
            ]
        );
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Obj {
        #[serde(default)]
        n: Lenient<u64>,
        #[serde(default)]
        at: Lenient<chrono::DateTime<chrono::Utc>>,
        #[serde(default)]
        flags: Lenient<Vec<bool>>,
    }
    crate::object_from_json!(Obj);

    #[test]
    fn lenient_fields_never_fail() {
        let v: Vec<Lenient<Obj>> = serde_json::from_str(
            r#"[{"n": "12", "at": 1714557600000, "flags": [true, "FALSE", 3, 0]},
                {"n": -1, "at": "2024-05-01 10:00:00", "flags": "x"}, "obj", 5, [1]]"#,
        )
        .unwrap();
        let first = v[0].get().unwrap();
        assert_eq!(first.n, Lenient::Present(12));
        assert_eq!(
            first.at.get().map(|t| t.to_rfc3339()),
            Some("2024-05-01T10:00:00+00:00".to_owned())
        );
        assert_eq!(first.flags, Lenient::Present(vec![true, false, false]));
        let second = v[1].get().unwrap();
        assert_eq!(second.n, Lenient::Invalid("number"));
        assert_eq!(
            second.at.get().map(|t| t.to_rfc3339()),
            Some("2024-05-01T10:00:00+00:00".to_owned())
        );
        assert_eq!(second.flags, Lenient::Invalid("string"));
        assert_eq!(v[2], Lenient::Invalid("string"));
        assert_eq!(v[3], Lenient::Invalid("number"));
        assert_eq!(v[4], Lenient::Invalid("array"));
        let i: Vec<Lenient<Ignored>> = serde_json::from_str(r#"[1, "a", {}, [], null]"#).unwrap();
        assert_eq!(i.iter().filter(|x| x.get().is_some()).count(), 4);
        assert!(i[4].is_absent());
    }
}
