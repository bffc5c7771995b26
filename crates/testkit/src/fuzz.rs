//! Proptest strategies for decoder tests (feature `proptest`): arbitrary JSON shaped by a
//! provider's vocabulary, and structural mutations of real documents (the documented examples
//! and generated data), so that every adapter's decoders and mappings can be fed the same kind
//! of hostile input.
//!
//! ```
//! use connhealth_testkit::fuzz::{arb_mutations, mutate, Vocabulary};
//! use proptest::prelude::*;
//! use proptest::strategy::ValueTree;
//!
//! const VOCAB: Vocabulary = Vocabulary { keys: &["status", "id"], words: &["active"] };
//! let mut runner = proptest::test_runner::TestRunner::deterministic();
//! let muts = arb_mutations(VOCAB).new_tree(&mut runner).unwrap().current();
//! let mut doc = serde_json::json!({"status": "active", "id": "c1"});
//! for (pick, op) in &muts {
//!     mutate(&mut doc, *pick, op);
//! }
//! ```

use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::Config as ProptestConfig;
use serde_json::Value;

/// The keys and string values a provider's documents use: generated JSON leans on them so
/// that it reaches past the decoders' first checks.
#[derive(Debug, Clone, Copy)]
pub struct Vocabulary {
    /// Object keys.
    pub keys: &'static [&'static str],
    /// String values.
    pub words: &'static [&'static str],
}

/// 256 cases (as in CI), or `PROPTEST_CASES`; no failure files written into the tree.
pub fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn arb_string(v: Vocabulary) -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(v.words).prop_map(str::to_owned),
        1 => any::<String>(),
    ]
}

fn arb_key(v: Vocabulary) -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(v.keys).prop_map(str::to_owned),
        1 => any::<String>(),
    ]
}

fn arb_leaf(v: Vocabulary) -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        select(&[0i64, -1, 1, 150, 149, i64::MIN, i64::MAX][..]).prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        arb_string(v).prop_map(Value::String),
    ]
}

/// Arbitrary JSON, up to 4 levels deep, whose keys and strings lean on `v`.
pub fn arb_json(v: Vocabulary) -> impl Strategy<Value = Value> {
    arb_leaf(v).prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((arb_key(v), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// One structural mutation, applied to a node of a document by [`mutate`].
#[derive(Debug, Clone)]
pub enum Op {
    /// Replace the node with this value.
    Replace(Value),
    /// Remove the node from its object or array.
    Remove,
    /// Append a copy of an array's items (duplicates).
    DuplicateItems,
    /// Replace a non-string node by its JSON text as a string (`3` → `"3"`).
    Stringify,
    /// Flip a string's case.
    ChangeCase,
    /// Move the node to another key of its object.
    RenameKey(String),
}

fn arb_op(v: Vocabulary) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => arb_json(v).prop_map(Op::Replace),
        2 => Just(Op::Remove),
        1 => Just(Op::DuplicateItems),
        1 => Just(Op::Stringify),
        1 => Just(Op::ChangeCase),
        1 => arb_key(v).prop_map(Op::RenameKey),
    ]
}

/// One to five mutations, each with the index of the node it applies to (modulo the count).
pub fn arb_mutations(v: Vocabulary) -> impl Strategy<Value = Vec<(usize, Op)>> {
    prop::collection::vec((any::<usize>(), arb_op(v)), 1..6)
}

fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// JSON pointers of every node, in pre-order ("" is the root).
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    match v {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                pointers(item, format!("{at}/{i}"), out);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                pointers(item, format!("{at}/{}", escape(k)), out);
            }
        }
        _ => {}
    }
}

fn split_parent(ptr: &str) -> Option<(&str, String)> {
    let (parent, last) = ptr.rsplit_once('/')?;
    Some((parent, last.replace("~1", "/").replace("~0", "~")))
}

/// Apply one mutation to the node chosen by `pick` (modulo the node count).
pub fn mutate(doc: &mut Value, pick: usize, op: &Op) {
    let mut all = Vec::new();
    pointers(doc, String::new(), &mut all);
    let ptr = all[pick % all.len()].clone();
    match op {
        Op::Replace(v) => {
            if let Some(node) = doc.pointer_mut(&ptr) {
                *node = v.clone();
            }
        }
        Op::Remove | Op::RenameKey(_) => {
            let Some((parent, last)) = split_parent(&ptr) else {
                return;
            };
            match doc.pointer_mut(parent) {
                Some(Value::Object(map)) => {
                    if let Some(v) = map.remove(&last) {
                        if let Op::RenameKey(k) = op {
                            map.insert(k.clone(), v);
                        }
                    }
                }
                Some(Value::Array(items)) if matches!(op, Op::Remove) => {
                    if let Ok(i) = last.parse::<usize>() {
                        if i < items.len() {
                            items.remove(i);
                        }
                    }
                }
                _ => {}
            }
        }
        Op::DuplicateItems => {
            if let Some(Value::Array(items)) = doc.pointer_mut(&ptr) {
                let copy = items.clone();
                items.extend(copy);
            }
        }
        Op::Stringify => {
            if let Some(node) = doc.pointer_mut(&ptr) {
                if !node.is_string() {
                    *node = Value::String(node.to_string());
                }
            }
        }
        Op::ChangeCase => {
            if let Some(Value::String(s)) = doc.pointer_mut(&ptr) {
                *s = if s.chars().any(|c| c.is_lowercase()) {
                    s.to_uppercase()
                } else {
                    s.to_lowercase()
                };
            }
        }
    }
}
