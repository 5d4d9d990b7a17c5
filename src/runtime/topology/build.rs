//! Building: the services and state database of a run, a node's context, its
//! fingerprint, and the node itself.

use super::*;

pub(super) fn make_env(
    config: &Config,
    clock: SharedClock,
    shutdown: CancellationToken,
    ended: mpsc::UnboundedSender<Ended>,
) -> Result<Env, BuildError> {
    let settings = &config.settings;
    let store =
        Arc::new(
            crate::store::Store::open(&settings.state_dir).map_err(|e| BuildError {
                id: "state_dir".into(),
                message: e.to_string(),
            })?,
        );
    let services = Arc::new(build_services(settings, &clock).map_err(|e| BuildError {
        id: format!("connections.pce.{}", e.name),
        message: e.source.to_string(),
    })?);
    restore_inhibitions(&services.delivery.inhibitor, &store, clock.now());
    Ok(Env {
        clock,
        helpers_stop: shutdown.child_token(),
        shutdown,
        store,
        services,
        snapshots: SnapshotWriter::start(),
        ended,
    })
}

/// Starts what the services of a run start once every node is built (the traffic hubs
/// of the PCE connections `pce_traffic` sources read); the tasks end on `stop`.
pub(super) fn start_helpers(
    services: &Services,
    stop: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    services
        .pce
        .values()
        .filter_map(|p| p.start(stop))
        .collect()
}

/// Prunes the alert history and the outbox's sent messages to `retention` at once and
/// then hourly (engine time), until the shared helpers stop; the deletes run on the
/// store's writing thread.
pub(super) fn start_pruner(
    env: &Env,
    retention: crate::config::RetentionConfig,
) -> tokio::task::JoinHandle<()> {
    let (store, clock, stop) = (
        env.store.clone(),
        env.clock.clone(),
        env.helpers_stop.clone(),
    );
    tokio::spawn(async move {
        loop {
            let now = clock.now();
            let before = (now - retention.history_max_age.span()).timestamp_millis();
            let max_rows = retention.history_max_rows;
            match store.prune_history_queued(before, max_rows).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(alerts = n, "alert history pruned (settings retention)"),
                Err(e) => tracing::warn!(error = %e, "cannot prune the alert history"),
            }
            let before = (now - retention.sent_max_age.span()).timestamp_millis();
            match store.prune_sent_queued(before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    messages = n,
                    "sent messages pruned from the outbox (settings retention)"
                ),
                Err(e) => tracing::warn!(error = %e, "cannot prune the outbox"),
            }
            let next = clock.now() + chrono::Duration::hours(1);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = clock.sleep_until(next) => {}
            }
        }
    })
}

/// Shows a new inhibitor the alerts that were firing when the last one stopped (the
/// alert history's open episodes of the last week), so a restart or a settings change
/// does not unmute their targets.
pub(super) fn restore_inhibitions(
    inhibitor: &crate::sinks::delivery::inhibit::Inhibitor,
    store: &crate::store::Store,
    now: crate::event::Timestamp,
) {
    if !inhibitor.is_active() {
        return;
    }
    let since = (now - chrono::Duration::days(7)).timestamp_millis();
    match store.firing_alerts(since, crate::sinks::delivery::inhibit::MAX_SOURCES) {
        Ok(alerts) => {
            for a in alerts.iter().filter(|a| a.episode) {
                inhibitor.observe(a, &a.to_value());
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open alerts; inhibitions start empty")
        }
    }
}

/// What identifies a node's configuration: its YAML (after interpolation) and the files
/// it reads (a script, the templates beside the pipeline); for a source built from the
/// filter stages reading it, also those (see [`filter_readers`]).
pub(super) fn fingerprint(config: &Config, node: &GraphNode) -> String {
    let p = &config.pipelines[node.pipeline];
    let section = match node.role {
        NodeRole::Source => "sources",
        NodeRole::Stage => "stages",
        NodeRole::Sink => "sinks",
    };
    let body = p
        .raw
        .get(section)
        .and_then(|s| s.get(&node.name))
        .cloned()
        .unwrap_or_default();
    let mut fp = body.to_string();
    if node.role == NodeRole::Source
        && p.config
            .sources
            .get(&node.name)
            .is_some_and(|s| s.reads_its_readers())
    {
        fp.push_str(&format!("{:?}", filter_readers(&p.config, &node.name)));
    }
    let dir = p.file.parent().unwrap_or(std::path::Path::new(""));
    if let Some(file) = body.get("file").and_then(|f| f.as_str())
        && node.role == NodeRole::Stage
    {
        fp.push_str(&std::fs::read_to_string(dir.join(file)).unwrap_or_default());
    }
    if node.role == NodeRole::Sink
        && let Ok(entries) = std::fs::read_dir(dir.join("templates"))
    {
        let mut files: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        files.sort();
        for f in files {
            fp.push_str(&f.display().to_string());
            fp.push_str(&std::fs::read_to_string(&f).unwrap_or_default());
        }
    }
    fp
}

/// A built node.
pub(super) enum Component {
    Source(Box<dyn crate::runtime::Source>),
    Stage(Box<dyn Stage>),
    Sink(Box<dyn crate::runtime::Sink>),
}

impl Component {
    /// Builds node `node` of `config` in `cx`.
    pub(super) fn build(
        config: &Config,
        node: &GraphNode,
        cx: &BuildContext,
        services: &Services,
    ) -> Result<Component, crate::runtime::NodeError> {
        let p = &config.pipelines[node.pipeline].config;
        let name = node.name.as_str();
        let missing = || format!("{} is not in the configuration", node.id);
        Ok(match node.role {
            NodeRole::Source => {
                let readers = filter_readers(p, name);
                let source = p.sources.get(name).ok_or_else(missing)?;
                Component::Source(source.build(cx, services, readers.as_deref())?)
            }
            NodeRole::Stage => Component::Stage(
                p.stages
                    .get(name)
                    .ok_or_else(missing)?
                    .build(cx, services)?,
            ),
            NodeRole::Sink => {
                Component::Sink(p.sinks.get(name).ok_or_else(missing)?.build(cx, services)?)
            }
        })
    }
}

/// The context node `node` of `config` is built in.
pub(super) fn build_context(
    env: &Env,
    config: &Config,
    node: &GraphNode,
    rebuilt: bool,
    counters: Arc<NodeCounters>,
) -> BuildContext {
    let p = &config.pipelines[node.pipeline];
    BuildContext {
        id: node.id.clone(),
        pipeline: p.config.name.as_str().into(),
        node: node.name.as_str().into(),
        base_dir: p
            .file
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default(),
        state_dir: config.settings.state_dir.clone(),
        rejected_max_bytes: config.settings.retention.rejected_max_bytes,
        clock: env.clock.clone(),
        store: env.store.clone(),
        keep_state: config.settings.keep_state,
        public_url: config.settings.public_url.as_str().into(),
        history_interval: config.settings.history_interval.span(),
        rebuilt,
        counters,
    }
}

/// The filter stages reading node `name` of `pipeline`, when every reader is one (see
/// [`crate::config::PipelineConfig::filter_readers`]).
pub(super) fn filter_readers(
    pipeline: &crate::config::PipelineConfig,
    name: &str,
) -> Option<Vec<crate::stages::filter::FilterConfig>> {
    pipeline.filter_readers(name)
}
