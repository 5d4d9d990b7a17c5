//! A reload: the [`Diff`] of the running graph against the new configuration, every new
//! node built before anything is touched, then the change applied.

use super::*;

impl Reloader {
    /// Changes the running graph to `new` (already validated): unchanged nodes keep
    /// running with their state; changed nodes are retired (they finish what they hold
    /// and save their state) and rebuilt (restoring the state when its meaning did not
    /// change); removed nodes drain and stop; added nodes start. A change to the settings
    /// rebuilds every node with new connections (sources stop and start again from their
    /// checkpoints). Returns what was done.
    pub async fn reload(&self, new: &Config) -> Result<ReloadReport, ReloadError> {
        let mut live = self.live.lock().await;
        let result = Self::apply(&mut live, new).await;
        // Readers see the graph as the reload left it, at once.
        self.view.store(Arc::new(live.view()));
        result
    }

    pub(super) async fn apply(live: &mut Live, new: &Config) -> Result<ReloadReport, ReloadError> {
        if live.env.shutdown.is_cancelled() {
            return Err(ReloadError("vigil is shutting down".into()));
        }
        let graph = new.graph();
        let settings_changed = live.config.settings_raw != new.settings_raw;
        let web_changed = live.config.settings_raw.get("web") != new.settings_raw.get("web");
        let new_ids: HashMap<Arc<str>, usize> = graph
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id.clone(), i))
            .collect();
        let mut report = ReloadReport {
            settings_changed,
            ..ReloadReport::default()
        };
        if web_changed {
            // The listener is not part of the graph: it keeps its address and token.
            tracing::warn!("the web: settings changed; they take effect when vigil is restarted");
            report.restart_needed.push("web".into());
        }
        let old_nodes: Vec<DiffNode> = live
            .nodes
            .iter()
            .map(|(id, n)| DiffNode {
                id: id.clone(),
                pipeline: n.pipeline.clone(),
                fingerprint: n.fingerprint.clone(),
            })
            .collect();
        let new_nodes: Vec<DiffNode> = graph
            .nodes
            .iter()
            .map(|n| DiffNode {
                id: n.id.clone(),
                pipeline: new.pipelines[n.pipeline].config.name.as_str().into(),
                fingerprint: fingerprint(new, n),
            })
            .collect();
        let stopped: HashSet<&str> = live
            .pipeline_stops
            .iter()
            .filter(|(_, t)| t.is_cancelled())
            .map(|(p, _)| p.as_str())
            .collect();
        let diff = Diff::between(&old_nodes, &new_nodes, settings_changed, &stopped);
        let retire: Vec<Arc<str>> = diff.retired().cloned().collect();
        let mut start: Vec<usize> = diff.started().map(|id| new_ids[id]).collect();
        start.sort_unstable();
        let text = |v: &[Arc<str>]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        report.added = text(&diff.added);
        report.removed = text(&diff.removed);
        report.changed = text(&diff.changed);
        report.unchanged = diff.unchanged.len();
        if report.is_empty() {
            live.config = new.clone();
            return Ok(report);
        }
        // New settings: new connections and state database, made before anything is
        // touched (a connection that cannot be set up fails the reload).
        let new_env = if settings_changed {
            let env = make_env(
                new,
                live.env.clock.clone(),
                live.env.shutdown.clone(),
                live.env.ended.clone(),
            )
            .map_err(|e| ReloadError(format!("{e}; the running pipelines are unchanged")))?;
            Some(env)
        } else {
            None
        };
        // Check that every node to start builds, before anything is touched. Sources and
        // sinks are kept and started as built (a file sink has opened its file; a source
        // joins what it shares only when attached, at its start); stages are built again
        // once their predecessors saved their state.
        let rebuilt: HashSet<Arc<str>> = report
            .changed
            .iter()
            .map(|id| Arc::from(id.as_str()))
            .collect();
        let mut built = HashMap::new();
        for &i in &start {
            let node = &graph.nodes[i];
            let p = &new.pipelines[node.pipeline];
            let counters = live.nodes.get(&node.id).map(|n| n.counters.clone());
            let env = new_env.as_ref().unwrap_or(&live.env);
            let services = &env.services;
            let cx = build_context(
                env,
                new,
                node,
                rebuilt.contains(&node.id),
                counters.unwrap_or_default(),
            );
            let result = match node.role {
                NodeRole::Source => p.config.sources[node.name.as_str()]
                    .build(
                        &cx,
                        services,
                        filter_readers(&p.config, &node.name).as_deref(),
                    )
                    .map(|source| drop(built.insert(i, Component::Source(source)))),
                NodeRole::Stage => p.config.stages[node.name.as_str()]
                    .build(&cx, services)
                    .map(drop),
                NodeRole::Sink => p.config.sinks[node.name.as_str()]
                    .build(&cx, services)
                    .map(|sink| drop(built.insert(i, Component::Sink(sink)))),
            };
            if let Err(e) = result {
                return Err(ReloadError(format!(
                    "{}: {e}; the running pipelines are unchanged",
                    node.id
                )));
            }
        }
        // Retire: running upstreams stop sending to retired nodes (their Done reaches
        // them after everything sent before) and, in the same step, start sending to the
        // new nodes, whose channels hold it until they start; retired sources are stopped.
        let retiring: HashSet<Arc<str>> = retire.iter().cloned().collect();
        let old_graph = live.config.graph();
        let mut waits = Vec::new();
        let mut removals: HashMap<Arc<str>, Vec<Rewire>> = HashMap::new();
        // The new nodes' channels; running nodes that are retired are not wired to.
        let mut retired_nodes: Vec<(Arc<str>, LiveNode)> = retire
            .iter()
            .filter_map(|id| live.nodes.shift_remove(id).map(|n| (id.clone(), n)))
            .collect();
        let mut prepared = live.prepare(new, &graph, &start);
        for node in &old_graph.nodes {
            if !retiring.contains(&node.id) {
                continue;
            }
            for &from in &node.inputs {
                let from_id = &old_graph.nodes[from].id;
                if retiring.contains(from_id) {
                    continue; // it closes its outputs when it ends
                }
                let (done, wait) = tokio::sync::oneshot::channel();
                removals
                    .entry(from_id.clone())
                    .or_default()
                    .push(Rewire::Remove {
                        to: node.id.clone(),
                        done,
                    });
                waits.push(wait);
            }
        }
        for (from, adds) in std::mem::take(&mut prepared.rewires) {
            removals.entry(from).or_default().extend(adds);
        }
        for (from, changes) in removals {
            if let Some(w) = live.nodes.get(&from).and_then(|n| n.wiring.clone()) {
                w.push(changes);
            }
        }
        // The shapes of the states the retired stages saved.
        let mut saved_shapes: HashMap<Arc<str>, serde_json::Value> = HashMap::new();
        let mut finished = Vec::new();
        for (id, n) in &retired_nodes {
            if n.role == NodeRole::Source {
                n.stop.cancel();
            }
            finished.push((id.clone(), n.finished.clone()));
        }
        let handover = async {
            for mut f in finished {
                let _ = f.1.wait_for(|done| *done).await;
            }
        };
        let handover_timeout = live.config.settings.handover_timeout.get();
        if tokio::time::timeout(handover_timeout, handover)
            .await
            .is_err()
        {
            // Still busy (a send that does not come back): stopped, so the new version
            // can take over; a delivering sink's unsent messages stay in its outbox.
            for (id, n) in &mut retired_nodes {
                if *n.finished.borrow() {
                    continue;
                }
                let Some(task) = n.task.take() else { continue };
                task.abort();
                if task.await.is_err_and(|e| e.is_cancelled()) {
                    live.running = live.running.saturating_sub(1);
                    tracing::error!(node = %id, wait = %humantime::format_duration(handover_timeout), "the node did not finish within handover_timeout; stopped");
                    report.aborted.push(id.to_string());
                }
            }
        }
        for w in waits {
            let _ = w.await;
        }
        for (id, n) in retired_nodes {
            if let Ok(Some(state)) = live.env.store.stage_state(&id) {
                saved_shapes.insert(
                    id.clone(),
                    saved_shape(std::io::BufReader::new(state.as_bytes())),
                );
            }
            if new_ids.contains_key(&id) {
                // The new incarnation goes on counting.
                if let Some(i) = new_ids.get(&id)
                    && let Some(f) = prepared.fresh.get_mut(i)
                {
                    f.counters = n.counters.clone();
                }
            } else {
                let (events_in, events_out, errors) = n.counters.get();
                tracing::info!(node = %id, events_in, events_out, errors, "node removed by a reload");
            }
        }
        if let Some(env) = new_env {
            // Every node has been retired: the old connections' helpers (traffic hubs)
            // stop and store their cursors, then the new connections take over.
            live.env.helpers_stop.cancel();
            for helper in live.helpers.drain(..) {
                let _ = helper.await;
            }
            live.env = env;
            let pruner = start_pruner(&live.env, new.settings.retention.clone());
            live.helpers.push(pruner);
        }
        // Start the new nodes.
        let outcomes = live
            .spawn(new, &graph, prepared, built, &rebuilt, &saved_shapes)
            .map_err(|e| ReloadError(format!("{e}; the graph now runs without it")))?;
        for (id, kept) in outcomes {
            if kept {
                report.state_kept.push(id.to_string());
            } else {
                report.state_reset.push(id.to_string());
            }
        }
        let helpers_stop = live.env.helpers_stop.clone();
        let helpers = start_helpers(&live.env.services, &helpers_stop);
        live.helpers.extend(helpers);
        live.config = new.clone();
        Ok(report)
    }
}
