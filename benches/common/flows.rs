//! Flow-shaped records for the benchmarks: Illumio PCE traffic flows with every field of
//! the shape filled, deterministic per index.

#![allow(dead_code, unreachable_pub)]

use std::fmt::Write as _;

/// 2024-05-01T00:00:00Z.
pub(crate) const BASE_EPOCH: i64 = 1_714_521_600;

/// SplitMix64: a deterministic, well-mixed value per index.
pub(crate) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

pub(crate) fn pick<'a>(items: &[&'a str], h: u64) -> &'a str {
    items[(h % items.len() as u64) as usize]
}

pub(crate) fn rfc3339(epoch: i64) -> String {
    chrono::DateTime::from_timestamp(epoch, 0)
        .expect("in range")
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

const ROLES: &[&str] = &[
    "web", "api", "db", "cache", "queue", "batch", "proxy", "auth",
];
const APPS: &[&str] = &[
    "payments", "checkout", "crm", "erp", "billing", "identity", "hr", "shop",
];
const ENVS: &[&str] = &["prod", "staging", "dev", "qa"];
const LOCS: &[&str] = &["fra", "iad", "aws-euw1", "az-wus2"];
const OS: &[&str] = &["linux", "linux", "linux", "windows"];
const MODES: &[&str] = &["visibility_only", "selective", "full", "idle"];
const PROCESSES: &[&str] = &[
    "nginx",
    "postgres",
    "java",
    "redis-server",
    "sshd",
    "httpd",
    "mysqld",
    "svchost.exe",
    "node",
    "envoy",
];
const PORTS: &[u16] = &[443, 5432, 8080, 6379, 22, 80, 3306, 3389, 9092, 8443];
const STATES: &[&str] = &["A", "C", "T", "S"];
const DIRECTIONS: &[&str] = &["outbound", "inbound"];

/// One flow record, one line, without its newline. Values vary by index; nothing is
/// random. The source address is always in 10.0.0.0/8, never in 192.0.2.0/24.
pub(crate) fn write_flow(out: &mut String, i: u64) {
    write_flow_keys(out, i, None);
}

/// Like [`write_flow`]; with `src_keys`, the source address is one of that many.
pub(crate) fn write_flow_keys(out: &mut String, i: u64, src_keys: Option<u64>) {
    let h = mix(i);
    let h2 = mix(i ^ 0xdead_beef_cafe_f00d);
    let role_i = h % ROLES.len() as u64;
    let app_i = (h >> 8) % APPS.len() as u64;
    let env_i = (h >> 16) % ENVS.len() as u64;
    let loc_i = (h >> 24) % LOCS.len() as u64;
    let role = ROLES[role_i as usize];
    let app = APPS[app_i as usize];
    let env = ENVS[env_i as usize];
    let loc = LOCS[loc_i as usize];
    let host_n = (h >> 32) % 64;
    let name = format!("{app}-{role}-{host_n:02}");
    let hostname = format!("{name}.{loc}.corp");
    let src_ip = match src_keys {
        Some(k) => {
            let k = mix(i ^ 0x5eed) % k.max(1);
            format!("10.200.{}.{}", k / 250, 1 + k % 250)
        }
        None => format!(
            "10.{}.{}.{}",
            (h >> 40) % 256,
            (h >> 48) % 256,
            1 + (h >> 56) % 254
        ),
    };
    let dst_ip = format!(
        "10.{}.{}.{}",
        h2 % 256,
        (h2 >> 8) % 256,
        1 + (h2 >> 16) % 254
    );
    let port_i = (h2 >> 24) % PORTS.len() as u64;
    let port = PORTS[port_i as usize];
    let process = PROCESSES[port_i as usize % PROCESSES.len()];
    let proto = if (h2 >> 28) % 10 == 0 { 17 } else { 6 };
    let decision = match (h2 >> 32) % 20 {
        0..=12 => "allowed",
        13..=16 => "potentially_blocked",
        17..=18 => "blocked",
        _ => "unknown",
    };
    let last = BASE_EPOCH + (i / 16) as i64;
    let first = last - ((h2 >> 40) % 3600) as i64;

    out.push_str("{\"src\":{\"ip\":\"");
    out.push_str(&src_ip);
    let _ = write!(
        out,
        "\",\"workload\":{{\"href\":\"/orgs/1/workloads/{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}\"",
        h as u32,
        (h >> 32) as u16,
        (h >> 48) & 0xfff,
        h2 & 0xfff,
        (h2 >> 16) & 0xffff_ffff_ffff
    );
    let _ = write!(
        out,
        ",\"name\":\"{name}\",\"hostname\":\"{hostname}\",\"labels\":[\
         {{\"href\":\"/orgs/1/labels/{}\",\"key\":\"role\",\"value\":\"{role}\"}},\
         {{\"href\":\"/orgs/1/labels/{}\",\"key\":\"app\",\"value\":\"{app}\"}},\
         {{\"href\":\"/orgs/1/labels/{}\",\"key\":\"env\",\"value\":\"{env}\"}},\
         {{\"href\":\"/orgs/1/labels/{}\",\"key\":\"loc\",\"value\":\"{loc}\"}}],",
        100 + role_i,
        200 + app_i,
        300 + env_i,
        400 + loc_i
    );
    let _ = write!(
        out,
        "\"managed\":{},\"os_type\":\"{}\",\"enforcement_mode\":\"{}\"}}}},",
        (h >> 20) % 8 != 0,
        pick(OS, h >> 36),
        pick(MODES, h >> 44)
    );
    out.push_str("\"dst\":{\"ip\":\"");
    out.push_str(&dst_ip);
    out.push('"');
    if (h2 >> 36) % 2 == 0 {
        let dst_role = pick(ROLES, h2 >> 4);
        let dst_app = pick(APPS, h2 >> 12);
        let _ = write!(
            out,
            ",\"fqdn\":\"{dst_app}-{dst_role}-{:02}.{loc}.corp\"",
            (h2 >> 20) % 64
        );
    }
    let _ = write!(
        out,
        "}},\"service\":{{\"port\":{port},\"proto\":{proto},\"process_name\":\"{process}\"}},\
         \"num_connections\":{},\"state\":\"{}\",\
         \"timestamp_range\":{{\"first_detected\":\"{}\",\"last_detected\":\"{}\"}},\
         \"policy_decision\":\"{decision}\",\"flow_direction\":\"{}\",\
         \"dst_bi\":{},\"dst_bo\":{},\"timestamp\":\"{}\"}}",
        1 + (h2 >> 44) % 50,
        pick(STATES, h >> 52),
        rfc3339(first),
        rfc3339(last),
        pick(DIRECTIONS, h2 >> 58),
        (h2 >> 8) % 2_000_000,
        (h >> 8) % 5_000_000,
        rfc3339(last),
    );
}
