//! The field catalogue: the fields of the events each source kind emits, and of the
//! alerts detection stages raise, with a line of description each.
//!
//! This is the one place that names them. `vigil validate` checks every field path a
//! pipeline uses (filter conditions, `group_by`, `within`, `by`, `sum`, `key`, ...) against
//! it when the events reaching the stage come only from kinds listed here, and suggests
//! the closest known path for an unknown one. The README's field tables are generated from
//! it ([`markdown`]; a test keeps them in step). Sources whose records are whatever a file holds (`file`, `stdin`) have no entry and
//! are never warned about.
//!
//! A path pattern is dotted like a field path; `<key>` stands for any one segment (a
//! label key, a field name), and a final `*` for anything below (free-form objects). A
//! path that crosses a list names the list's elements' fields
//! (`notifications.notification_type`). Every prefix of a listed path is known too
//! (`src.workload` for `exists: true`).

/// One field of a catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldDoc {
    /// The path pattern (`dst.labels.<key>`, `notifications.info.*`).
    pub path: &'static str,
    /// One line: what the field holds.
    pub description: &'static str,
}

/// The fields of one shape of record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Catalogue {
    /// What emits these records: a source `type`, or `alert` for the alerts of
    /// detection stages (and vigil's own, from the `internal` source).
    pub kind: &'static str,
    /// One line about the records.
    pub about: &'static str,
    /// What one record is called in messages (`PCE traffic flow`).
    pub noun: &'static str,
    /// The fields.
    pub fields: &'static [FieldDoc],
    /// A representative record (JSON), for checks that evaluate an expression on one
    /// (`where:` must give `true` or `false`).
    pub sample: &'static str,
}

const fn f(path: &'static str, description: &'static str) -> FieldDoc {
    FieldDoc { path, description }
}

/// Traffic flows of `pce_traffic`: the PCE's flow row plus the fields vigil adds.
pub const PCE_TRAFFIC: Catalogue = Catalogue {
    kind: "pce_traffic",
    noun: "PCE traffic flow (`pce_traffic`)",
    about: "a PCE traffic flow (Explorer row), enriched by vigil",
    fields: &[
        f("src.ip", "source IP address"),
        f("src.fqdn", "source DNS name, when the PCE knows it"),
        f(
            "src.workload.href",
            "source workload's href (absent for unmanaged endpoints)",
        ),
        f("src.workload.name", "source workload's name"),
        f(
            "src.workload.hostname",
            "source workload's hostname (may be empty)",
        ),
        f(
            "src.workload.labels.href",
            "href of each label of the source workload (list)",
        ),
        f(
            "src.workload.labels.key",
            "key of each label of the source workload (list)",
        ),
        f(
            "src.workload.labels.value",
            "value of each label of the source workload (list)",
        ),
        f(
            "src.workload.labels_by_key.<key>",
            "source workload's label value by key (added by vigil)",
        ),
        f(
            "src.workload.managed",
            "whether a VEN manages the source workload",
        ),
        f(
            "src.workload.os_type",
            "source workload's OS (`linux`, `windows`)",
        ),
        f(
            "src.workload.enforcement_mode",
            "source workload's enforcement mode (`idle`, `visibility_only`, `selective`, `full`)",
        ),
        f(
            "src.ip_lists.href",
            "href of each IP list containing the source (list)",
        ),
        f(
            "src.ip_lists.name",
            "name of each IP list containing the source (list)",
        ),
        f(
            "src.labels.<key>",
            "source label value by key, e.g. `src.labels.role` (added by vigil)",
        ),
        f(
            "src.ip_list_names",
            "names of the source's IP lists (added by vigil)",
        ),
        f("dst.ip", "destination IP address"),
        f("dst.fqdn", "destination DNS name, when the PCE knows it"),
        f(
            "dst.workload.href",
            "destination workload's href (absent for unmanaged endpoints)",
        ),
        f("dst.workload.name", "destination workload's name"),
        f(
            "dst.workload.hostname",
            "destination workload's hostname (may be empty)",
        ),
        f(
            "dst.workload.labels.href",
            "href of each label of the destination workload (list)",
        ),
        f(
            "dst.workload.labels.key",
            "key of each label of the destination workload (list)",
        ),
        f(
            "dst.workload.labels.value",
            "value of each label of the destination workload (list)",
        ),
        f(
            "dst.workload.labels_by_key.<key>",
            "destination workload's label value by key (added by vigil)",
        ),
        f(
            "dst.workload.managed",
            "whether a VEN manages the destination workload",
        ),
        f(
            "dst.workload.os_type",
            "destination workload's OS (`linux`, `windows`)",
        ),
        f(
            "dst.workload.enforcement_mode",
            "destination workload's enforcement mode",
        ),
        f(
            "dst.ip_lists.href",
            "href of each IP list containing the destination (list)",
        ),
        f(
            "dst.ip_lists.name",
            "name of each IP list containing the destination (list)",
        ),
        f(
            "dst.labels.<key>",
            "destination label value by key, e.g. `dst.labels.role` (added by vigil)",
        ),
        f(
            "dst.ip_list_names",
            "names of the destination's IP lists (added by vigil)",
        ),
        f("service.port", "destination port (`All` on some ICMP rows)"),
        f(
            "service.proto",
            "IANA protocol number (6 TCP, 17 UDP, 1 ICMP)",
        ),
        f(
            "service.process_name",
            "process on the destination, when reported",
        ),
        f(
            "service.windows_service_name",
            "Windows service on the destination, when reported",
        ),
        f(
            "service.user_name",
            "user the destination process runs as, when reported",
        ),
        f(
            "num_connections",
            "connections counted in this slice (the growth since the flow's last row)",
        ),
        f(
            "state",
            "`active`, `closed`, `timed out`, `snapshot`, `new`, `unknown`, `incomplete`",
        ),
        f(
            "timestamp_range.first_detected",
            "when the flow was first seen (RFC 3339)",
        ),
        f(
            "timestamp_range.last_detected",
            "when the flow was last seen (RFC 3339)",
        ),
        f(
            "timestamp",
            "the row's time, when the PCE or an export sets it",
        ),
        f(
            "policy_decision",
            "`allowed`, `potentially_blocked`, `blocked`, `unknown`",
        ),
        f(
            "boundary_decision",
            "the enforcement-boundary decision, when any",
        ),
        f(
            "flow_direction",
            "`inbound` or `outbound` (which VEN reported it)",
        ),
        f("network.href", "the network's href"),
        f("network.name", "the network's name"),
        f(
            "client_type",
            "what reported the flow (`server`, `endpoint`, ...)",
        ),
        f("seq_id", "the PCE's sequence number of the row"),
        f("caps", "what the API user may do with the flow (list)"),
        f("icmp_type", "ICMP type (ICMP flows)"),
        f("icmp_code", "ICMP code (ICMP flows)"),
        f(
            "dst_bi",
            "bytes in at the destination: a lifetime counter, 0 when unmeasured",
        ),
        f(
            "dst_bo",
            "bytes out at the destination: a lifetime counter, 0 when unmeasured",
        ),
        f("vigil.source_type", "`pce_traffic`"),
        f("vigil.connection", "the PCE connection the flow came from"),
        f("vigil.slice.start", "start of the queried time slice"),
        f("vigil.slice.end", "end of the queried time slice"),
        f(
            "vigil.truncated",
            "`true` when more flows matched than the result holds",
        ),
        f(
            "vigil.num_connections_total",
            "the PCE's lifetime `num_connections` of a continuing flow",
        ),
    ],
    sample: r#"{"src": {"ip": "10.20.0.5", "workload": {"href": "/orgs/1/workloads/a", "name": "jump-01", "hostname": "jump-01", "labels": [{"href": "/orgs/1/labels/1", "key": "role", "value": "jump"}], "labels_by_key": {"role": "jump"}, "managed": true, "os_type": "linux", "enforcement_mode": "full"}, "labels": {"role": "jump"}, "ip_list_names": ["Any"]}, "dst": {"ip": "10.10.1.11", "labels": {"role": "db"}, "ip_list_names": []}, "service": {"port": 5432, "proto": 6, "process_name": "postgres", "user_name": "postgres"}, "num_connections": 3, "state": "active", "timestamp_range": {"first_detected": "2026-01-01T00:00:00Z", "last_detected": "2026-01-01T00:01:00Z"}, "policy_decision": "blocked", "flow_direction": "inbound", "network": {"href": "/orgs/1/networks/1", "name": "Corporate"}, "client_type": "server", "seq_id": 7, "caps": ["write"], "dst_bi": 1200, "dst_bo": 3400, "vigil": {"source_type": "pce_traffic", "connection": "prod", "slice": {"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T00:05:00Z"}, "truncated": false}}"#,
};

/// Audit events of `pce_events`, as the PCE sends them.
pub const PCE_EVENTS: Catalogue = Catalogue {
    kind: "pce_events",
    noun: "PCE audit event (`pce_events`)",
    about: "a PCE audit event, unchanged",
    fields: &[
        f(
            "href",
            "the event's identity (`/orgs/1/events/<uuid>` or `/system_events/<uuid>`)",
        ),
        f(
            "timestamp",
            "when it happened (RFC 3339, UTC, milliseconds)",
        ),
        f("pce_fqdn", "the PCE node that recorded it"),
        f(
            "event_type",
            "`resource.verb`, e.g. `agent.tampering`; conditions also see the notification types",
        ),
        f("status", "`success`, `failure` or null"),
        f("severity", "`info`, `warning` or `err`"),
        f("version", "the event format's version"),
        f("created_by.system", "present when the PCE itself acted"),
        f("created_by.user.href", "the acting user's href"),
        f("created_by.user.username", "the acting user's name"),
        f("created_by.agent.href", "the acting VEN's href"),
        f("created_by.agent.hostname", "the acting VEN's host name"),
        f("created_by.ven.href", "the VEN's href (VEN events)"),
        f(
            "created_by.ven.hostname",
            "the VEN's host name (VEN events)",
        ),
        f("created_by.ven.name", "the VEN's name (VEN events)"),
        f(
            "created_by.container_cluster.href",
            "the acting container cluster's href",
        ),
        f(
            "created_by.container_cluster.name",
            "the acting container cluster's name",
        ),
        f("action.uuid", "the API request's id"),
        f(
            "action.api_endpoint",
            "the API path called (may be `FILTERED`)",
        ),
        f("action.api_method", "the HTTP method"),
        f("action.http_status_code", "the HTTP status answered"),
        f("action.src_ip", "the caller's address (may be `FILTERED`)"),
        f("resource_changes.uuid", "id of each change (list)"),
        f("resource_changes.resource.*", "the object changed (list)"),
        f(
            "resource_changes.changes.*",
            "`field: {before, after}` of each change (list)",
        ),
        f(
            "resource_changes.change_type",
            "`create`, `update`, `delete` (list)",
        ),
        f("notifications.uuid", "id of each notification (list)"),
        f(
            "notifications.notification_type",
            "e.g. `user.login_failed` (list)",
        ),
        f("notifications.info.*", "the notification's details (list)"),
    ],
    sample: r#"{"href": "/orgs/1/events/a", "timestamp": "2026-01-01T00:00:00.000Z", "pce_fqdn": "pce.example.com", "event_type": "user.sign_in", "status": "failure", "severity": "info", "version": 2, "created_by": {"system": {}}, "action": {"uuid": "b", "api_endpoint": "/login", "api_method": "POST", "http_status_code": 401, "src_ip": "203.0.113.9"}, "resource_changes": [], "notifications": [{"uuid": "c", "notification_type": "user.login_failed", "info": {"associated_user": {"supplied_username": "admin"}}}]}"#,
};

/// Health reports of `pce_health`.
pub const PCE_HEALTH: Catalogue = Catalogue {
    kind: "pce_health",
    noun: "PCE health report (`pce_health`)",
    about: "a change (or a reminder) of a PCE's health",
    fields: &[
        f("source_type", "`pce_health`"),
        f("connection", "the PCE connection checked"),
        f("timestamp", "when it was checked (RFC 3339)"),
        f("status", "`normal`, `warning`, `critical` or `unreachable`"),
        f(
            "previous_status",
            "the status before (null on the first report)",
        ),
        f("changed", "whether the status changed"),
        f("clusters.fqdn", "each cluster's FQDN (list)"),
        f("clusters.type", "each cluster's type (list)"),
        f("clusters.status", "each cluster's status (list)"),
        f(
            "clusters.notifications.*",
            "each cluster's notifications (list)",
        ),
        f(
            "clusters.generated_at",
            "when each cluster's report was made (list)",
        ),
        f("error", "why the PCE is unreachable (null otherwise)"),
    ],
    sample: r#"{"source_type": "pce_health", "connection": "prod", "timestamp": "2026-01-01T00:00:00.000Z", "status": "warning", "previous_status": "normal", "changed": true, "clusters": [{"fqdn": "pce.example.com", "type": "single", "status": "warning", "notifications": [], "generated_at": "2026-01-01T00:00:00Z"}], "error": null}"#,
};

/// Cilium Tetragon's events, as a `file` or `exec` source with `decode: tetragon` makes them.
pub const TETRAGON: Catalogue = Catalogue {
    kind: "tetragon",
    noun: "Tetragon event (`decode: tetragon`)",
    about: "a Cilium Tetragon event, normalised (a `file` or `exec` source with `decode: tetragon`)",
    fields: &[
        f(
            "event.type",
            "`process_exec`, `process_exit`, `process_kprobe`, `process_tracepoint`, `process_throttle`, ... (an unknown type as written, its body under `body`)",
        ),
        f("time", "when it happened (RFC 3339; the event time)"),
        f("node_name", "the Kubernetes node (or host) it happened on"),
        f("process.binary", "the executable's path"),
        f("process.arguments", "its arguments, as one string"),
        f("process.pid", "its process id"),
        f("process.tid", "its thread id"),
        f("process.uid", "the user id it runs as"),
        f("process.auid", "the login user id"),
        f("process.cwd", "its working directory"),
        f("process.exec_id", "Tetragon's unique id of the execution"),
        f("process.parent_exec_id", "its parent's exec id"),
        f("process.start_time", "when it started (RFC 3339)"),
        f("process.flags", "how it started (`execve clone`, ...)"),
        f("process.docker", "its container id, short"),
        f("process.refcnt", "Tetragon's reference count"),
        f(
            "process.in_init_tree",
            "whether it descends from the container's first process",
        ),
        f("process.pod.namespace", "its pod's namespace"),
        f("process.pod.name", "its pod's name"),
        f(
            "process.pod.workload",
            "the pod's workload (deployment, ...)",
        ),
        f("process.pod.workload_kind", "the workload's kind"),
        f("process.pod.pod_labels.<key>", "the pod's labels"),
        f("process.pod.container.name", "its container's name"),
        f("process.pod.container.id", "its container's id"),
        f(
            "process.pod.container.image",
            "the container image's name (`registry/app:1.4`)",
        ),
        f("process.pod.container.image_id", "the container image's id"),
        f(
            "process.pod.container.start_time",
            "when the container started",
        ),
        f("process.pod.container.pid", "its pid inside the container"),
        f(
            "process.pod.container.maybe_exec_probe",
            "whether it may be a Kubernetes exec probe",
        ),
        f(
            "process.pod.container.security_context.*",
            "the container's security context (`privileged`, ...)",
        ),
        f(
            "process.cap.*",
            "its capabilities (`permitted`, `effective`, `inheritable`)",
        ),
        f("process.ns.*", "its namespaces"),
        f(
            "process.process_credentials.*",
            "its credentials (`uid`, `euid`, `gid`, ...)",
        ),
        f(
            "process.binary_properties.*",
            "its binary's properties (setuid, file)",
        ),
        f(
            "process.user.*",
            "the user's name, when Tetragon resolves it",
        ),
        f("parent.binary", "the parent: the executable's path"),
        f("parent.arguments", "the parent: arguments, as one string"),
        f("parent.pid", "the parent: process id"),
        f("parent.tid", "the parent: thread id"),
        f("parent.uid", "the parent: the user id runs as"),
        f("parent.auid", "the parent: the login user id"),
        f("parent.cwd", "the parent: working directory"),
        f(
            "parent.exec_id",
            "the parent: Tetragon's unique id of the execution",
        ),
        f("parent.parent_exec_id", "the parent: parent's exec id"),
        f("parent.start_time", "the parent: when started (RFC 3339)"),
        f(
            "parent.flags",
            "the parent: how started (`execve clone`, ...)",
        ),
        f("parent.docker", "the parent: container id, short"),
        f("parent.refcnt", "the parent: Tetragon's reference count"),
        f(
            "parent.in_init_tree",
            "the parent: whether descends from the container's first process",
        ),
        f("parent.pod.namespace", "the parent: pod's namespace"),
        f("parent.pod.name", "the parent: pod's name"),
        f(
            "parent.pod.workload",
            "the parent: the pod's workload (deployment, ...)",
        ),
        f(
            "parent.pod.workload_kind",
            "the parent: the workload's kind",
        ),
        f(
            "parent.pod.pod_labels.<key>",
            "the parent: the pod's labels",
        ),
        f("parent.pod.container.name", "the parent: container's name"),
        f("parent.pod.container.id", "the parent: container's id"),
        f(
            "parent.pod.container.image",
            "the parent: the container image's name (`registry/app:1.4`)",
        ),
        f(
            "parent.pod.container.image_id",
            "the parent: the container image's id",
        ),
        f(
            "parent.pod.container.start_time",
            "the parent: when the container started",
        ),
        f(
            "parent.pod.container.pid",
            "the parent: pid inside the container",
        ),
        f(
            "parent.pod.container.maybe_exec_probe",
            "the parent: whether may be a Kubernetes exec probe",
        ),
        f(
            "parent.pod.container.security_context.*",
            "the parent: the container's security context (`privileged`, ...)",
        ),
        f(
            "parent.cap.*",
            "the parent: capabilities (`permitted`, `effective`, `inheritable`)",
        ),
        f("parent.ns.*", "the parent: namespaces"),
        f(
            "parent.process_credentials.*",
            "the parent: credentials (`uid`, `euid`, `gid`, ...)",
        ),
        f(
            "parent.binary_properties.*",
            "the parent: binary's properties (setuid, file)",
        ),
        f(
            "parent.user.*",
            "the parent: the user's name, when Tetragon resolves it",
        ),
        f(
            "kprobe.function",
            "the kernel function probed (`security_file_permission`, `commit_creds`, `__x64_sys_setns`, `cap_capable`, ...)",
        ),
        f("kprobe.policy", "the TracingPolicy that made the event"),
        f(
            "kprobe.action",
            "what the policy did (`KPROBE_ACTION_POST`, `..._SIGKILL`)",
        ),
        f("kprobe.return", "the function's return value"),
        f("kprobe.return_action", "what was done on return"),
        f(
            "tracepoint.*",
            "a tracepoint event's `subsys`, `event`, `policy`, `action`",
        ),
        f(
            "uprobe.*",
            "a uprobe event's `path`, `symbol`, `policy`, `action`",
        ),
        f(
            "lsm.*",
            "an LSM hook event's `function`, `policy`, `action`",
        ),
        f("arg.file.path", "a file argument's path"),
        f(
            "arg.file.permission",
            "a file argument's permissions (`-rw-r--r--`)",
        ),
        f("arg.cap.name", "a capability argument (`CAP_SYS_ADMIN`)"),
        f(
            "arg.creds.uid",
            "credentials committed: `uid`, `euid`, `gid`, `caps`...",
        ),
        f(
            "arg.sock.daddr",
            "a socket argument's destination address (also `saddr`, `dport`, `sport`, `protocol`)",
        ),
        f("arg.module.name", "a kernel module argument's name"),
        f("arg.int", "an integer argument (a second one: `arg.int_2`)"),
        f("arg.string", "a string argument"),
        f(
            "arg.<key>",
            "an argument of another kind, named by its kind without `_arg`",
        ),
        f("arg.*", "what the arguments hold"),
        f(
            "args.*",
            "the arguments as Tetragon wrote them (list of `{\"<kind>_arg\": ...}`)",
        ),
        f(
            "sock.*",
            "a network event's `saddr`, `sport`, `daddr`, `dport`, `protocol`",
        ),
        f(
            "throttle.type",
            "`THROTTLE_START` or `THROTTLE_STOP`: Tetragon dropping a cgroup's events",
        ),
        f("throttle.cgroup", "the cgroup throttled"),
        f(
            "rate_limit.*",
            "Tetragon's rate-limit report (events dropped)",
        ),
        f(
            "exit_signal",
            "a process exit's signal (also `exit_status`)",
        ),
        f("exit_status", "a process exit's status"),
        f("body.*", "an unknown type's event, as written"),
        f(
            "aggregation_info.*",
            "Tetragon's aggregation counts, when it aggregates",
        ),
        f("cluster_name", "the cluster, when Tetragon says"),
    ],
    sample: r#"{"event": {"type": "process_kprobe"}, "node_name": "node-1", "time": "2026-01-01T00:00:00Z", "process": {"exec_id": "a", "pid": 10, "uid": 1000, "cwd": "/", "binary": "/usr/bin/cat", "arguments": "/etc/passwd", "pod": {"namespace": "shop", "name": "web", "container": {"name": "web", "image": "registry.local/web:1"}}}, "parent": {"binary": "/bin/bash", "pid": 9}, "kprobe": {"function": "security_file_permission", "policy": "file-monitoring", "action": "KPROBE_ACTION_POST", "return": 0}, "arg": {"file": {"path": "/etc/passwd", "permission": "-rw-r--r--"}, "int": 4}, "args": [{"file_arg": {"path": "/etc/passwd"}}, {"int_arg": 4}]}"#,
};

/// Alerts: what detection stages (`window_count`, `bandwidth`, `flatline`, `top_n`,
/// `script`) raise and what the `internal` source emits.
pub const ALERT: Catalogue = Catalogue {
    kind: "alert",
    noun: "alert",
    about: "an alert of a detection stage, or vigil's own (`internal`)",
    fields: &[
        f("id", "stable id of the finding (kept through an episode)"),
        f("status", "`firing` or `resolved`"),
        f("pipeline", "the pipeline that raised it"),
        f("stage", "the stage that raised it"),
        f("severity", "`info`, `low`, `medium`, `high`, `critical`"),
        f("title", "one line, from the stage's `alert.title`"),
        f("summary", "a few lines, from the stage's `alert.summary`"),
        f(
            "group.*",
            "the `group_by` paths and their values (`group.src.ip`)",
        ),
        f("group_key", "the group as one string (`src.ip=10.0.0.1`)"),
        f("value", "what was measured (count, sum, MiB, Mbps)"),
        f("threshold", "what it was compared with"),
        f("unit", "unit of `value` (`MiB`, `Mbps`), when not a count"),
        f(
            "estimate",
            "set when `value` is an estimate (`lower_bound`, `approximate`)",
        ),
        f("window.start", "start of the measured window"),
        f("window.end", "end of the measured window"),
        f("first_seen", "when the episode began"),
        f("last_seen", "the newest event counted"),
        f("updates", "how many times the episode was updated"),
        f(
            "episode",
            "whether it is reported again while it lasts and resolved",
        ),
        f("samples.time", "time of each raw event kept (list)"),
        f("samples.source", "node each raw event came from (list)"),
        f("samples.record.*", "each raw event kept (list)"),
        f(
            "top.*",
            "the top-N table, when a `top_n` stage annotated it",
        ),
        f("fields.*", "fields set by a script stage"),
    ],
    sample: r#"{"id": "a1", "status": "firing", "pipeline": "p", "stage": "burst", "severity": "high", "title": "t", "summary": "s", "group": {"src": {"ip": "10.0.0.1"}}, "group_key": "src.ip=10.0.0.1", "value": 12, "threshold": 10, "window": {"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T00:10:00Z"}, "first_seen": "2026-01-01T00:01:00Z", "last_seen": "2026-01-01T00:09:00Z", "updates": 0, "episode": true, "samples": [{"time": "2026-01-01T00:01:00Z", "source": "p.flows", "record": {"src": {"ip": "10.0.0.1"}}}]}"#,
};

/// The scrapes of `host_metrics`.
pub const HOST_METRICS: Catalogue = Catalogue {
    kind: "host_metrics",
    noun: "host scrape (`host_metrics`)",
    about: "one scrape of the host's `/proc` (`host_metrics`); rates are per second since the scrape before, absent from the first",
    fields: &[
        f("source_type", "always `host_metrics`"),
        f("host", "the host name (`/proc/sys/kernel/hostname`)"),
        f(
            "interval_seconds",
            "seconds since the scrape before, by the kernel's uptime",
        ),
        f("cpu.percent", "CPU busy, all cores, in percent (0–100)"),
        f("cpu.cores", "CPU busy per core, in percent (list)"),
        f("cpu.count", "how many cores"),
        f(
            "memory.used_percent",
            "memory in use (not available) in percent of the total",
        ),
        f(
            "memory.available_bytes",
            "memory available without swapping (`MemAvailable`)",
        ),
        f("memory.used_bytes", "memory in use"),
        f("memory.total_bytes", "the memory usable"),
        f("load.1", "load average over 1 minute"),
        f("load.5", "load average over 5 minutes"),
        f("load.15", "load average over 15 minutes"),
        f(
            "disk.<key>.read_bps",
            "a whole disk's reads, bytes per second",
        ),
        f(
            "disk.<key>.write_bps",
            "a whole disk's writes, bytes per second",
        ),
        f(
            "disk.<key>.util_percent",
            "the share of time the disk was busy, in percent",
        ),
        f(
            "disk_total.read_bps",
            "every whole disk's reads, bytes per second",
        ),
        f(
            "disk_total.write_bps",
            "every whole disk's writes, bytes per second",
        ),
        f(
            "disk_total.bps",
            "reads and writes together, bytes per second",
        ),
        f(
            "net.<key>.rx_bps",
            "an interface's bytes received per second (not `lo`)",
        ),
        f("net.<key>.tx_bps", "an interface's bytes sent per second"),
        f(
            "top.cpu.*",
            "the busiest processes by CPU (`top_processes`): `{pid, name, cpu_percent, rss_bytes, io_bps}` (list)",
        ),
        f("top.rss.*", "the same, by resident memory (list)"),
        f("top.io.*", "the same, by storage reads and writes (list)"),
    ],
    sample: r#"{"source_type": "host_metrics", "host": "web-01", "interval_seconds": 10.0, "cpu": {"percent": 50.0, "cores": [80.0, 20.0], "count": 2}, "memory": {"used_percent": 75.0, "available_bytes": 4096000000, "used_bytes": 12288000000, "total_bytes": 16384000000}, "load": {"1": 2.0, "5": 1.0, "15": 0.5}, "disk": {"sda": {"read_bps": 1048576.0, "write_bps": 2097152.0, "util_percent": 25.0}}, "disk_total": {"read_bps": 1048576.0, "write_bps": 2097152.0, "bps": 3145728.0}, "net": {"eth0": {"rx_bps": 1250000.0, "tx_bps": 125000.0}}, "top": {"cpu": [{"pid": 100, "name": "postgres", "cpu_percent": 60.0, "rss_bytes": 102400000, "io_bps": 0.0}], "rss": [], "io": []}}"#,
};

/// The readings of `port_counters`.
pub const PORT_COUNTERS: Catalogue = Catalogue {
    kind: "port_counters",
    noun: "port reading (`port_counters`)",
    about: "what passed through one port since the reading before (`port_counters`): one event per port and protocol per interval",
    fields: &[
        f(
            "timestamp",
            "the start of the interval measured (the event time)",
        ),
        f("interval_end", "the end of the interval measured"),
        f("source_type", "always `port_counters`"),
        f("port", "the port (a number)"),
        f("proto", "`tcp` or `udp`"),
        f(
            "in_bytes",
            "bytes to the port on this host, headers included",
        ),
        f("out_bytes", "bytes from the port (its answers)"),
        f("in_packets", "packets to the port"),
        f("out_packets", "packets from the port"),
        f("interval_seconds", "seconds since the reading before"),
    ],
    sample: r#"{"timestamp": "2026-03-01T00:00:00.000Z", "interval_end": "2026-03-01T00:01:00.000Z", "source_type": "port_counters", "port": 8388, "proto": "tcp", "in_bytes": 1001204, "out_bytes": 772, "in_packets": 23, "out_packets": 14, "interval_seconds": 60.0}"#,
};

/// Every catalogue, in the order the docs list them.
pub const ALL: &[&Catalogue] = &[
    &PCE_TRAFFIC,
    &PCE_EVENTS,
    &PCE_HEALTH,
    &TETRAGON,
    &HOST_METRICS,
    &PORT_COUNTERS,
    &ALERT,
];

/// The catalogue of the records a source `type` emits; `None` when its records are
/// whatever its input holds (`file`, `stdin`).
pub fn of_source(kind: &str) -> Option<&'static Catalogue> {
    match kind {
        "pce_traffic" => Some(&PCE_TRAFFIC),
        "pce_events" => Some(&PCE_EVENTS),
        "pce_health" => Some(&PCE_HEALTH),
        "internal" => Some(&ALERT),
        "tetragon" => Some(&TETRAGON),
        "host_metrics" => Some(&HOST_METRICS),
        "port_counters" => Some(&PORT_COUNTERS),
        _ => None,
    }
}

/// Whether `pattern` (a catalogue path) covers `path`: `path` is the pattern or a prefix
/// of it, or reaches below a final `*`.
fn covers(pattern: &str, path: &str) -> bool {
    let mut want = pattern.split('.');
    for seg in path.split('.') {
        match want.next() {
            Some("*") => return true,
            Some("<key>") => {}
            Some(p) if p == seg => {}
            _ => return false,
        }
    }
    true
}

impl Catalogue {
    /// Whether the records have the field `path` (or an object at it).
    pub fn knows(&self, path: &str) -> bool {
        self.fields.iter().any(|f| covers(f.path, path))
    }
}

/// Whether any of `catalogues` knows `path`.
pub fn known(catalogues: &[&Catalogue], path: &str) -> bool {
    catalogues.iter().any(|c| c.knows(path))
}

/// The paths of `catalogues` to suggest instead of an unknown one: each listed path,
/// with `<key>` and `*` left as they are written.
pub fn candidates<'a>(catalogues: &'a [&'a Catalogue]) -> impl Iterator<Item = &'static str> + 'a {
    catalogues
        .iter()
        .flat_map(|c| c.fields.iter().map(|f| f.path))
}

/// The catalogue as a Markdown table per kind (the README's field tables).
pub fn markdown() -> String {
    let mut out = String::new();
    for c in ALL {
        out.push_str(&format!(
            "#### `{}`: {}\n\n| field | what it holds |\n|---|---|\n",
            c.kind, c.about
        ));
        for fd in c.fields {
            out.push_str(&format!("| `{}` | {} |\n", fd.path, fd.description));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_cover_paths_prefixes_keys_and_free_objects() {
        assert!(PCE_TRAFFIC.knows("service.port"));
        assert!(PCE_TRAFFIC.knows("service"));
        assert!(PCE_TRAFFIC.knows("dst.labels.role"));
        assert!(PCE_TRAFFIC.knows("src.workload"));
        assert!(!PCE_TRAFFIC.knows("service.prot"));
        assert!(!PCE_TRAFFIC.knows("dst.labels.role.x"));
        assert!(PCE_EVENTS.knows("notifications.info.associated_user.supplied_username"));
        assert!(ALERT.knows("group.src.ip"));
        assert!(!ALERT.knows("groups"));
        assert_eq!(of_source("file"), None);
        assert_eq!(of_source("internal"), Some(&ALERT));
    }

    fn leaves(v: &serde_json::Value, at: &str, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) if !m.is_empty() => {
                for (k, x) in m {
                    let p = if at.is_empty() {
                        k.clone()
                    } else {
                        format!("{at}.{k}")
                    };
                    leaves(x, &p, out);
                }
            }
            serde_json::Value::Array(items) if !items.is_empty() => {
                for x in items {
                    leaves(x, at, out);
                }
            }
            _ => out.push(at.to_string()),
        }
    }

    #[test]
    fn every_sample_is_json_whose_fields_the_catalogue_knows() {
        for c in ALL {
            let v: serde_json::Value = serde_json::from_str(c.sample).expect(c.kind);
            let mut paths = Vec::new();
            leaves(&v, "", &mut paths);
            for p in paths {
                assert!(
                    c.knows(&p),
                    "the {} sample has `{p}`, not in the catalogue",
                    c.kind
                );
            }
        }
    }

    #[test]
    fn every_path_is_a_valid_field_path_and_described_once() {
        for c in ALL {
            let mut seen = std::collections::BTreeSet::new();
            for fd in c.fields {
                assert!(seen.insert(fd.path), "{} lists `{}` twice", c.kind, fd.path);
                assert!(!fd.description.is_empty(), "{} `{}`", c.kind, fd.path);
                assert!(
                    crate::event::FieldPath::parse(fd.path).is_ok(),
                    "{}",
                    fd.path
                );
            }
        }
    }
}
