//! What the noise-control stages (`dedupe`, `cooldown`, `flatline`, `top_n`) share: saving
//! state with a shape fingerprint, keys from field paths, durations in event time.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};

use std::collections::HashMap;

use crate::event::{FieldPath, Group, Timestamp};

/// Wraps `state` with the `shape` it was made under, for [`crate::node::Stage::snapshot`].
pub fn save<T: Serialize>(shape: &Value, state: &T) -> Option<Value> {
    match serde_json::to_value(state) {
        Ok(state) => Some(json!({"shape": shape, "state": state})),
        Err(e) => {
            tracing::warn!(error = %e, "cannot serialise the stage's state");
            None
        }
    }
}

/// The state saved by [`save`], if it was made under the same `shape`. A different shape
/// (the config changed what the state means) or an unreadable state is logged and gives
/// `None`: the stage starts empty.
pub fn load<T: DeserializeOwned>(node: &str, saved: Value, shape: &Value) -> Option<T> {
    if saved.get("shape") != Some(shape) {
        tracing::info!(node, saved = %saved.get("shape").cloned().unwrap_or_default(), now = %shape, "state reset: the stage's configuration changed what its state means");
        return None;
    }
    match serde_json::from_value(saved.get("state").cloned().unwrap_or(Value::Null)) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(node, error = %e, "state reset: the saved state cannot be read");
            None
        }
    }
}

/// Forgets the keys whose span (from the time they hold) has ended at `watermark`.
pub fn forget_ended(
    map: &mut HashMap<String, Timestamp>,
    watermark: Option<Timestamp>,
    span: chrono::Duration,
) {
    let Some(wm) = watermark else {
        return;
    };
    map.retain(|_, t| t.checked_add_signed(span).is_none_or(|end| end > wm));
}

/// Makes room for one more key in `map` (which holds at most `max_keys`): forgets the
/// oldest by `age`, counting each in `evicted`. Returns how many it forgot, for the
/// stage to report ([`crate::node::internal_event::KeysEvicted`]).
pub fn forget_oldest<V>(
    map: &mut HashMap<String, V>,
    max_keys: usize,
    age: impl Fn(&V) -> Timestamp,
    evicted: &mut u64,
) -> u64 {
    let mut forgot = 0;
    while map.len() >= max_keys {
        let Some(oldest) = map
            .iter()
            .min_by_key(|(_, v)| age(v))
            .map(|(k, _)| k.clone())
        else {
            break;
        };
        map.remove(&oldest);
        *evicted += 1;
        forgot += 1;
    }
    forgot
}

/// The key of `data` at `paths`: [`Group::key`], so a missing field (`<missing>`) and an
/// empty one (`""`) are different keys.
pub fn key_of(data: &Value, paths: &[FieldPath]) -> String {
    Group::of(data, paths).key()
}

/// A [`Group`] as saved: a missing field has no `value`, a null one `"value": null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedField {
    /// The path.
    pub path: String,
    /// The value; absent when the field was missing.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub value: Option<Value>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// Saves a group.
pub fn save_group(g: &Group) -> Vec<SavedField> {
    g.fields
        .iter()
        .map(|(path, value)| SavedField {
            path: path.clone(),
            value: value.clone(),
        })
        .collect()
}

/// Reads a saved group back.
pub fn load_group(fields: Vec<SavedField>) -> Group {
    Group {
        fields: fields.into_iter().map(|f| (f.path, f.value)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_keep_missing_apart_from_null() {
        let g = Group {
            fields: vec![
                ("a".into(), None),
                ("b".into(), Some(Value::Null)),
                ("c".into(), Some(json!(""))),
            ],
        };
        let text = serde_json::to_value(save_group(&g)).unwrap();
        let back: Vec<SavedField> = serde_json::from_value(text).unwrap();
        assert_eq!(load_group(back), g);
    }

    #[test]
    fn a_different_shape_resets() {
        let saved = save(&json!(["a"]), &vec![1, 2]).unwrap();
        assert_eq!(
            load::<Vec<i32>>("p.s", saved.clone(), &json!(["a"])),
            Some(vec![1, 2])
        );
        assert_eq!(load::<Vec<i32>>("p.s", saved, &json!(["b"])), None);
    }
}
