//! The dispatcher against the behaviour of Alertmanager's aggregation groups and its
//! notification log (dispatch/dispatch.go, notify/notify.go `DedupStage.needsUpdate`).

use chrono::{Duration, TimeZone, Utc};

use super::*;
use crate::event::AlertWindow;
use crate::sinks::delivery::sample_alert;

fn t(s: i64) -> Timestamp {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap() + Duration::seconds(s)
}

fn policy() -> Policy {
    Policy {
        group_by: vec![FieldPath::parse("stage").unwrap()],
        group_wait: Duration::seconds(30),
        group_interval: Duration::minutes(5),
        repeat_interval: Duration::hours(4),
        send_resolved: true,
        ..Policy::default()
    }
}

/// An alert of rule `stage` for `ip`, as its stage reports it.
fn alert(stage: &str, ip: &str, status: AlertStatus, updates: u64) -> Alert {
    let mut a = sample_alert();
    a.stage = stage.into();
    a.group_key = format!("src.ip={ip}");
    a.group = serde_json::json!({"src": {"ip": ip}});
    a.window = AlertWindow {
        start: t(0),
        end: t(0),
    };
    a.id = format!("{stage}/{ip}");
    a.status = status;
    a.updates = updates;
    a.episode = true;
    a
}

fn firing(stage: &str, ip: &str) -> Alert {
    alert(stage, ip, AlertStatus::Firing, 0)
}

fn resolved(stage: &str, ip: &str) -> Alert {
    alert(stage, ip, AlertStatus::Resolved, 3)
}

struct Run {
    d: Dispatcher,
    sent: Vec<(i64, Planned)>,
}

impl Run {
    fn new(p: Policy) -> Run {
        Run {
            d: Dispatcher::new(p),
            sent: Vec::new(),
        }
    }

    fn give(&mut self, a: Alert, at: i64) -> Ingested {
        let form = a.to_value();
        self.d.ingest(&[], a, &form, t(at))
    }

    /// Moves time to `to` second by second, looking at due groups (as the sink's worker,
    /// which wakes at each group's due time).
    fn until(&mut self, to: i64) {
        self.until_muting(to, &mut |_| false);
    }

    fn until_muting(&mut self, to: i64, muted: &mut dyn FnMut(&Alert) -> bool) {
        while let Some(due) = self.d.next_due() {
            if due > t(to) {
                break;
            }
            for f in self.d.flush(due, false, muted) {
                if let Some(m) = f.message {
                    self.sent.push(((due - t(0)).num_seconds(), m));
                }
            }
        }
    }

    fn summary(&self) -> Vec<(i64, Vec<String>, bool)> {
        self.sent
            .iter()
            .map(|(at, m)| {
                (
                    *at,
                    m.alerts
                        .iter()
                        .map(|(c, a)| format!("{}:{}", c.as_str(), a.group_key))
                        .collect(),
                    m.reminder,
                )
            })
            .collect()
    }
}

fn ids(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn alerts_of_one_group_within_group_wait_go_out_as_one_notification() {
    let mut r = Run::new(policy());
    assert!(matches!(
        r.give(firing("burst", "a"), 0),
        Ingested::Held(_, true)
    ));
    assert!(matches!(
        r.give(firing("burst", "b"), 10),
        Ingested::Held(_, false)
    ));
    r.give(firing("burst", "c"), 29);
    // Another rule is another group.
    r.give(firing("scan", "a"), 5);
    r.until(60);
    assert_eq!(
        r.summary(),
        vec![
            (
                30,
                ids(&["new:src.ip=a", "new:src.ip=b", "new:src.ip=c"]),
                false
            ),
            (35, ids(&["new:src.ip=a"]), false),
        ]
    );
    assert_eq!(r.sent[0].1.labels, serde_json::json!({"stage": "burst"}));
}

#[test]
fn a_new_alert_in_a_notified_group_waits_for_group_interval() {
    let mut r = Run::new(policy());
    r.give(firing("burst", "a"), 0);
    r.until(30);
    r.give(firing("burst", "b"), 40);
    r.until(329);
    assert_eq!(r.sent.len(), 1, "b waits for the group's next look");
    r.until(330);
    assert_eq!(
        r.summary()[1],
        (330, ids(&["new:src.ip=b", "firing:src.ip=a"]), false)
    );
}

#[test]
fn updates_of_alerts_already_notified_wait_for_the_reminder() {
    let mut r = Run::new(policy());
    r.give(firing("burst", "a"), 0);
    r.until(30);
    // The episode goes on: updates are held in their newest form, nothing is sent.
    for i in 1..100 {
        r.give(
            alert("burst", "a", AlertStatus::Firing, i as u64),
            30 + i * 60,
        );
    }
    // An older report arriving late is ignored.
    assert_eq!(
        r.give(alert("burst", "a", AlertStatus::Firing, 5), 6000),
        Ingested::Stale
    );
    r.until(4 * 3600 + 29);
    assert_eq!(r.sent.len(), 1, "{:?}", r.summary());
    // Four hours after the last notification, at the group's next look: a reminder
    // carrying the newest form of the alert.
    r.until(4 * 3600 + 30);
    assert_eq!(r.sent.len(), 2);
    let (at, m) = &r.sent[1];
    assert_eq!(*at, 4 * 3600 + 30);
    assert!(m.reminder);
    assert_eq!(m.alerts[0].0, Change::Firing);
    assert_eq!(m.alerts[0].1.updates, 99);
}

#[test]
fn a_resolved_alert_is_notified_once_with_send_resolved_and_never_without() {
    for send_resolved in [true, false] {
        let mut r = Run::new(Policy {
            send_resolved,
            ..policy()
        });
        r.give(firing("burst", "a"), 0);
        r.give(firing("burst", "b"), 0);
        r.until(30);
        r.give(resolved("burst", "a"), 100);
        r.until(3 * 3600);
        let s = r.summary();
        if send_resolved {
            assert_eq!(
                s,
                vec![
                    (30, ids(&["new:src.ip=a", "new:src.ip=b"]), false),
                    (330, ids(&["firing:src.ip=b", "resolved:src.ip=a"]), false),
                ]
            );
        } else {
            assert_eq!(s, vec![(30, ids(&["new:src.ip=a", "new:src.ip=b"]), false)]);
        }
        assert!(!r.d.holds("burst/a"), "a resolved alert leaves its group");
        // The last firing one resolves: notified once (or not at all), then the group goes.
        r.give(resolved("burst", "b"), 3 * 3600 + 10);
        r.until(5 * 3600);
        let after = r.summary().len();
        assert_eq!(after, if send_resolved { 3 } else { 1 });
        if send_resolved {
            assert_eq!(r.summary()[2].1, ids(&["resolved:src.ip=b"]));
        }
        assert_eq!(r.d.groups().count(), 0);
        assert_eq!(r.d.next_due(), None);
    }
}

#[test]
fn a_resolution_before_anyone_was_told_is_not_notified() {
    let mut r = Run::new(policy());
    r.give(firing("burst", "a"), 0);
    r.give(resolved("burst", "a"), 10);
    r.until(3600);
    assert!(r.sent.is_empty());
    assert_eq!(r.d.groups().count(), 0);
    // A resolution of something never held is ignored.
    assert_eq!(r.give(resolved("burst", "z"), 3601), Ingested::Unknown);
}

#[test]
fn reminders_back_off_up_to_the_cap() {
    let mut r = Run::new(Policy {
        group_wait: Duration::zero(),
        group_interval: Duration::minutes(1),
        repeat_interval: Duration::minutes(10),
        repeat_backoff: 2.0,
        max_repeat_interval: Duration::minutes(60),
        ..policy()
    });
    r.give(firing("burst", "a"), 0);
    r.until(6 * 3600);
    let at: Vec<i64> = r.sent.iter().map(|(s, _)| *s / 60).collect();
    // First at 0; reminders after 10, 20, 40, 60, 60... minutes.
    assert_eq!(&at[..7], &[0, 10, 30, 70, 130, 190, 250]);
    assert!(r.sent[1..].iter().all(|(_, m)| m.reminder));
}

#[test]
fn a_new_alert_resets_the_back_off() {
    let mut r = Run::new(Policy {
        group_wait: Duration::zero(),
        group_interval: Duration::minutes(1),
        repeat_interval: Duration::minutes(10),
        repeat_backoff: 2.0,
        ..policy()
    });
    r.give(firing("burst", "a"), 0);
    r.until(31 * 60);
    r.give(firing("burst", "b"), 31 * 60 + 5);
    r.until(3 * 3600);
    let at: Vec<i64> = r.sent.iter().map(|(s, _)| *s / 60).collect();
    assert_eq!(&at[..6], &[0, 10, 30, 32, 42, 62]);
}

#[test]
fn muted_alerts_are_left_out_and_come_back_new() {
    let mut r = Run::new(policy());
    r.give(firing("burst", "a"), 0);
    r.give(firing("burst", "b"), 0);
    let mut mute_b = |a: &Alert| a.group_key == "src.ip=b";
    r.until_muting(30, &mut mute_b);
    assert_eq!(r.summary(), vec![(30, ids(&["new:src.ip=a"]), false)]);
    r.until_muting(330, &mut mute_b);
    assert_eq!(r.sent.len(), 1, "nothing changed while b is muted");
    // Unmuted: b is new at the next look.
    r.until(630);
    assert_eq!(
        r.summary()[1],
        (630, ids(&["new:src.ip=b", "firing:src.ip=a"]), false)
    );
}

#[test]
fn an_hour_over_the_threshold_with_repeat_20m_gives_two_reminders() {
    let mut r = Run::new(Policy {
        repeat_interval: Duration::minutes(20),
        ..policy()
    });
    r.give(firing("burst", "a"), 0);
    for i in 1..60 {
        r.until(i * 60);
        r.give(
            alert("burst", "a", AlertStatus::Firing, i as u64 * 60),
            i * 60,
        );
    }
    r.until(3600);
    r.give(alert("burst", "a", AlertStatus::Resolved, 3600), 3600);
    r.until(3 * 3600);
    let s = r.summary();
    assert_eq!(s.iter().filter(|x| x.2).count(), 2, "{s:?}");
    assert_eq!(s.len(), 4, "first, two reminders, resolved: {s:?}");
    assert_eq!(s[3].1, ids(&["resolved:src.ip=a"]));
}

#[test]
fn the_held_alerts_are_bounded() {
    let mut r = Run::new(Policy {
        max_alerts: 2,
        ..policy()
    });
    r.give(firing("burst", "a"), 0);
    r.give(firing("burst", "b"), 0);
    assert_eq!(r.give(firing("burst", "c"), 0), Ingested::Full);
    // Updates of held alerts still go in.
    assert!(matches!(
        r.give(alert("burst", "a", AlertStatus::Firing, 1), 1),
        Ingested::Held(..)
    ));
    assert_eq!(r.d.held(), 2);
}

#[test]
fn one_notification_carries_at_most_max_per_message_alerts() {
    let mut r = Run::new(policy());
    for i in 0..(MAX_PER_MESSAGE + 7) {
        r.give(firing("burst", &format!("10.0.0.{i}")), 0);
    }
    r.until(30);
    let m = &r.sent[0].1;
    assert_eq!(m.alerts.len(), MAX_PER_MESSAGE);
    assert_eq!(m.omitted.new, 7);
}

#[test]
fn looking_at_everything_sends_what_waits_now() {
    let mut r = Run::new(policy());
    r.give(firing("burst", "a"), 0);
    let f = r.d.flush(t(1), true, &mut |_| false);
    assert_eq!(f.len(), 1);
    assert!(f[0].message.is_some());
    assert_eq!(f[0].group.as_ref().map(|g| g.alerts.len()), Some(0));
}

#[test]
fn one_off_alerts_are_notified_once() {
    let mut r = Run::new(policy());
    let mut once = firing("burst", "a");
    once.episode = false;
    r.give(once, 0);
    r.give(firing("burst", "b"), 0);
    r.until(6 * 3600);
    let s = r.summary();
    assert_eq!(s[0], (30, ids(&["new:src.ip=a", "new:src.ip=b"]), false));
    assert!(
        s[1..].iter().all(|x| x.1 == ids(&["firing:src.ip=b"])),
        "only the episode is reminded of: {s:?}"
    );
    assert!(!r.d.holds("burst/a"));
}
