//! A CMS record as JSON, in the shape of the reference receiver's API.

use serde_json::{Map, Value};

use super::{CmsNode, CmsRecord};

/// A record as the reference receiver (`ciscocms/cdr-receiver-db`) returns it from its JSON
/// API: `xmltodict`'s conversion of the `<record>` element. Attributes become `@type`,
/// `@time`, `@recordIndex`, `@correlatorIndex` (and any other, `@name`), the main object a key
/// of its own (`"call": {"@id": .., "name": ..}`), every value a string, an empty element
/// `null`, an element with attributes or children an object (its text, if any, under `#text`),
/// and a repeated element a list.
///
/// Keys come out sorted (as in that API's output); a record of an unknown type converts the
/// same way.
pub fn cms_record_api_json(record: &CmsRecord<'_>) -> Value {
    let mut map = Map::new();
    map.insert(
        "@type".into(),
        Value::String(record.record_type.to_string()),
    );
    if let Some(t) = &record.time {
        map.insert("@time".into(), Value::String(t.to_string()));
    }
    for (name, v) in [
        ("@recordIndex", record.record_index),
        ("@correlatorIndex", record.correlator_index),
        ("@numPreceedingRecordsMissing", record.preceding_missing),
    ] {
        if let Some(v) = v {
            map.insert(name.into(), Value::String(v.to_string()));
        }
    }
    for a in &record.attrs {
        map.insert(format!("@{}", a.name), Value::String(a.value.to_string()));
    }
    let mut at = 0;
    while let Some(node) = record.nodes.get(at) {
        let (value, next) = element_json(&record.nodes, at);
        insert_child(&mut map, &node.name, value);
        at = next.max(at + 1);
    }
    Value::Object(map)
}

/// The JSON of the element at `at` and the index of the node after its subtree.
fn element_json(nodes: &[CmsNode<'_>], at: usize) -> (Value, usize) {
    let Some(node) = nodes.get(at) else {
        return (Value::Null, at + 1);
    };
    let mut next = at + 1;
    let mut map = Map::new();
    for a in &node.attrs {
        map.insert(format!("@{}", a.name), Value::String(a.value.to_string()));
    }
    while let Some(child) = nodes.get(next) {
        if child.depth <= node.depth {
            break;
        }
        let (value, after) = element_json(nodes, next);
        insert_child(&mut map, &child.name, value);
        next = after.max(next + 1);
    }
    if map.is_empty() {
        let value = if node.text.is_empty() {
            Value::Null
        } else {
            Value::String(node.text.to_string())
        };
        return (value, next);
    }
    if !node.text.is_empty() {
        map.insert("#text".into(), Value::String(node.text.to_string()));
    }
    (Value::Object(map), next)
}

/// Adds a child under its name; a repeated name turns into a list, as `xmltodict` does.
fn insert_child(map: &mut Map<String, Value>, name: &str, value: Value) {
    match map.get_mut(name) {
        None => {
            map.insert(name.to_owned(), value);
        }
        Some(Value::Array(list)) => list.push(value),
        Some(existing) => {
            let first = std::mem::take(existing);
            *existing = Value::Array(vec![first, value]);
        }
    }
}
