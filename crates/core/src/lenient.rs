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
//! - [`scrub_values`]: serde messages without the document's values (no personal data).
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
use std::fmt::Write as _;

use serde::de::{DeserializeOwned, Deserializer};
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
}
