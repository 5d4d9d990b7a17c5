//! The simulated estate: labels, workloads, IP lists and the endpoints flows use, all
//! generated deterministically from the seed.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use chrono::{DateTime, SecondsFormat, Utc};

use ipnet::Ipv4Net;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use uuid::Uuid;

/// Mixes two numbers into one well-spread seed (splitmix64).
pub(crate) fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A random generator for one stream (`kind`) and one index (e.g. a minute).
pub(crate) fn stream_rng(seed: u64, kind: u64, index: i64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix(mix(seed, kind), index as u64))
}

/// A UUID drawn from `rng`.
pub(crate) fn det_uuid(rng: &mut impl Rng) -> Uuid {
    uuid::Builder::from_random_bytes(rng.random()).into_uuid()
}

/// A label object.
#[derive(Debug, Clone)]
pub struct Label {
    /// `/orgs/1/labels/N`.
    pub href: String,
    /// `role`, `app`, `env` or `loc`.
    pub key: String,
    /// The value, e.g. `Web`.
    pub value: String,
    /// When it was created through the API (`None` for the generated estate).
    pub created_at: Option<DateTime<Utc>>,
}

/// A managed workload or a Kubernetes workload.
#[derive(Debug, Clone)]
pub struct Workload {
    /// `/orgs/1/workloads/<uuid>` or `/orgs/1/kubernetes_workloads/<uuid>`.
    pub href: String,
    /// The name.
    pub name: String,
    /// The hostname: `None` for Kubernetes workloads, sometimes empty.
    pub hostname: Option<String>,
    /// The address flows use.
    pub ip: Ipv4Addr,
    /// Indexes into [`Estate::labels`].
    pub labels: Vec<usize>,
    /// `linux`, `windows` or `unknown`.
    pub os_type: &'static str,
    /// `idle`, `visibility_only`, `selective` or `full`.
    pub enforcement_mode: &'static str,
    /// True for Kubernetes workloads.
    pub kubernetes: bool,
    /// The VEN agent href (`/orgs/1/agents/N`).
    pub agent_href: String,
    /// The VEN href (`/orgs/1/vens/<uuid>`).
    pub ven_href: String,
    /// Index of the role value, used to pick services.
    pub role: usize,
    /// When it was last changed through the API (`None` while it never was).
    pub updated_at: Option<DateTime<Utc>>,
    pub(crate) endpoint_json: String,
}

/// An IP list.
#[derive(Debug, Clone)]
pub struct IpList {
    /// The numeric id (the last href segment).
    pub id: u64,
    /// The name, e.g. `Any (0.0.0.0/0 and ::/0)`.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Ranges as `(from_ip, to_ip?, exclusion)` in CIDR or address form.
    pub ranges: Vec<(String, Option<String>, bool)>,
    /// FQDN entries.
    pub fqdns: Vec<String>,
    nets: Vec<Ipv4Net>,
}

impl IpList {
    /// The href under a policy state (`draft` or `active`).
    pub fn href(&self, org: u64, pstate: &str) -> String {
        format!("/orgs/{org}/sec_policy/{pstate}/ip_lists/{}", self.id)
    }

    /// True when `ip` falls in one of the list's IPv4 ranges.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.nets.iter().any(|n| n.contains(&ip))
    }
}

/// An endpoint with no workload: an internet destination (with `fqdn`), a corporate
/// client or a scanner.
#[derive(Debug, Clone)]
pub struct IpEndpoint {
    /// The address.
    pub ip: Ipv4Addr,
    /// The DNS name, for internet destinations.
    pub fqdn: Option<String>,
    /// Indexes into [`Estate::ip_lists`].
    pub lists: Vec<usize>,
    pub(crate) json: String,
}

/// A network object flows reference.
#[derive(Debug, Clone)]
pub struct Network {
    /// `/orgs/1/networks/<uuid>`.
    pub href: String,
    /// The name.
    pub name: String,
}

/// A user of the PCE.
#[derive(Debug, Clone)]
pub struct User {
    /// `/users/N`.
    pub href: String,
    /// The login name.
    pub username: String,
}

/// The whole simulated estate.
#[derive(Debug, Clone)]
pub struct Estate {
    /// The org id.
    pub org: u64,
    /// The PCE's FQDN (`pce_fqdn`).
    pub pce_fqdn: String,
    /// All labels.
    pub labels: Vec<Label>,
    /// Managed workloads first, then Kubernetes workloads.
    pub workloads: Vec<Workload>,
    /// IP lists; index 0 is `Any`.
    pub ip_lists: Vec<IpList>,
    /// Internet destinations (with `fqdn`).
    pub internet: Vec<IpEndpoint>,
    /// Unmanaged, IP-only endpoints (corporate clients).
    pub unmanaged: Vec<IpEndpoint>,
    /// Scanning sources (in the `Scanners` list).
    pub scanners: Vec<IpEndpoint>,
    /// Networks: 0 Corporate, 1 External, 2 the container network.
    pub networks: Vec<Network>,
    /// PCE users.
    pub users: Vec<User>,
    /// The container cluster `(href, name)`.
    pub container_cluster: (String, String),
    /// Index of the database workload that exfiltrates.
    pub exfil_source: usize,
    /// Index into [`Estate::internet`] of the exfiltration destination.
    pub exfil_destination: usize,
}

/// The enforcement modes a workload can be in.
pub const ENFORCEMENT_MODES: [&str; 4] = ["idle", "visibility_only", "selective", "full"];

/// When the generated estate was created and last updated.
const GENERATED_AT: &str = "2025-04-01T08:00:00.000Z";

fn stamp(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(
        || GENERATED_AT.to_string(),
        |t| t.to_rfc3339_opts(SecondsFormat::Millis, true),
    )
}

/// Role values; services follow the role.
pub(crate) const ROLES: [&str; 8] = [
    "Web",
    "App",
    "DB",
    "Cache",
    "DomainController",
    "Jumpbox",
    "LoadBalancer",
    "Queue",
];
/// Index of `DB` in [`ROLES`].
pub(crate) const ROLE_DB: usize = 2;
const APPS: [&str; 6] = [
    "Payments",
    "Storefront",
    "HR",
    "Billing",
    "Analytics",
    "CoreServices",
];
const ENVS: [&str; 3] = ["Production", "Staging", "Development"];
const LOCS: [&str; 3] = ["Tokyo", "Osaka", "AWS-ap-northeast-1"];
const PODS: [&str; 8] = [
    "frontend",
    "cartservice",
    "checkoutservice",
    "paymentservice",
    "redis-cart",
    "adservice",
    "loadgenerator",
    "currencyservice",
];
const INTERNET: [&str; 10] = [
    "api.github.com",
    "login.microsoftonline.com",
    "updates.ubuntu.example.net",
    "pypi.org",
    "registry.npmjs.org",
    "s3.ap-northeast-1.amazonaws.com",
    "ntp.nict.jp",
    "crl.pki.goog",
    "dl.google.com",
    "files.transfer-drop.net",
];

impl Estate {
    /// Generates the estate for `seed` and `org`.
    pub fn generate(seed: u64, org: u64) -> Estate {
        let mut rng = stream_rng(seed, 0xE57A7E, 0);
        let labels = gen_labels(&mut rng, org);
        let networks = gen_networks(&mut rng, org);
        let ip_lists = gen_ip_lists(&mut rng);
        let mut workloads = gen_workloads(&mut rng, org, &labels);
        workloads.extend(gen_k8s(&mut rng, org, &labels));
        for w in &mut workloads {
            w.endpoint_json = workload_endpoint_json(w, &labels);
        }
        let internet = gen_internet(&mut rng, org, &ip_lists);
        let unmanaged = gen_unmanaged(&mut rng, org, &ip_lists);
        let scanners = (0..3)
            .map(|_| {
                let ip = Ipv4Addr::new(203, 0, 113, rng.random_range(2..250));
                ip_endpoint(org, ip, None, &ip_lists)
            })
            .collect();
        let exfil_source = workloads
            .iter()
            .position(|w| w.role == ROLE_DB && !w.kubernetes)
            .unwrap_or(0);
        let users = ["admin", "secops", "netops", "auditor"]
            .iter()
            .enumerate()
            .map(|(i, u)| User {
                href: format!("/users/{}", 11 + i),
                username: format!("{u}@corp.example"),
            })
            .collect();
        let container_cluster = (
            format!("/orgs/{org}/container_clusters/{}", det_uuid(&mut rng)),
            "prod_k8s".to_string(),
        );
        Estate {
            org,
            pce_fqdn: "pce.corp.example".to_string(),
            labels,
            exfil_destination: internet.len() - 1,
            workloads,
            ip_lists,
            internet,
            unmanaged,
            scanners,
            networks,
            users,
            container_cluster,
            exfil_source,
        }
    }

    /// The managed (non-Kubernetes) workloads.
    pub fn managed_workloads(&self) -> impl Iterator<Item = &Workload> {
        self.workloads.iter().filter(|w| !w.kubernetes)
    }

    /// The flow-endpoint JSON of an unmanaged address outside the estate's lists of
    /// endpoints (the client pool of dense simulations): `{ip, ip_lists}`.
    pub(crate) fn client_json(&self, ip: Ipv4Addr) -> String {
        ip_endpoint(self.org, ip, None, &self.ip_lists).json
    }

    /// Label objects `{href, key, value}` of workload `w`.
    pub fn label_objects(&self, w: &Workload) -> Vec<Value> {
        w.labels
            .iter()
            .map(|&i| label_json(&self.labels[i]))
            .collect()
    }

    /// The REST representation of a label.
    pub fn label_rest(&self, l: &Label) -> Value {
        let at = stamp(l.created_at);
        let by = match l.created_at {
            Some(_) => self.api_user().href.as_str(),
            None => "/users/1",
        };
        json!({
            "href": l.href, "key": l.key, "value": l.value,
            "created_at": at, "updated_at": at,
            "created_by": {"href": by}, "updated_by": {"href": by},
            "deleted": false,
        })
    }

    /// The user the API key belongs to: writes are made in their name.
    pub fn api_user(&self) -> &User {
        &self.users[0]
    }

    /// The index of the label with exactly this href.
    pub fn label_index(&self, href: &str) -> Option<usize> {
        self.labels.iter().position(|l| l.href == href)
    }

    /// The index of the label with exactly this key and value.
    pub fn find_label(&self, key: &str, value: &str) -> Option<usize> {
        self.labels
            .iter()
            .position(|l| l.key == key && l.value == value)
    }

    /// The index (into [`Estate::workloads`]) of the managed workload with this href.
    pub fn managed_workload_index(&self, href: &str) -> Option<usize> {
        self.workloads
            .iter()
            .position(|w| !w.kubernetes && w.href == href)
    }

    /// Adds a label `/orgs/{org}/labels/{next id}` created at `at`; returns its index.
    pub(crate) fn add_label(&mut self, key: &str, value: &str, at: DateTime<Utc>) -> usize {
        let next = self
            .labels
            .iter()
            .filter_map(|l| l.href.rsplit('/').next()?.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
            + 1;
        self.labels.push(Label {
            href: format!("/orgs/{}/labels/{next}", self.org),
            key: key.to_string(),
            value: value.to_string(),
            created_at: Some(at),
        });
        self.labels.len() - 1
    }

    /// Replaces workload `i`'s labels and enforcement mode, as a PUT does; flows and
    /// events show the new ones from then on.
    pub(crate) fn update_workload(
        &mut self,
        i: usize,
        labels: Vec<usize>,
        enforcement_mode: &'static str,
        at: DateTime<Utc>,
    ) {
        let w = &mut self.workloads[i];
        w.labels = labels;
        w.enforcement_mode = enforcement_mode;
        w.updated_at = Some(at);
        w.endpoint_json = workload_endpoint_json(w, &self.labels);
    }

    /// The REST representation of an IP list under `pstate`.
    pub fn ip_list_rest(&self, l: &IpList, pstate: &str) -> Value {
        let ranges: Vec<Value> = l
            .ranges
            .iter()
            .map(|(from, to, exclusion)| match to {
                Some(to) => json!({"from_ip": from, "to_ip": to, "exclusion": exclusion}),
                None => json!({"from_ip": from, "exclusion": exclusion}),
            })
            .collect();
        let fqdns: Vec<Value> = l.fqdns.iter().map(|f| json!({"fqdn": f})).collect();
        json!({
            "href": l.href(self.org, pstate),
            "created_at": "2025-04-01T08:00:00.000Z", "updated_at": "2025-04-01T08:00:00.000Z",
            "deleted_at": null, "created_by": {"href": "/users/0"}, "updated_by": {"href": "/users/0"},
            "deleted_by": null, "name": l.name, "description": l.description,
            "ip_ranges": ranges, "fqdns": fqdns,
        })
    }

    /// The REST representation of a managed workload (`GET /workloads`).
    pub fn workload_rest(&self, w: &Workload) -> Value {
        json!({
            "href": w.href, "deleted": false, "name": w.name, "description": null,
            "hostname": w.hostname, "public_ip": null,
            "interfaces": [{"name": "eth0", "cidr_block": 16, "link_state": "up",
                "network": {"href": self.networks[0].href}, "loopback": false,
                "address": w.ip.to_string(), "default_gateway_address": null}],
            "os_type": w.os_type, "online": true, "enforcement_mode": w.enforcement_mode,
            "visibility_level": "flow_summary", "managed": true,
            "labels": self.label_objects(w),
            "agent": {"href": w.agent_href, "status": {"status": "active", "uid": null}},
            "ven": {"href": w.ven_href},
            "created_at": GENERATED_AT, "updated_at": stamp(w.updated_at),
        })
    }
}

fn label_json(l: &Label) -> Value {
    json!({"href": l.href, "key": l.key, "value": l.value})
}

fn gen_labels(rng: &mut ChaCha8Rng, org: u64) -> Vec<Label> {
    let mut next = rng.random_range(1..40u64);
    let mut labels = Vec::new();
    for (key, values) in [
        ("role", &ROLES[..]),
        ("app", &APPS[..]),
        ("env", &ENVS[..]),
        ("loc", &LOCS[..]),
    ] {
        for v in values {
            labels.push(Label {
                href: format!("/orgs/{org}/labels/{next}"),
                key: key.to_string(),
                value: (*v).to_string(),
                created_at: None,
            });
            next += rng.random_range(1..4u64);
        }
    }
    labels
}

fn label_index(labels: &[Label], key: &str, i: usize) -> usize {
    let start = labels.iter().position(|l| l.key == key).unwrap_or(0);
    start + i
}

fn gen_networks(rng: &mut ChaCha8Rng, org: u64) -> Vec<Network> {
    ["Corporate", "External", "prod_k8s container network"]
        .iter()
        .map(|name| Network {
            href: format!("/orgs/{org}/networks/{}", det_uuid(rng)),
            name: (*name).to_string(),
        })
        .collect()
}

fn net(s: &str) -> Vec<Ipv4Net> {
    s.parse().map(|n| vec![n]).unwrap_or_default()
}

fn gen_ip_lists(rng: &mut ChaCha8Rng) -> Vec<IpList> {
    let scanners_id = rng.random_range(2..20u64);
    let corporate_id = scanners_id + rng.random_range(1..10u64);
    vec![
        IpList {
            id: 1,
            name: "Any (0.0.0.0/0 and ::/0)".into(),
            description: None,
            ranges: vec![
                ("0.0.0.0/0".into(), None, false),
                ("::/0".into(), None, false),
            ],
            fqdns: vec![],
            nets: net("0.0.0.0/0"),
        },
        IpList {
            id: scanners_id,
            name: "Scanners".into(),
            description: Some("Known external scanners".into()),
            ranges: vec![
                ("203.0.113.0/24".into(), None, false),
                ("198.51.100.7".into(), None, false),
            ],
            fqdns: vec![],
            nets: [net("203.0.113.0/24"), net("198.51.100.7/32")].concat(),
        },
        IpList {
            id: corporate_id,
            name: "Corporate".into(),
            description: Some("Office and VPN client ranges".into()),
            ranges: vec![
                ("192.168.0.0/16".into(), None, false),
                ("192.168.99.0".into(), Some("192.168.99.255".into()), true),
            ],
            fqdns: vec!["vpn.corp.example".into(), "*.corp.example".into()],
            nets: net("192.168.0.0/16"),
        },
    ]
}

fn gen_workloads(rng: &mut ChaCha8Rng, org: u64, labels: &[Label]) -> Vec<Workload> {
    let n = rng.random_range(40..=80usize);
    (0..n)
        .map(|i| {
            // The first workload is a database, so exfiltration always has a source.
            let drawn = rng.random_range(0..ROLES.len());
            let role = if i == 0 { ROLE_DB } else { drawn };
            let app = rng.random_range(0..APPS.len());
            let env = rng.random_range(0..ENVS.len());
            let loc = rng.random_range(0..LOCS.len());
            let windows = matches!(ROLES[role], "DomainController" | "Jumpbox");
            let name = format!(
                "{}-{}-{}{:02}",
                APPS[app].to_lowercase(),
                ROLES[role].to_lowercase(),
                &ENVS[env][..4].to_lowercase(),
                i
            );
            let hostname = if i % 17 == 5 {
                String::new()
            } else {
                name.clone()
            };
            let uuid = det_uuid(rng);
            Workload {
                href: format!("/orgs/{org}/workloads/{uuid}"),
                name,
                hostname: Some(hostname),
                ip: Ipv4Addr::new(
                    10,
                    1 + env as u8,
                    rng.random_range(0..64),
                    rng.random_range(2..254),
                ),
                labels: vec![
                    label_index(labels, "role", role),
                    label_index(labels, "app", app),
                    label_index(labels, "env", env),
                    label_index(labels, "loc", loc),
                ],
                os_type: if windows { "windows" } else { "linux" },
                enforcement_mode: ENFORCEMENT_MODES[rng.random_range(0..4)],
                kubernetes: false,
                agent_href: format!("/orgs/{org}/agents/{}", 1300 + i),
                ven_href: format!("/orgs/{org}/vens/{uuid}"),
                role,
                updated_at: None,
                endpoint_json: String::new(),
            }
        })
        .collect()
}

fn gen_k8s(rng: &mut ChaCha8Rng, org: u64, labels: &[Label]) -> Vec<Workload> {
    let n = rng.random_range(6..=PODS.len());
    let app = label_index(labels, "app", 1);
    let env = label_index(labels, "env", 0);
    let loc = label_index(labels, "loc", 2);
    PODS[..n]
        .iter()
        .map(|pod| {
            let uuid = det_uuid(rng);
            Workload {
                href: format!("/orgs/{org}/kubernetes_workloads/{uuid}"),
                name: (*pod).to_string(),
                hostname: None,
                ip: Ipv4Addr::new(10, 96, rng.random_range(0..255), rng.random_range(2..254)),
                labels: vec![app, env, loc],
                os_type: "unknown",
                enforcement_mode: "visibility_only",
                kubernetes: true,
                agent_href: String::new(),
                ven_href: String::new(),
                role: 1,
                updated_at: None,
                endpoint_json: String::new(),
            }
        })
        .collect()
}

fn workload_endpoint_json(w: &Workload, labels: &[Label]) -> String {
    let labels: Vec<Value> = w.labels.iter().map(|&i| label_json(&labels[i])).collect();
    let v = json!({
        "ip": w.ip.to_string(),
        "workload": {
            "href": w.href, "name": w.name, "hostname": w.hostname,
            "os_type": w.os_type, "enforcement_mode": w.enforcement_mode,
            "endpoint": false, "managed": true, "labels": labels,
        }
    });
    v.to_string()
}

fn ip_endpoint(org: u64, ip: Ipv4Addr, fqdn: Option<String>, lists: &[IpList]) -> IpEndpoint {
    let member: Vec<usize> = (0..lists.len())
        .filter(|&i| lists[i].contains(ip))
        .collect();
    let mut json = format!("{{\"ip\":\"{ip}\"");
    if let Some(f) = &fqdn {
        let _ = write!(json, ",\"fqdn\":{}", Value::from(f.as_str()));
    }
    json.push_str(",\"ip_lists\":[");
    for (n, &i) in member.iter().enumerate() {
        if n > 0 {
            json.push(',');
        }
        let l = &lists[i];
        let _ = write!(
            json,
            "{{\"href\":\"{}\",\"name\":{}}}",
            l.href(org, "active"),
            Value::from(l.name.as_str())
        );
    }
    json.push_str("]}");
    IpEndpoint {
        ip,
        fqdn,
        lists: member,
        json,
    }
}

fn gen_internet(rng: &mut ChaCha8Rng, org: u64, lists: &[IpList]) -> Vec<IpEndpoint> {
    INTERNET
        .iter()
        .map(|f| {
            let ip = Ipv4Addr::new(
                rng.random_range(13..200),
                rng.random_range(0..255),
                rng.random_range(0..255),
                rng.random_range(1..254),
            );
            ip_endpoint(org, ip, Some((*f).to_string()), lists)
        })
        .collect()
}

fn gen_unmanaged(rng: &mut ChaCha8Rng, org: u64, lists: &[IpList]) -> Vec<IpEndpoint> {
    let n = rng.random_range(10..20);
    (0..n)
        .map(|i| {
            let ip = if i % 4 == 3 {
                Ipv4Addr::new(10, 250, rng.random_range(0..255), rng.random_range(1..254))
            } else {
                Ipv4Addr::new(192, 168, rng.random_range(1..40), rng.random_range(1..254))
            };
            ip_endpoint(org, ip, None, lists)
        })
        .collect()
}
