//! The running `script` stage and the functions scripts call.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rhai::{AST, Dynamic, EvalAltResult};
use serde_json::{Map, Value};

use super::config::ScriptConfig;
use super::sandbox::{self, ErrorLog, RunError, Sandbox};
use crate::event::{
    Alert, AlertStatus, AlertWindow, Event, Sample, Severity, Timestamp, group_key, insert_path,
    time_from_value,
};
use crate::node::internal_event::ScriptRole;
use crate::node::{BuildContext, NodeError, Snapshot, Stage};

type FnResult<T> = Result<T, Box<EvalAltResult>>;

/// An episode a script opened with `fire()`: its alert in its latest form.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct ScriptEpisode {
    alert: Alert,
    /// Fired again since it was last reported.
    dirty: bool,
    /// Engine time of its last report.
    reported_at: Timestamp,
    /// Engine time of the last `fire()` of it.
    arrived_at: Timestamp,
}

/// How many raw events an episode of a script carries.
const EPISODE_SAMPLES: usize = 5;

/// What the script's functions share with the stage.
#[derive(Debug)]
struct Shared {
    /// The event being processed (only during a run).
    current: Option<Arc<Event>>,
    /// The engine time of the tick being run (only during `on_tick`).
    tick_now: Option<Timestamp>,
    /// Alerts raised during the run.
    alerts: Vec<Alert>,
    /// Episodes opened with `fire()`, by group key.
    episodes: BTreeMap<String, ScriptEpisode>,
    /// Per-key state (`None` when `state: false`).
    state: Option<BTreeMap<String, Dynamic>>,
    max_state_keys: usize,
    severity: Severity,
    title: String,
    pipeline: String,
    stage: String,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// The running `script` stage.
#[derive(Debug)]
pub struct ScriptStage {
    sandbox: Sandbox,
    ast: Arc<AST>,
    shared: Arc<Mutex<Shared>>,
    id: Arc<str>,
    path: String,
    /// What makes saved state incompatible: the script file.
    shape: Value,
    errors: ErrorLog,
    resolve_after: chrono::Duration,
    history_interval: chrono::Duration,
    /// The script defines `on_tick(state, now)`.
    on_tick: bool,
}

/// The function a script defines to be called at every tick.
const ON_TICK: &str = "on_tick";

impl ScriptStage {
    /// Compiles `text` (read from `path`) for the stage `cx.id`.
    pub fn new(
        cfg: &ScriptConfig,
        cx: &BuildContext,
        path: &Path,
        text: &str,
    ) -> Result<ScriptStage, NodeError> {
        let mut sandbox = Sandbox::new(cfg.limits(), &cx.id);
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| cfg.file.clone());
        let shared = Arc::new(Mutex::new(Shared {
            current: None,
            tick_now: None,
            alerts: Vec::new(),
            episodes: BTreeMap::new(),
            state: cfg.state.then(BTreeMap::new),
            max_state_keys: cfg.max_state_keys,
            severity: cfg.alert.severity,
            title: cfg
                .alert
                .title
                .clone()
                .unwrap_or_else(|| format!("alert from {name}")),
            pipeline: cx.pipeline.to_string(),
            stage: cx.node.to_string(),
        }));
        register(sandbox.engine_mut(), &shared, &cx.id);
        let ast = sandbox.compile_script(text).map_err(|e| {
            NodeError::from(format!(
                "{}:{}:{}: {}",
                path.display(),
                e.line,
                e.col,
                e.message
            ))
        })?;
        let on_tick = match ast
            .iter_functions()
            .find(|f| f.name == ON_TICK)
            .map(|f| f.params.len())
        {
            None => false,
            Some(2) => true,
            Some(n) => {
                return Err(NodeError::from(format!(
                    "{}: `fn on_tick` takes two parameters, `(state, now)`, not {n}",
                    path.display()
                )));
            }
        };
        Ok(ScriptStage {
            on_tick,
            sandbox,
            ast: Arc::new(ast),
            shared,
            id: cx.id.clone(),
            path: path.display().to_string(),
            shape: serde_json::json!({"file": cfg.file}),
            errors: {
                let mut log = ErrorLog::default();
                log.counting_into(cx.counters.clone(), ScriptRole::Script);
                log
            },
            resolve_after: cfg.resolve_after.span(),
            history_interval: cx.history_interval,
        })
    }

    /// How many runs failed.
    pub fn errors(&self) -> u64 {
        self.errors.count
    }

    /// Loads state saved by [`Stage::snapshot`] (its JSON text), if its shape matches.
    pub fn restore(&mut self, saved: &str) {
        let saved = match serde_json::from_str::<Saved>(saved) {
            Ok(s) if s.shape == self.shape => s,
            Ok(_) => {
                tracing::info!(stage = %self.id, "the script file changed: state reset");
                return;
            }
            Err(e) => {
                tracing::warn!(stage = %self.id, error = %e, "saved state unreadable: state reset");
                return;
            }
        };
        let mut shared = lock(&self.shared);
        let max = shared.max_state_keys;
        shared.episodes = saved.episodes.into_iter().flatten().take(max).collect();
        if let (Some(state), Some(saved)) = (shared.state.as_mut(), saved.state) {
            state.extend(saved.0.into_iter().take(max));
        }
    }
}

/// What [`ScriptStage::snapshot`] saves (borrowed form): `state` only with `state: true`.
#[derive(serde::Serialize)]
struct SavedRef<'a> {
    shape: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<StateRef<'a>>,
    episodes: &'a BTreeMap<String, ScriptEpisode>,
}

/// What [`ScriptStage::snapshot`] saved.
#[derive(serde::Deserialize)]
struct Saved {
    #[serde(default)]
    shape: Value,
    #[serde(default)]
    state: Option<SavedState>,
    #[serde(default)]
    episodes: Option<BTreeMap<String, ScriptEpisode>>,
}

/// A script's state written as a JSON object, each value converted as it is written; a
/// value that has no JSON form is left out (logged).
struct StateRef<'a> {
    state: &'a BTreeMap<String, Dynamic>,
    id: &'a str,
}

impl serde::Serialize for StateRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        for (k, v) in self.state {
            match sandbox::to_json(v) {
                Ok(j) => map.serialize_entry(k, &j)?,
                Err(e) => {
                    tracing::warn!(stage = %self.id, key = %k, error = %e, "a state value cannot be saved")
                }
            }
        }
        map.end()
    }
}

/// A saved state read back, each value made a Rhai value as it is read.
struct SavedState(Vec<(String, Dynamic)>);

impl<'de> serde::Deserialize<'de> for SavedState {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = SavedState;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of state keys to values")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<SavedState, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    entries.push((k, sandbox::to_dynamic(&v)));
                }
                Ok(SavedState(entries))
            }
        }
        d.deserialize_map(Entries)
    }
}

fn runtime_error(msg: impl Into<String>) -> Box<EvalAltResult> {
    msg.into().into()
}

fn state_key(key: &Dynamic) -> FnResult<String> {
    if key.is_string() || key.is_int() || key.is_float() || key.is_bool() || key.is_char() {
        Ok(key.to_string())
    } else {
        Err(runtime_error(format!(
            "a state key must be a string or a number, not `{}`",
            key.type_name()
        )))
    }
}

const STATE_OFF: &str = "this stage keeps no state (`state: false`)";

fn register(engine: &mut rhai::Engine, shared: &Arc<Mutex<Shared>>, id: &Arc<str>) {
    let s = shared.clone();
    engine.register_fn("state_get", move |key: Dynamic| -> FnResult<Dynamic> {
        let key = state_key(&key)?;
        let shared = lock(&s);
        let state = shared
            .state
            .as_ref()
            .ok_or_else(|| runtime_error(STATE_OFF))?;
        Ok(state.get(&key).cloned().unwrap_or(Dynamic::UNIT))
    });
    let s = shared.clone();
    engine.register_fn(
        "state_set",
        move |key: Dynamic, value: Dynamic| -> FnResult<()> {
            let key = state_key(&key)?;
            let mut shared = lock(&s);
            let max = shared.max_state_keys;
            let state = shared.state.as_mut().ok_or_else(|| runtime_error(STATE_OFF))?;
            if state.len() >= max && !state.contains_key(&key) {
                return Err(runtime_error(format!(
                    "the state holds {max} keys already (`max_state_keys`): remove keys you are done with (`state_remove`)"
                )));
            }
            state.insert(key, value.flatten());
            Ok(())
        },
    );
    let s = shared.clone();
    engine.register_fn("state_remove", move |key: Dynamic| -> FnResult<()> {
        let key = state_key(&key)?;
        let mut shared = lock(&s);
        let state = shared
            .state
            .as_mut()
            .ok_or_else(|| runtime_error(STATE_OFF))?;
        state.remove(&key);
        Ok(())
    });
    let s = shared.clone();
    engine.register_fn("event_time", move || -> FnResult<f64> {
        let shared = lock(&s);
        let (t, _, _) = moment(&shared).map_err(runtime_error)?;
        Ok(t.timestamp_millis() as f64 / 1000.0)
    });
    let origin = id.clone();
    engine.register_fn("log", move |msg: &str| {
        tracing::info!(script = %origin, "{msg}");
    });
    let s = shared.clone();
    engine.register_fn("alert", move |spec: rhai::Map| -> FnResult<()> {
        let mut shared = lock(&s);
        let alert = make_alert(&shared, spec).map_err(runtime_error)?;
        shared.alerts.push(alert);
        Ok(())
    });
    let s = shared.clone();
    engine.register_fn("fire", move |spec: rhai::Map| -> FnResult<()> {
        let mut shared = lock(&s);
        fire(&mut shared, spec).map_err(runtime_error)
    });
    let s = shared.clone();
    engine.register_fn("resolve", move |group: rhai::Map| -> FnResult<()> {
        let mut shared = lock(&s);
        resolve(&mut shared, group).map_err(runtime_error)
    });
}

/// When a function is called: during a run, the event's time, its arrival and the event;
/// during `on_tick`, the tick's time (both) and no event.
fn moment(shared: &Shared) -> Result<(Timestamp, Timestamp, Option<&Arc<Event>>), String> {
    match (&shared.current, shared.tick_now) {
        (Some(e), _) => Ok((e.meta.time, e.meta.ingest, Some(e))),
        (None, Some(now)) => Ok((now, now, None)),
        (None, None) => Err("no event".into()),
    }
}

/// `fire(#{...})`: the first call for a group opens an episode (a `firing` alert, handed
/// on); later ones update it in place (reported at most once per `history_interval`).
fn fire(shared: &mut Shared, spec: rhai::Map) -> Result<(), String> {
    let (t, now, _) = moment(shared)?;
    let mut alert = make_alert(shared, spec)?;
    match shared.episodes.get_mut(&alert.group_key) {
        Some(ep) => {
            let held = &ep.alert;
            alert.id = held.id.clone();
            alert.first_seen = held.first_seen;
            alert.last_seen = held.last_seen.max(t);
            alert.updates = held.updates + 1;
            alert.episode = true;
            let mut samples = held.samples.clone();
            if samples.len() < EPISODE_SAMPLES {
                samples.append(&mut alert.samples);
            }
            alert.samples = samples;
            ep.alert = alert;
            ep.dirty = true;
            ep.arrived_at = ep.arrived_at.max(now);
        }
        None => {
            if shared.episodes.len() >= shared.max_state_keys {
                return Err(format!(
                    "{} episodes are open already (`max_state_keys`): resolve the ones that are over (`resolve`)",
                    shared.max_state_keys
                ));
            }
            alert.episode = true;
            alert.first_seen = t;
            alert.last_seen = t;
            shared.episodes.insert(
                alert.group_key.clone(),
                ScriptEpisode {
                    alert: alert.clone(),
                    dirty: false,
                    reported_at: now,
                    arrived_at: now,
                },
            );
            shared.alerts.push(alert);
        }
    }
    Ok(())
}

/// `resolve(#{ "src.ip": ip })`: closes the group's episode (a `resolved` alert); nothing
/// when none is open.
fn resolve(shared: &mut Shared, group: rhai::Map) -> Result<(), String> {
    let (t, _, _) = moment(shared)?;
    let group = match sandbox::to_json(&Dynamic::from_map(group))? {
        Value::Object(m) => m.into_iter().map(|(k, v)| (k, Some(v))).collect::<Vec<_>>(),
        _ => return Err("resolve() takes the group as a map".into()),
    };
    if let Some(ep) = shared.episodes.remove(&group_key(&group)) {
        let mut alert = ep.alert;
        alert.status = AlertStatus::Resolved;
        alert.window.end = alert.window.end.max(t);
        shared.alerts.push(alert);
    }
    Ok(())
}

const ALERT_KEYS: &str =
    "title, severity, group, value, threshold, summary, unit, fields, window_start";

fn make_alert(shared: &Shared, spec: rhai::Map) -> Result<Alert, String> {
    let (end, _, event) = moment(shared)?;
    let samples: Vec<Sample> = event.map(|e| Sample::of(e)).into_iter().collect();
    let spec = sandbox::to_json(&Dynamic::from_map(spec))?;
    let Value::Object(spec) = spec else {
        return Err("alert() takes a map".into());
    };
    let mut alert_fields = Map::new();
    let mut title = shared.title.clone();
    let mut summary = String::new();
    let mut severity = shared.severity;
    let mut group = Vec::new();
    let mut value = 0.0;
    let mut threshold = 0.0;
    let mut unit = None;
    let mut start = end;
    for (k, v) in spec {
        match k.as_str() {
            "title" => title = text(&k, v)?,
            "summary" => summary = text(&k, v)?,
            "unit" => unit = Some(text(&k, v)?),
            "severity" => {
                severity = serde_json::from_value(v.clone()).map_err(|_| {
                    format!("alert severity {v} is not one of info, low, medium, high, critical")
                })?
            }
            "value" => value = number(&k, &v)?,
            "threshold" => threshold = number(&k, &v)?,
            "group" => match v {
                Value::Object(m) => group = m.into_iter().map(|(k, v)| (k, Some(v))).collect(),
                Value::Null => {}
                other => return Err(format!("alert `group` must be a map, not {other}")),
            },
            "fields" => match v {
                Value::Object(m) => alert_fields = m,
                Value::Null => {}
                other => return Err(format!("alert `fields` must be a map, not {other}")),
            },
            "window_start" => {
                start = time_from_value(&v).ok_or_else(|| {
                    format!("alert `window_start` {v} is not epoch seconds or an RFC 3339 time")
                })?;
                if start > end {
                    return Err(
                        "alert `window_start` is after the event's time (the tick's, in `on_tick`)"
                            .into(),
                    );
                }
            }
            other => return Err(format!("alert has no key `{other}` (keys: {ALERT_KEYS})")),
        }
    }
    let key = group_key(&group);
    let mut nested = Value::Object(Map::new());
    for (path, v) in &group {
        insert_path(&mut nested, path, v.clone().unwrap_or(Value::Null));
    }
    let window = AlertWindow { start, end };
    Ok(Alert {
        id: Alert::make_id(&shared.pipeline, &shared.stage, &key, &window),
        status: AlertStatus::Firing,
        pipeline: shared.pipeline.clone(),
        stage: shared.stage.clone(),
        severity,
        title,
        summary,
        group: nested,
        group_key: key,
        value,
        threshold,
        unit,
        estimate: None,
        window,
        first_seen: window.end,
        last_seen: window.end,
        updates: 0,
        episode: false,
        samples,
        top: None,
        fields: alert_fields,
    })
}

fn text(key: &str, v: Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(format!("alert `{key}` must be a string, not {other}")),
    }
}

fn number(key: &str, v: &Value) -> Result<f64, String> {
    v.as_f64()
        .ok_or_else(|| format!("alert `{key}` must be a number, not {v}"))
}

/// `new` with the keys `original` had in their original order, new keys after.
fn reorder(original: &Value, new: Value) -> Value {
    match (original, new) {
        (Value::Object(old), Value::Object(mut new)) => {
            let mut out = Map::with_capacity(new.len());
            for (k, ov) in old {
                if let Some(nv) = new.shift_remove(k) {
                    out.insert(k.clone(), reorder(ov, nv));
                }
            }
            out.extend(new);
            Value::Object(out)
        }
        (Value::Array(old), Value::Array(new)) => Value::Array(
            new.into_iter()
                .enumerate()
                .map(|(i, nv)| match old.get(i) {
                    Some(ov) => reorder(ov, nv),
                    None => nv,
                })
                .collect(),
        ),
        (_, new) => new,
    }
}

impl ScriptStage {
    fn fail(&mut self, e: &RunError) {
        self.errors.record(&self.id, &self.path, e);
    }

    /// Calls the script's `on_tick` with a copy of its state (a map of key → value; empty
    /// with `state: false`) and `now` in epoch seconds; hands on what it raised.
    fn run_on_tick(&mut self, now: Timestamp, out: &mut Vec<Arc<Event>>) {
        let state = {
            let mut shared = lock(&self.shared);
            shared.tick_now = Some(now);
            let mut map = rhai::Map::new();
            for (k, v) in shared.state.iter().flatten() {
                map.insert(k.as_str().into(), v.clone());
            }
            Dynamic::from_map(map)
        };
        let seconds = now.timestamp_millis() as f64 / 1000.0;
        let result = self.sandbox.call(&self.ast, ON_TICK, (state, seconds));
        let alerts = {
            let mut shared = lock(&self.shared);
            shared.tick_now = None;
            std::mem::take(&mut shared.alerts)
        };
        if let Err(e) = result {
            self.fail(&e);
        }
        for alert in alerts {
            out.push(self.alert_event(alert, now));
        }
    }

    fn alert_event(&self, alert: Alert, time: Timestamp) -> Arc<Event> {
        Arc::new(Event::from_alert(alert, self.id.clone(), time))
    }
}

impl Stage for ScriptStage {
    fn blocking(&self) -> bool {
        true
    }

    /// Runs the script's `on_tick(state, now)` if it has one; then resolves the episodes
    /// not fired for `resolve_after` and reports the others that were fired again, at most
    /// once per `history_interval`.
    fn tick(&mut self, now: Timestamp, out: &mut Vec<Arc<Event>>) {
        if self.on_tick {
            self.run_on_tick(now, out);
        }
        let mut reports = Vec::new();
        {
            let mut shared = lock(&self.shared);
            let over: Vec<String> = shared
                .episodes
                .iter()
                .filter(|(_, ep)| now - ep.arrived_at >= self.resolve_after)
                .map(|(k, _)| k.clone())
                .collect();
            for key in over {
                if let Some(ep) = shared.episodes.remove(&key) {
                    let mut alert = ep.alert;
                    alert.status = AlertStatus::Resolved;
                    reports.push(alert);
                }
            }
            for ep in shared.episodes.values_mut() {
                if ep.dirty && now - ep.reported_at >= self.history_interval {
                    ep.dirty = false;
                    ep.reported_at = now;
                    reports.push(ep.alert.clone());
                }
            }
        }
        for alert in reports {
            let time = alert.last_seen;
            out.push(self.alert_event(alert, time));
        }
    }

    fn process(&mut self, event: Arc<Event>, out: &mut Vec<Arc<Event>>) {
        let input = sandbox::to_dynamic(event.data());
        lock(&self.shared).current = Some(event.clone());
        let (result, changed) = self.sandbox.eval(&self.ast, input);
        let alerts = {
            let mut shared = lock(&self.shared);
            shared.current = None;
            std::mem::take(&mut shared.alerts)
        };
        let time = event.meta.time;
        match result {
            Err(e) => {
                self.fail(&e);
                out.push(event);
            }
            Ok(v) if v.as_bool() == Ok(false) => {}
            Ok(_) => match sandbox::to_json(&changed) {
                Ok(new) if new == *event.data() => out.push(event),
                Ok(new) if new.is_object() || !event.data().is_object() => {
                    let new = reorder(event.data(), new);
                    let mut ev = Arc::unwrap_or_clone(event);
                    let was_alert = ev.alert().is_some();
                    *ev.data_mut() = new;
                    if was_alert
                        && let Ok(alert) = serde_json::from_value::<Alert>(ev.data().clone())
                    {
                        ev.set_alert(alert);
                    }
                    out.push(Arc::new(ev));
                }
                Ok(_) => {
                    self.fail(&RunError {
                        pos: None,
                        limit: false,
                        message: "the script replaced `event` with something that is not a map; the event goes on unchanged".into(),
                    });
                    out.push(event);
                }
                Err(message) => {
                    self.fail(&RunError {
                        pos: None,
                        limit: false,
                        message,
                    });
                    out.push(event);
                }
            },
        }
        for alert in alerts {
            out.push(self.alert_event(alert, time));
        }
    }

    fn snapshot(&self, max_bytes: u64) -> Option<Snapshot> {
        let shared = lock(&self.shared);
        let state = match shared.state.as_ref() {
            Some(state) => Some(StateRef {
                state,
                id: &self.id,
            }),
            None if shared.episodes.is_empty() => return None,
            None => None,
        };
        let saved = SavedRef {
            shape: &self.shape,
            state,
            episodes: &shared.episodes,
        };
        Snapshot::write(&saved, max_bytes)
    }
}
