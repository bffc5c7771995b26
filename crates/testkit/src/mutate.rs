//! JSON rewrites used by the response-shape faults.

use serde_json::Value;

/// Which keys of a provider's JSON hold enum values, and which are optional / nullable.
#[derive(Debug)]
pub(crate) struct Vocab {
    /// Keys whose **string** values are enum values.
    pub(crate) enum_keys: &'static [&'static str],
    /// Keys that are optional or nullable in the provider's schema.
    pub(crate) optional_keys: &'static [&'static str],
}

/// Replace every enum value with a never-seen one, keeping the provider's letter case.
pub(crate) fn unknown_enums(v: &mut Value, vocab: &Vocab) {
    match v {
        Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                if vocab.enum_keys.contains(&k.as_str()) {
                    if let Value::String(s) = val {
                        let upper = s.chars().any(|c| c.is_ascii_uppercase())
                            && !s.chars().any(|c| c.is_ascii_lowercase());
                        *s = if upper {
                            "QUANTUM_ENTANGLED".to_string()
                        } else {
                            "quantum_entangled".to_string()
                        };
                        continue;
                    }
                }
                unknown_enums(val, vocab);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| unknown_enums(i, vocab)),
        _ => {}
    }
}

/// Remove every optional / nullable key, at any depth.
pub(crate) fn missing_optionals(v: &mut Value, vocab: &Vocab) {
    match v {
        Value::Object(map) => {
            map.retain(|k, _| !vocab.optional_keys.contains(&k.as_str()));
            map.values_mut()
                .for_each(|val| missing_optionals(val, vocab));
        }
        Value::Array(items) => items.iter_mut().for_each(|i| missing_optionals(i, vocab)),
        _ => {}
    }
}

/// Empty every list, at any depth.
pub(crate) fn empty_arrays(v: &mut Value) {
    match v {
        Value::Object(map) => map.values_mut().for_each(empty_arrays),
        Value::Array(items) => items.clear(),
        _ => {}
    }
}

/// Duplicate the items of every list of objects: `[a, b]` becomes `[a, b, a, b]`.
pub(crate) fn duplicate_items(v: &mut Value) {
    match v {
        Value::Object(map) => map.values_mut().for_each(duplicate_items),
        Value::Array(items) => {
            items.iter_mut().for_each(duplicate_items);
            if items.iter().any(Value::is_object) {
                let copy = items.clone();
                items.extend(copy);
            }
        }
        _ => {}
    }
}

/// snake_case → camelCase for every object key, at any depth.
pub(crate) fn camel_case_keys(v: Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, val)| (snake_to_camel(&k), camel_case_keys(val)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(camel_case_keys).collect()),
        other => other,
    }
}

pub(crate) fn snake_to_camel(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut upper = false;
    for c in s.chars() {
        if c == '_' && !out.is_empty() {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Lower-case the string values of the given keys, at any depth.
pub(crate) fn lower_case_values(v: &mut Value, keys: &[&str]) {
    match v {
        Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                if keys.contains(&k.as_str()) {
                    if let Value::String(s) = val {
                        *s = s.to_lowercase();
                        continue;
                    }
                }
                lower_case_values(val, keys);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| lower_case_values(i, keys)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const V: Vocab = Vocab {
        enum_keys: &["status"],
        optional_keys: &["id"],
    };

    #[test]
    fn rewrites() {
        let mut v = json!({"items":[{"status":"ACTIVE","id":1},{"status":"live","id":null}]});
        unknown_enums(&mut v, &V);
        assert_eq!(v["items"][0]["status"], "QUANTUM_ENTANGLED");
        assert_eq!(v["items"][1]["status"], "quantum_entangled");
        missing_optionals(&mut v, &V);
        assert!(v["items"][0].get("id").is_none());
        duplicate_items(&mut v);
        assert_eq!(v["items"].as_array().map(Vec::len), Some(4));
        empty_arrays(&mut v);
        assert_eq!(v["items"], json!([]));
        assert_eq!(
            snake_to_camel("total_products_synced"),
            "totalProductsSynced"
        );
        assert_eq!(snake_to_camel("isConnected"), "isConnected");
        let c = camel_case_keys(json!({"merchant_id":1,"sync_status":{"date_last_synced":null}}));
        assert_eq!(
            c,
            json!({"merchantId":1,"syncStatus":{"dateLastSynced":null}})
        );
    }
}
