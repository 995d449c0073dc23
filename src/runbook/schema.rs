//! JSON Schema (draft-07) of the runbook format, generated from the [`raw`](super::raw) structs.
//! Committed as `runbooks/runbook.schema.json`; a test fails when that file is stale.

use super::raw::RawRunbook;
use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde_json::Value;

/// The schema as pretty-printed JSON with a trailing newline.
pub fn schema_json() -> String {
    toml_schema_json::<RawRunbook>()
}

/// The draft-07 schema of a TOML format whose raw structs are `T`, as pretty-printed JSON
/// with a trailing newline (the simulator's inventory format uses it too).
pub fn toml_schema_json<T: JsonSchema>() -> String {
    let schema = SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<T>();
    let mut value = schema.to_value();
    strip_null(&mut value);
    let mut text = serde_json::to_string_pretty(&value).unwrap_or_else(|_| "{}".to_owned());
    text.push('\n');
    text
}

/// TOML has no null: drop the `null` alternatives and defaults schemars adds for optional
/// fields.
fn strip_null(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.get("default").is_some_and(Value::is_null) {
                map.remove("default");
            }
            if let Some(Value::Array(types)) = map.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types.remove(0);
                    map.insert("type".to_owned(), only);
                }
            }
            for key in ["anyOf", "oneOf"] {
                if let Some(Value::Array(alts)) = map.get_mut(key) {
                    alts.retain(|a| a.get("type").is_none_or(|t| t != "null"));
                    if alts.len() == 1 {
                        let only = alts.remove(0);
                        map.remove(key);
                        if let Value::Object(inner) = only {
                            for (k, v) in inner {
                                map.entry(k).or_insert(v);
                            }
                        }
                    }
                }
            }
            map.values_mut().for_each(strip_null);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_null),
        _ => {}
    }
}
