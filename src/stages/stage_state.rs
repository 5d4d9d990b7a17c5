//! What the noise-control stages (`dedupe`, `cooldown`, `flatline`, `top_n`) share: saving
//! state with a shape fingerprint, keys from field paths, durations in event time.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use std::collections::HashMap;

use crate::event::{FieldPath, Group, Timestamp};
use crate::node::Snapshot;

/// What [`save`] writes: the state with the shape it was made under.
#[derive(Serialize)]
struct SavedRef<'a, T> {
    shape: &'a Value,
    state: &'a T,
}

/// What [`save`] wrote.
#[derive(Deserialize)]
struct Saved<T> {
    shape: Value,
    state: T,
}

/// The shape of a saved state, the rest skipped.
#[derive(Deserialize)]
struct ShapeOnly {
    #[serde(default)]
    shape: Value,
}

/// `state` with the `shape` it was made under, as JSON text of at most `max_bytes`, for
/// [`crate::node::Stage::snapshot`].
pub fn save<T: Serialize>(shape: &Value, state: &T, max_bytes: u64) -> Option<Snapshot> {
    Snapshot::write(&SavedRef { shape, state }, max_bytes)
}

/// The state saved by [`save`] (its text), if it was made under the same `shape`. A
/// different shape (the config changed what the state means) or an unreadable state is
/// logged and gives `None`: the stage starts empty.
pub fn load<T: DeserializeOwned>(node: &str, saved: &str, shape: &Value) -> Option<T> {
    let changed = |before: &Value| {
        tracing::info!(node, saved = %before, now = %shape, "state reset: the stage's configuration changed what its state means");
    };
    match serde_json::from_str::<Saved<T>>(saved) {
        Ok(s) if s.shape == *shape => Some(s.state),
        Ok(s) => {
            changed(&s.shape);
            None
        }
        // Made under another shape, the state may not read as this one's.
        Err(e) => match serde_json::from_str::<ShapeOnly>(saved) {
            Ok(s) if s.shape != *shape => {
                changed(&s.shape);
                None
            }
            _ => {
                tracing::warn!(node, error = %e, "state reset: the saved state cannot be read");
                None
            }
        },
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
pub fn key_of(data: &(impl crate::event::Fields + ?Sized), paths: &[FieldPath]) -> String {
    let mut key = String::new();
    super::window::write_key(&mut key, paths, data);
    key
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
    use serde_json::json;

    #[test]
    fn groups_keep_missing_apart_from_null() {
        let g = Group {
            fields: vec![
                ("a".into(), None),
                ("b".into(), Some(Value::Null)),
                ("c".into(), Some(json!(""))),
            ],
        };
        let text = serde_json::to_string(&save_group(&g)).unwrap();
        let back: Vec<SavedField> = serde_json::from_str(&text).unwrap();
        assert_eq!(load_group(back), g);
    }

    #[test]
    fn a_different_shape_resets() {
        let shape = json!(["a"]);
        let saved = save(&shape, &vec![1, 2], u64::MAX)
            .and_then(Snapshot::into_text)
            .unwrap()
            .into_string()
            .unwrap();
        assert_eq!(saved, r#"{"shape":["a"],"state":[1,2]}"#);
        assert_eq!(load::<Vec<i32>>("p.s", &saved, &shape), Some(vec![1, 2]));
        assert_eq!(load::<Vec<i32>>("p.s", &saved, &json!(["b"])), None);
        // Another shape whose state does not even read as this stage's.
        assert_eq!(load::<String>("p.s", &saved, &json!(["b"])), None);
        assert_eq!(load::<Vec<i32>>("p.s", "{\"shape\": [\"a\"]", &shape), None);
    }
}
