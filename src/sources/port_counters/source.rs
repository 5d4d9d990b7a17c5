//! The running `port_counters` source.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::config::{CounterMode, PortCountersConfig};
use super::counters::{
    Count, Direction, Key, Readings, delta, expected_objects, iptables_chain, iptables_rules,
    nft_script, read_iptables, read_nft,
};
use crate::event::{Event, Timestamp, ack_pair};
use crate::nft::{NftError, run};
use crate::node::internal_event::{InternalEvent as _, PortCountersReadFailed};
use crate::node::{BuildContext, NodeError, NodeResult, Source, SourceContext};

/// Reads the kernel's per-port counters every interval.
pub struct PortCountersSource {
    cfg: PortCountersConfig,
    id: Arc<str>,
    store: Arc<crate::store::Store>,
    keep: bool,
}

impl std::fmt::Debug for PortCountersSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortCountersSource")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// What is saved after each reading: where the next one counts from.
#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    /// The kernel's boot id: counters of another boot are not these.
    boot_id: String,
    /// The objects the table held (a changed `ports` makes another table).
    objects: Vec<String>,
    /// When the readings were taken.
    at: Timestamp,
    readings: Vec<(Key, Count)>,
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

impl PortCountersSource {
    pub(super) fn new(cfg: PortCountersConfig, cx: &BuildContext) -> Self {
        PortCountersSource {
            cfg,
            id: cx.id.clone(),
            store: cx.store.clone(),
            keep: cx.keep_state,
        }
    }

    /// The counters now, and the objects holding them (nftables).
    async fn read(&self) -> Result<(Vec<String>, Readings), NodeError> {
        let program = self.cfg.program();
        match self.cfg.mode {
            CounterMode::Nftables => {
                let out = run(
                    program,
                    &["-j", "list", "table", "inet", &self.cfg.table],
                    None,
                )
                .await?;
                let (objects, readings) = read_nft(&out).map_err(|e| NftError::Invalid {
                    program: program.to_string(),
                    what: format!("-j list table inet {}", self.cfg.table),
                    reason: e.to_string(),
                })?;
                Ok((objects.into_iter().collect(), readings))
            }
            CounterMode::Iptables => {
                let mut readings = Readings::new();
                for tool in self.iptables_tools() {
                    for dir in [Direction::In, Direction::Out] {
                        let chain = iptables_chain(&self.cfg, dir);
                        let out = run(&tool, &["-L", &chain, "-x", "-v", "-n"], None).await?;
                        read_iptables(&out, dir, &mut readings)?;
                    }
                }
                Ok((Vec::new(), readings))
            }
        }
    }

    /// `iptables`, and `ip6tables` beside it.
    fn iptables_tools(&self) -> Vec<String> {
        let v4 = self.cfg.program().to_string();
        let v6 = match v4.rfind("iptables") {
            Some(at) => format!("{}ip6tables{}", &v4[..at], &v4[at + "iptables".len()..]),
            None => return vec![v4],
        };
        vec![v4, v6]
    }

    /// Makes the kernel count as configured, unless it already does. `true` when it
    /// (re)made the table or chains: the counters start from zero.
    async fn set_up(&self) -> Result<bool, NodeError> {
        let program = self.cfg.program();
        match self.cfg.mode {
            CounterMode::Nftables => {
                let want: Vec<String> = expected_objects(&self.cfg).into_iter().collect();
                match self.read().await {
                    Ok((objects, _)) if objects == want => return Ok(false),
                    Ok(_) => {
                        tracing::info!(source = %self.id, table = %self.cfg.table, "the counting table differs from the configuration: making it again");
                    }
                    Err(e)
                        if e.downcast_ref::<NftError>()
                            .is_some_and(NftError::is_missing) => {}
                    Err(e) => return Err(e),
                }
                run(program, &["-f", "-"], Some(&nft_script(&self.cfg))).await?;
                Ok(true)
            }
            CounterMode::Iptables => {
                let mut made = false;
                for tool in self.iptables_tools() {
                    for (dir, hook) in [(Direction::In, "INPUT"), (Direction::Out, "OUTPUT")] {
                        made |= self.set_up_chain(&tool, dir, hook).await?;
                    }
                }
                Ok(made)
            }
        }
    }

    async fn set_up_chain(
        &self,
        tool: &str,
        dir: Direction,
        hook: &str,
    ) -> Result<bool, NodeError> {
        let chain = iptables_chain(&self.cfg, dir);
        let want: Vec<(String, u16)> = iptables_rules(&self.cfg, dir)
            .iter()
            .filter_map(|r| Some((r[1].clone(), r[3].parse().ok()?)))
            .collect();
        let same = match run(tool, &["-L", &chain, "-x", "-v", "-n"], None).await {
            Ok(text) => read_iptables(&text, dir, &mut Readings::new()).is_ok_and(|r| r == want),
            Err(_) => {
                run(tool, &["-N", &chain], None).await?;
                false
            }
        };
        if run(tool, &["-C", hook, "-j", &chain], None).await.is_err() {
            run(tool, &["-I", hook, "1", "-j", &chain], None).await?;
        }
        if same {
            return Ok(false);
        }
        run(tool, &["-F", &chain], None).await?;
        for rule in iptables_rules(&self.cfg, dir) {
            let mut args = vec!["-A", chain.as_str()];
            args.extend(rule.iter().map(String::as_str));
            run(tool, &args, None).await?;
        }
        Ok(true)
    }

    fn restored(&self, objects: &[String]) -> Option<Saved> {
        if !self.keep {
            return None;
        }
        let v = match self.store.checkpoint(&self.id) {
            Ok(v) => v?,
            Err(e) => {
                tracing::warn!(source = %self.id, error = %e, "cannot read the saved counters; counting from now");
                return None;
            }
        };
        serde_json::from_value::<Saved>(v)
            .ok()
            .filter(|s| s.boot_id == boot_id() && s.objects == objects)
    }

    async fn run_inner(self, cx: &mut SourceContext) -> NodeResult {
        let made = self.set_up().await?;
        let (objects, now_readings) = self.read().await?;
        // Where the first interval counts from: the table just made (zero), what was
        // saved when the table is the one it was saved of (what passed while vigil was
        // stopped is then handed on), or else the counters as they are now.
        let (mut last, mut last_at) = if made {
            (Readings::new(), cx.now())
        } else {
            match self.restored(&objects) {
                Some(s) => (s.readings.into_iter().collect(), s.at),
                None => (now_readings, cx.now()),
            }
        };
        loop {
            if !cx.sleep(self.cfg.interval.get()).await {
                return Ok(());
            }
            let (objects, readings) = match self.read().await {
                Ok(r) => r,
                Err(e) => {
                    PortCountersReadFailed {
                        source: &self.id,
                        error: &e.to_string(),
                    }
                    .emit(cx.counters());
                    continue;
                }
            };
            let now = cx.now();
            let mut events = self.events(&last, &readings, last_at, now);
            if !events.is_empty() {
                // The readings are saved once the interval's events are delivered: a
                // kill -9 before that hands the interval on again rather than lose it.
                let (guard, mut ack) = ack_pair();
                for e in &mut events {
                    if let Some(e) = Arc::get_mut(e) {
                        e.set_ack(&guard);
                    }
                }
                drop(guard);
                if cx.send(events).await.is_err() {
                    return Ok(());
                }
                match cx.wait(ack.done()).await {
                    None => return Ok(()),
                    // Not delivered: the next interval hands this one on with it.
                    Some(false) => continue,
                    Some(true) => {}
                }
            }
            let saved = Saved {
                boot_id: boot_id(),
                objects,
                at: now,
                readings: readings.iter().map(|(k, c)| (k.clone(), *c)).collect(),
            };
            if self.keep
                && let Ok(v) = serde_json::to_value(&saved)
                && let Err(e) = self.store.queue_checkpoint(&self.id, &v).await
            {
                tracing::warn!(source = %self.id, error = %e, "cannot save the counters' readings; a restart counts from then");
            }
            last = readings;
            last_at = now;
        }
    }

    /// One event per port and protocol: what passed since `before` (taken at `from`),
    /// dated `from`. Listed ports are reported every interval (zero included); every port
    /// a set met, when something passed.
    fn events(
        &self,
        before: &Readings,
        after: &Readings,
        from: Timestamp,
        now: Timestamp,
    ) -> Vec<Arc<Event>> {
        let mut per: BTreeMap<(&str, u16), (Count, Count)> = BTreeMap::new();
        for (key, count) in after {
            let d = delta(before.get(key).copied(), *count);
            let slot = per.entry((key.proto.as_str(), key.port)).or_default();
            match key.dir {
                Direction::In => slot.0 = d,
                Direction::Out => slot.1 = d,
            }
        }
        let listed = !self.cfg.ports.is_empty();
        let secs = (now - from).num_milliseconds() as f64 / 1000.0;
        per.into_iter()
            .filter(|(_, (i, o))| {
                listed || i.bytes > 0 || o.bytes > 0 || i.packets > 0 || o.packets > 0
            })
            .map(|((proto, port), (i, o))| {
                // The event's time is the start of what it measured: a reading taken
                // at midnight is the day before's last hour.
                let record = json!({
                    "timestamp": from.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    "interval_end": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    "source_type": "port_counters",
                    "port": port,
                    "proto": proto,
                    "in_bytes": i.bytes,
                    "out_bytes": o.bytes,
                    "in_packets": i.packets,
                    "out_packets": o.packets,
                    "interval_seconds": secs,
                });
                Arc::new(Event::from_record(record, self.id.clone(), now))
            })
            .collect()
    }
}

impl Source for PortCountersSource {
    fn run<'a>(self: Box<Self>, cx: &'a mut SourceContext) -> BoxFuture<'a, NodeResult> {
        Box::pin(self.run_inner(cx))
    }
}
