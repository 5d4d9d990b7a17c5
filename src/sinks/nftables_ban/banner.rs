//! The running `nftables_ban` sink: what a ban decides (allow list, the PCE's address,
//! `max_bans`, a repeat), applying it with `nft`, recording it, reconciling the store with
//! the live sets at start, and recording expiries.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::config::AllowEntry;
use super::nft::{self, NftError};
use super::ruleset::{self, LiveTable};
use crate::event::{Alert, AlertStatus, FieldPath, Timestamp};
use crate::node::internal_event::{BanAllowListed, BanLimitReached, InternalEvent};
use crate::node::{BuildContext, Input, NodeCounters, NodeResult, Sink};
use crate::sinks::delivery::dispatch::Change;
use crate::sinks::delivery::{
    Answer, DeliveryConfig, DeliverySink, Notification, Notifier, SendError,
};
use crate::store::{Ban, BanState, Store, StoreError};
use crate::time::SharedClock;

/// How long the PCE's resolved addresses are trusted before they are looked up again.
const PCE_ADDRESSES_FOR: StdDuration = StdDuration::from_secs(300);
/// How old the PCE's IP lists may be before a ban reads them again.
const NAMES_FOR: chrono::Duration = chrono::Duration::hours(1);
/// How often the keeper looks at the store when nothing is due, and retries a failed
/// reconciliation.
const KEEPER_POLL: chrono::Duration = chrono::Duration::seconds(60);

/// What a sink's bans are decided by (from its configuration).
#[derive(Debug, Clone)]
pub struct BanSettings {
    /// How long a ban lasts.
    pub ttl: StdDuration,
    /// Where the address is in the alert (`None`: the group's one IP address).
    pub ip_field: Option<FieldPath>,
    /// Never banned.
    pub allow: Vec<AllowEntry>,
    /// The most bans active at once.
    pub max_bans: u32,
    /// Change nothing.
    pub dry_run: bool,
    /// The `nft` program.
    pub nft: String,
}

/// Why a ban could not be decided or made.
#[derive(Debug, thiserror::Error)]
pub enum BanError {
    /// The alert names no address to ban, or not an IP address: retrying cannot help.
    #[error("refused: {0}")]
    NoAddress(String),
    /// The allow list names an IP list no PCE connection has: no ban is made until the
    /// allow list can be checked.
    #[error(
        "refused: the allow list names `ip_list:{name}`, {why}: nothing is banned until it can be checked"
    )]
    UnknownIpList {
        /// The list's name.
        name: String,
        /// What is known of it.
        why: String,
    },
    /// The PCE's IP lists could not be read to check the allow list.
    #[error("cannot read the PCE's IP lists to check the allow list: {0}")]
    Names(String),
    /// The PCE's address could not be resolved to make sure it is not banned.
    #[error("cannot resolve the PCE's address `{host}` to make sure it is not banned: {why}")]
    PceAddress {
        /// The host name.
        host: String,
        /// Why.
        why: String,
    },
    /// `nft` is missing, refused the commands (no CAP_NET_ADMIN) or failed.
    #[error(transparent)]
    Nft(#[from] NftError),
    /// The state database could not record the ban.
    #[error("the state database: {0}")]
    Store(#[from] StoreError),
    /// A ban made by hand with a bad TTL.
    #[error("{0}")]
    BadTtl(String),
}

impl BanError {
    /// Whether trying again cannot help (the alert or the configuration is at fault).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            BanError::NoAddress(_) | BanError::UnknownIpList { .. } | BanError::BadTtl(_)
        )
    }
}

/// Why a ban was not made, on purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// In the allow list (or the PCE's own address).
    AllowList {
        /// The entry that covers it.
        entry: String,
    },
    /// `max_bans` bans are active.
    MaxBans {
        /// The sink's `max_bans`.
        max: u32,
    },
}

/// What a ban did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BanOutcome {
    /// Banned (again, for longer, when `was` tells how long the ban had left).
    Banned {
        /// The address.
        address: IpAddr,
        /// For how long.
        ttl: StdDuration,
        /// A ban that had this long left (seconds) was replaced.
        was: Option<u32>,
    },
    /// Already banned for at least as long (`None`: without a timeout): nothing changed.
    Kept {
        /// The address.
        address: IpAddr,
        /// What the live ban has left, seconds.
        remaining: Option<u32>,
        /// The ban asked for.
        ttl: StdDuration,
    },
    /// Dry run: nothing was changed; this is what would have been applied.
    DryRun {
        /// The address.
        address: IpAddr,
        /// The exact JSON.
        json: String,
    },
    /// Not banned, on purpose.
    Refused {
        /// The address.
        address: IpAddr,
        /// Why.
        why: Refusal,
    },
}

fn length(d: StdDuration) -> String {
    humantime::format_duration(StdDuration::from_secs(d.as_secs().max(1))).to_string()
}

impl std::fmt::Display for BanOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BanOutcome::Banned { address, ttl, was } => {
                write!(f, "banned {address} for {}", length(*ttl))?;
                if let Some(was) = was {
                    write!(
                        f,
                        " (its ban had {} left)",
                        length(StdDuration::from_secs(u64::from(*was)))
                    )?;
                }
                Ok(())
            }
            BanOutcome::Kept {
                address,
                remaining,
                ttl,
            } => match remaining {
                Some(r) => write!(
                    f,
                    "{address} already banned for {} more (not less than {}); kept",
                    length(StdDuration::from_secs(u64::from(*r))),
                    length(*ttl)
                ),
                None => write!(f, "{address} already banned without a timeout; kept"),
            },
            BanOutcome::DryRun { json, .. } => write!(f, "dry run: would apply {json}"),
            BanOutcome::Refused { address, why } => match why {
                Refusal::AllowList { entry } => {
                    write!(f, "refused: {address} is in the allow list ({entry})")
                }
                Refusal::MaxBans { max } => write!(
                    f,
                    "refused: {address} not banned: max_bans ({max}) bans are active"
                ),
            },
        }
    }
}

/// What lifting a ban did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnbanOutcome {
    /// The element was deleted.
    Removed {
        /// The address.
        address: IpAddr,
    },
    /// The address was not banned.
    NotBanned {
        /// The address.
        address: IpAddr,
    },
    /// Dry run: what would have been applied.
    DryRun {
        /// The address.
        address: IpAddr,
        /// The exact JSON.
        json: String,
    },
}

impl std::fmt::Display for UnbanOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UnbanOutcome::Removed { address } => write!(f, "ban of {address} removed"),
            UnbanOutcome::NotBanned { address } => write!(f, "{address} is not banned"),
            UnbanOutcome::DryRun { json, .. } => write!(f, "dry run: would apply {json}"),
        }
    }
}

/// Who asked for a ban.
#[derive(Debug, Clone)]
pub struct BanOrigin {
    /// The alert it is made for.
    pub alert_id: Option<String>,
    /// The outbox message (the alert's delivery).
    pub message: Option<String>,
    /// `alert` or `api`.
    pub origin: &'static str,
    /// The sink, or the person who asked.
    pub created_by: String,
}

/// What the start-up reconciliation found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// The table, sets or rules were (re)made.
    pub set_up: bool,
    /// Bans in the store whose element was gone: ended.
    pub ended: usize,
    /// Elements in the live sets the store did not know: adopted.
    pub adopted: usize,
}

/// The `nftables_ban` sinks of a run (by id), for the API and `vigil ban`; and what
/// they share: one lock around every read-and-change of the live sets, and a signal to
/// the keepers when a ban may end sooner than they wait for.
#[derive(Debug)]
pub struct BanRegistry {
    lock: tokio::sync::Mutex<()>,
    sinks: Mutex<Vec<(u64, Arc<Banner>)>>,
    next: std::sync::atomic::AtomicU64,
    changed: tokio::sync::watch::Sender<u64>,
}

impl Default for BanRegistry {
    fn default() -> Self {
        BanRegistry {
            lock: tokio::sync::Mutex::new(()),
            sinks: Mutex::new(Vec::new()),
            next: std::sync::atomic::AtomicU64::new(1),
            changed: tokio::sync::watch::channel(0).0,
        }
    }
}

/// A sink's place in the registry, given back when dropped.
struct Registration {
    registry: Arc<BanRegistry>,
    token: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry
            .lock_sinks()
            .retain(|(token, _)| *token != self.token);
    }
}

impl BanRegistry {
    fn lock_sinks(&self) -> std::sync::MutexGuard<'_, Vec<(u64, Arc<Banner>)>> {
        self.sinks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn register(self: &Arc<Self>, banner: Arc<Banner>) -> Registration {
        let token = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut sinks = self.lock_sinks();
        // A sink built again replaces the one it follows.
        sinks.retain(|(_, b)| b.sink != banner.sink);
        sinks.push((token, banner));
        Registration {
            registry: self.clone(),
            token,
        }
    }

    /// The running sinks.
    pub fn sinks(&self) -> Vec<Arc<Banner>> {
        let mut out: Vec<Arc<Banner>> = self.lock_sinks().iter().map(|(_, b)| b.clone()).collect();
        out.sort_by(|a, b| a.sink.cmp(&b.sink));
        out
    }

    /// The running sink named `name` (`pipeline.sink`, or a sink name unique among
    /// them); without a name, the only one.
    pub fn find(&self, name: Option<&str>) -> Result<Arc<Banner>, String> {
        let sinks = self.sinks();
        let ids = || {
            sinks
                .iter()
                .map(|b| b.sink.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let found: Vec<&Arc<Banner>> = match name {
            Some(n) => sinks
                .iter()
                .filter(|b| &*b.sink == n || b.sink.rsplit_once('.').is_some_and(|(_, s)| s == n))
                .collect(),
            None => sinks.iter().collect(),
        };
        match (found.as_slice(), name) {
            ([one], _) => Ok((*one).clone()),
            ([], _) if sinks.is_empty() => Err(
                "no nftables_ban sink is running: bans are made by one (add a sink of type nftables_ban to a pipeline)"
                    .into(),
            ),
            ([], Some(n)) => Err(format!(
                "no running nftables_ban sink `{n}`; the running ones are: {}",
                ids()
            )),
            (_, _) => Err(format!(
                "several nftables_ban sinks are running ({}): name one with `sink`",
                ids()
            )),
        }
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// The PCE connection addresses, once resolved.
type Resolved = Option<(std::time::Instant, Vec<(IpAddr, String)>)>;

/// One `nftables_ban` sink's bans.
pub struct Banner {
    sink: Arc<str>,
    settings: BanSettings,
    store: Arc<Store>,
    clock: SharedClock,
    counters: Arc<NodeCounters>,
    pce: Vec<PceAccess>,
    registry: Arc<BanRegistry>,
    resolved: tokio::sync::Mutex<Resolved>,
}

impl std::fmt::Debug for Banner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Banner")
            .field("sink", &self.sink)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// One PCE connection as a ban sees it: its IP lists (for `ip_list:` allow entries) and
/// its address (never banned).
#[derive(Clone)]
pub struct PceAccess {
    /// The connection's name.
    pub name: String,
    /// Its client (its URL, and reading its IP lists).
    pub client: crate::pce::client::PceClient,
    /// Its IP lists.
    pub names: Arc<crate::pce::names::NameCache>,
}

/// What an `nftables_ban` sink is built with, beyond its own configuration.
#[derive(Clone, Default)]
pub struct BanServices {
    /// The settings' PCE connections.
    pub pce: Vec<PceAccess>,
    /// The running sinks, for the API and `vigil ban`.
    pub registry: Arc<BanRegistry>,
}

/// Milliseconds since the epoch.
fn ms(t: Timestamp) -> i64 {
    t.timestamp_millis()
}

fn secs_ms(secs: u32) -> i64 {
    i64::from(secs).saturating_mul(1000)
}

impl Banner {
    /// The bans of the sink being built in `cx`.
    pub fn new(settings: BanSettings, cx: &BuildContext, services: &BanServices) -> Banner {
        Banner {
            sink: cx.id.clone(),
            settings,
            store: cx.store.clone(),
            clock: cx.clock.clone(),
            counters: cx.counters.clone(),
            pce: services.pce.clone(),
            registry: services.registry.clone(),
            resolved: tokio::sync::Mutex::new(None),
        }
    }

    /// The sink, `pipeline.sink`.
    pub fn id(&self) -> &str {
        &self.sink
    }

    /// Whether the sink changes nothing.
    pub fn dry_run(&self) -> bool {
        self.settings.dry_run
    }

    /// The sink's `ttl`.
    pub fn ttl(&self) -> StdDuration {
        self.settings.ttl
    }

    /// The sink's `max_bans`.
    pub fn max_bans(&self) -> u32 {
        self.settings.max_bans
    }

    /// The address `alert` asks to ban: at `ip_field`, or the one IP address among its
    /// group's values. IPv4-mapped IPv6 addresses are banned as IPv4.
    pub fn address_of(&self, alert: &Alert) -> Result<IpAddr, BanError> {
        address_of(alert, self.settings.ip_field.as_ref())
    }

    /// Bans `address` for `ttl` (see the module docs), as asked by `origin`.
    pub async fn ban(
        &self,
        address: IpAddr,
        ttl: StdDuration,
        origin: BanOrigin,
    ) -> Result<BanOutcome, BanError> {
        let address = address.to_canonical();
        let ttl_secs = u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX).max(1);
        let ttl = StdDuration::from_secs(u64::from(ttl_secs));
        if let Some(entry) = self.allowed(address).await? {
            if origin.origin == "alert" {
                BanAllowListed {
                    sink: &self.sink,
                    address: &address.to_string(),
                    entry: &entry,
                }
                .emit(&self.counters);
            }
            return Ok(BanOutcome::Refused {
                address,
                why: Refusal::AllowList { entry },
            });
        }
        let _one_at_a_time = self.registry.lock.lock().await;
        if self.settings.dry_run {
            let json = ruleset::to_json(&ruleset::batch(ruleset::ban_commands(
                address, ttl_secs, false,
            )));
            tracing::info!(sink = %self.sink, address = %address, ttl = %length(ttl), json = %json, "dry run: would ban (nothing applied; set dry_run: false to ban)");
            return Ok(BanOutcome::DryRun { address, json });
        }
        let live = nft::list(&self.settings.nft).await?;
        let mut commands = Vec::new();
        let live = match live {
            Some(l) if l.ready() => l,
            other => {
                let have_rules = other.as_ref().is_some_and(|l| l.rules);
                commands.extend(ruleset::setup_commands(!have_rules));
                other.unwrap_or_default()
            }
        };
        let mut replace = None;
        if let Some(element) = live.element(address) {
            match element.expires {
                Some(left) if left < ttl_secs => replace = Some(left),
                remaining => {
                    return Ok(BanOutcome::Kept {
                        address,
                        remaining,
                        ttl,
                    });
                }
            }
        } else if live.elements.len() >= self.settings.max_bans as usize {
            if origin.origin == "alert" {
                BanLimitReached {
                    sink: &self.sink,
                    address: &address.to_string(),
                    max_bans: self.settings.max_bans,
                }
                .emit(&self.counters);
            }
            return Ok(BanOutcome::Refused {
                address,
                why: Refusal::MaxBans {
                    max: self.settings.max_bans,
                },
            });
        }
        commands.extend(ruleset::ban_commands(address, ttl_secs, replace.is_some()));
        let batch = ruleset::batch(commands);
        nft::apply(&self.settings.nft, &batch).await?;
        let now = self.clock.now();
        self.store
            .record_ban(Ban {
                id: 0,
                address: address.to_string(),
                sink: self.sink.to_string(),
                alert_id: origin.alert_id,
                message: origin.message,
                origin: origin.origin.to_string(),
                created_by: origin.created_by,
                banned_at: ms(now),
                expires_at: ms(now).saturating_add(secs_ms(ttl_secs)),
                state: BanState::Active,
                ended_at: None,
                ended_by: None,
            })
            .await?;
        self.registry.bump();
        tracing::info!(sink = %self.sink, address = %address, ttl = %length(ttl), json = %ruleset::to_json(&batch), "banned");
        Ok(BanOutcome::Banned {
            address,
            ttl,
            was: replace,
        })
    }

    /// Lifts the ban of `address` (asked by `by`).
    pub async fn unban(&self, address: IpAddr, by: &str) -> Result<UnbanOutcome, BanError> {
        let address = address.to_canonical();
        let _one_at_a_time = self.registry.lock.lock().await;
        if self.settings.dry_run {
            let json = ruleset::to_json(&ruleset::batch(ruleset::remove_commands(address)));
            tracing::info!(sink = %self.sink, address = %address, json = %json, "dry run: would lift the ban (nothing applied)");
            return Ok(UnbanOutcome::DryRun { address, json });
        }
        let live = nft::list(&self.settings.nft).await?.unwrap_or_default();
        let now = ms(self.clock.now());
        let text = address.to_string();
        if live.element(address).is_some() {
            nft::apply(
                &self.settings.nft,
                &ruleset::batch(ruleset::remove_commands(address)),
            )
            .await?;
            self.store
                .end_ban(&text, BanState::Removed, now, &format!("removed by {by}"))
                .await?;
            self.registry.bump();
            tracing::info!(sink = %self.sink, address = %address, by = %by, "ban removed");
            return Ok(UnbanOutcome::Removed { address });
        }
        // Gone already: the store learns it now.
        if let Some(ban) = self.store.active_ban(&text)? {
            let (state, how) = if ban.expires_at <= now {
                (BanState::Expired, "ttl")
            } else {
                (BanState::Vanished, "its element left the live set")
            };
            self.store.end_ban(&text, state, now, how).await?;
        }
        Ok(UnbanOutcome::NotBanned { address })
    }

    /// Makes vigil's table as it should be and brings the store in line with the live
    /// sets: bans whose element is gone end, elements the store does not know are
    /// adopted. Nothing is read or applied in a dry run.
    pub async fn reconcile(&self) -> Result<Reconciled, BanError> {
        if self.settings.dry_run {
            let json = ruleset::to_json(&ruleset::batch(ruleset::setup_commands(true)));
            tracing::info!(sink = %self.sink, json = %json, "dry run: nftables is not read or changed; with dry_run: false vigil would first apply this");
            return Ok(Reconciled::default());
        }
        let _one_at_a_time = self.registry.lock.lock().await;
        let live = nft::list(&self.settings.nft).await?;
        let mut found = Reconciled::default();
        let live: LiveTable = match live {
            Some(l) if l.ready() => l,
            other => {
                let have_rules = other.as_ref().is_some_and(|l| l.rules);
                let batch = ruleset::batch(ruleset::setup_commands(!have_rules));
                nft::apply(&self.settings.nft, &batch).await?;
                tracing::info!(sink = %self.sink, json = %ruleset::to_json(&batch), "nftables table inet vigil set up");
                found.set_up = true;
                other.unwrap_or_default()
            }
        };
        let now = ms(self.clock.now());
        for ban in self.store.bans(false, usize::MAX)? {
            let Ok(addr) = ban.address.parse::<IpAddr>() else {
                continue;
            };
            if live.element(addr).is_some() {
                continue;
            }
            let (state, how) = if ban.expires_at <= now {
                (BanState::Expired, "ttl")
            } else {
                (
                    BanState::Vanished,
                    "its element left the live set while vigil was not running",
                )
            };
            if self.store.end_ban(&ban.address, state, now, how).await? {
                found.ended += 1;
                tracing::info!(sink = %self.sink, address = %ban.address, state = state.as_str(), "a ban in the store is no longer in the live set: ended");
            }
        }
        for element in &live.elements {
            let text = element.addr.to_string();
            if self.store.active_ban(&text)?.is_some() {
                continue;
            }
            let expires_at = match element.expires {
                Some(left) => now.saturating_add(secs_ms(left)),
                // Without a timeout: until removed.
                None => i64::MAX,
            };
            self.store
                .record_ban(Ban {
                    id: 0,
                    address: text.clone(),
                    sink: self.sink.to_string(),
                    alert_id: None,
                    message: None,
                    origin: "adopted".into(),
                    created_by: "nftables".into(),
                    banned_at: now,
                    expires_at,
                    state: BanState::Active,
                    ended_at: None,
                    ended_by: None,
                })
                .await?;
            found.adopted += 1;
            tracing::info!(sink = %self.sink, address = %text, "an element of the live set the store did not know: adopted");
        }
        self.registry.bump();
        Ok(found)
    }

    /// The allow-list entry that covers `address`, if one does (the PCE's own address
    /// included).
    async fn allowed(&self, address: IpAddr) -> Result<Option<String>, BanError> {
        for entry in &self.settings.allow {
            if let AllowEntry::Net(net) = entry
                && net.contains(&address)
            {
                return Ok(Some(entry.to_string()));
            }
        }
        for entry in &self.settings.allow {
            if let AllowEntry::IpList(name) = entry
                && self.in_ip_list(name, address).await?
            {
                return Ok(Some(entry.to_string()));
            }
        }
        for (ip, connection) in self.pce_addresses().await? {
            if ip == address {
                return Ok(Some(format!(
                    "the address of PCE connection `{connection}`"
                )));
            }
        }
        Ok(None)
    }

    /// Whether `address` is in the PCE IP list `name`, reading the lists when they were
    /// never read or are old.
    async fn in_ip_list(&self, name: &str, address: IpAddr) -> Result<bool, BanError> {
        if self.pce.is_empty() {
            return Err(BanError::UnknownIpList {
                name: name.to_string(),
                why: "and no PCE connection is in the settings to read it from".into(),
            });
        }
        let now = self.clock.now();
        let mut unread = Vec::new();
        for pce in &self.pce {
            let names = &pce.names;
            let fresh = names
                .snapshot()
                .refreshed_at
                .is_some_and(|at| now - at < NAMES_FOR);
            if !fresh && let Err(e) = names.refresh(&pce.client, now).await {
                tracing::warn!(sink = %self.sink, connection = %pce.name, error = %e, "cannot read the PCE's IP lists for the allow list");
            }
            if names.snapshot().refreshed_at.is_none() {
                unread.push(pce.name.clone());
            }
            if let Some(inside) = names.ip_list_contains(name, address) {
                return Ok(inside);
            }
        }
        if !unread.is_empty() {
            return Err(BanError::Names(format!(
                "connection {} not read yet",
                unread.join(", ")
            )));
        }
        Err(BanError::UnknownIpList {
            name: name.to_string(),
            why: "which no PCE connection has".into(),
        })
    }

    /// The addresses of the PCE connections (their URLs' hosts, resolved), looked up
    /// again every few minutes.
    async fn pce_addresses(&self) -> Result<Vec<(IpAddr, String)>, BanError> {
        if self.pce.is_empty() {
            return Ok(Vec::new());
        }
        let mut resolved = self.resolved.lock().await;
        if let Some((at, addrs)) = resolved.as_ref()
            && at.elapsed() < PCE_ADDRESSES_FOR
        {
            return Ok(addrs.clone());
        }
        let mut out = Vec::new();
        for pce in &self.pce {
            let Ok(url) = reqwest::Url::parse(pce.client.api_base()) else {
                continue;
            };
            let port = url.port_or_known_default().unwrap_or(443);
            let Some(host) = url.host_str() else {
                continue;
            };
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if let Ok(ip) = host.parse::<IpAddr>() {
                out.push((ip.to_canonical(), pce.name.clone()));
                continue;
            }
            let looked_up = tokio::time::timeout(
                StdDuration::from_secs(10),
                tokio::net::lookup_host((host, port)),
            )
            .await;
            match looked_up {
                Ok(Ok(addrs)) => {
                    out.extend(addrs.map(|a| (a.ip().to_canonical(), pce.name.clone())))
                }
                failed => {
                    let why = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => "no answer within 10s".to_string(),
                    };
                    // The last addresses known stay good until they can be looked up
                    // again.
                    if let Some((_, known)) = resolved.as_ref() {
                        tracing::warn!(sink = %self.sink, host = %host, error = %why, "cannot resolve the PCE's address; using the one known");
                        return Ok(known.clone());
                    }
                    return Err(BanError::PceAddress {
                        host: host.to_string(),
                        why,
                    });
                }
            }
        }
        *resolved = Some((std::time::Instant::now(), out.clone()));
        Ok(out)
    }

    /// Records the bans whose TTL passed by now as expired (the kernel removed their
    /// elements then).
    async fn expire(&self) {
        match self.store.expire_bans(ms(self.clock.now())).await {
            Ok(ended) => {
                for b in ended {
                    tracing::info!(sink = %self.sink, address = %b.address, banned_by = %b.created_by, "ban expired (its ttl passed)");
                }
            }
            Err(e) => {
                tracing::error!(sink = %self.sink, error = %e, "cannot record the bans that expired")
            }
        }
    }
}

/// The address `alert` names: see [`Banner::address_of`].
pub fn address_of(alert: &Alert, ip_field: Option<&FieldPath>) -> Result<IpAddr, BanError> {
    let form = alert.to_value();
    let ip = |text: &str| text.trim().parse::<IpAddr>().ok().map(|a| a.to_canonical());
    match ip_field {
        Some(path) => match path.first(&form) {
            Some(serde_json::Value::String(s)) => ip(s).ok_or_else(|| {
                BanError::NoAddress(format!(
                    "`{}` at ip_field `{}` is not an IP address",
                    s.chars().take(100).collect::<String>(),
                    path.as_str()
                ))
            }),
            Some(other) => Err(BanError::NoAddress(format!(
                "`{}` at ip_field `{}` is not an IP address",
                other.to_string().chars().take(100).collect::<String>(),
                path.as_str()
            ))),
            None => Err(BanError::NoAddress(format!(
                "the alert has no `{}` (ip_field)",
                path.as_str()
            ))),
        },
        None => {
            let mut found: Vec<IpAddr> = Vec::new();
            let mut strings = Vec::new();
            collect_strings(&alert.group, &mut strings);
            for s in strings {
                if let Some(a) = ip(s)
                    && !found.contains(&a)
                {
                    found.push(a);
                }
            }
            match found.as_slice() {
                [one] => Ok(*one),
                [] => Err(BanError::NoAddress(format!(
                    "the alert's group (`{}`) holds no IP address: group the alerts by the address (`group_by: [src.ip]`) or set ip_field",
                    alert.group_key.chars().take(200).collect::<String>()
                ))),
                several => Err(BanError::NoAddress(format!(
                    "the alert's group holds several IP addresses ({}): set ip_field to the one to ban",
                    several
                        .iter()
                        .map(IpAddr::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))),
            }
        }
    }
}

fn collect_strings<'v>(v: &'v serde_json::Value, out: &mut Vec<&'v str>) {
    match v {
        serde_json::Value::String(s) => out.push(s),
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_strings(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| collect_strings(x, out)),
        _ => {}
    }
}

/// How the sink delivers a message: a ban per firing alert in it.
pub(crate) struct BanNotifier {
    banner: Arc<Banner>,
}

impl Notifier for BanNotifier {
    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<Answer, SendError>> {
        Box::pin(async move {
            let mut said = Vec::new();
            for (i, alert) in n.alerts.iter().enumerate() {
                if n.change(i) == Change::Resolved || alert.status == AlertStatus::Resolved {
                    said.push("resolved: a ban stays until its ttl passes".to_string());
                    continue;
                }
                let fail = |e: BanError| {
                    if e.is_permanent() {
                        SendError::permanent(e.to_string())
                    } else {
                        SendError::transient(e.to_string())
                    }
                };
                let address = self.banner.address_of(alert).map_err(fail)?;
                let origin = BanOrigin {
                    alert_id: Some(alert.id.clone()),
                    message: Some(n.id.clone()),
                    origin: "alert",
                    created_by: self.banner.sink.to_string(),
                };
                let outcome = self
                    .banner
                    .ban(address, self.banner.settings.ttl, origin)
                    .await
                    .map_err(fail)?;
                said.push(outcome.to_string());
            }
            Ok(Answer(said.join("; ")))
        })
    }

    fn preview(&self, n: &Notification) -> Result<Vec<(String, String)>, String> {
        let ttl = u32::try_from(self.banner.settings.ttl.as_secs()).unwrap_or(u32::MAX);
        n.alerts
            .iter()
            .map(|a| {
                let address = self.banner.address_of(a).map_err(|e| e.to_string())?;
                Ok((
                    address.to_string(),
                    ruleset::to_json(&ruleset::batch(ruleset::ban_commands(address, ttl, false))),
                ))
            })
            .collect()
    }
}

/// The sink: a delivering sink whose messages are bans, with a keeper beside it that
/// reconciles the live sets at start and records expiries.
pub(crate) struct NftablesBanSink {
    inner: DeliverySink<BanNotifier>,
    banner: Arc<Banner>,
}

impl NftablesBanSink {
    /// The sink being built in `cx`.
    pub(crate) fn new(
        banner: Banner,
        cfg: &DeliveryConfig,
        cx: &BuildContext,
        delivery: &crate::sinks::DeliveryServices,
    ) -> NftablesBanSink {
        let banner = Arc::new(banner);
        let notifier = BanNotifier {
            banner: banner.clone(),
        };
        NftablesBanSink {
            inner: DeliverySink::new(notifier, cfg, cx, delivery),
            banner,
        }
    }
}

impl Sink for NftablesBanSink {
    fn run<'a>(self: Box<Self>, input: &'a mut Input) -> BoxFuture<'a, NodeResult> {
        Box::pin(async move {
            let NftablesBanSink { inner, banner } = *self;
            let _registered = banner.registry.register(banner.clone());
            let stop = CancellationToken::new();
            let _stop_keeper = stop.clone().drop_guard();
            let keeper = tokio::spawn(keep(banner.clone(), stop.clone()));
            let result = Box::new(inner).run(input).await;
            stop.cancel();
            let _ = keeper.await;
            result
        })
    }
}

/// Reconciles at start (again every minute until it succeeds: `nft` missing or refused
/// is logged, and bans meanwhile fail and are retried on their own) and records each
/// ban's expiry once its TTL passed, until `stop`.
async fn keep(banner: Arc<Banner>, stop: CancellationToken) {
    let mut changed = banner.registry.changed.subscribe();
    let mut reconcile_at = Some(banner.clock.now());
    loop {
        let now = banner.clock.now();
        if let Some(at) = reconcile_at
            && at <= now
        {
            match banner.reconcile().await {
                Ok(r) => {
                    reconcile_at = None;
                    if !banner.dry_run() {
                        tracing::info!(sink = %banner.sink, set_up = r.set_up, ended = r.ended, adopted = r.adopted, "the live nftables sets and the store agree");
                    }
                }
                Err(e) => {
                    tracing::error!(sink = %banner.sink, error = %e, "cannot read or set up nftables (tried again in a minute; bans fail meanwhile and are retried)");
                    reconcile_at = Some(now + KEEPER_POLL);
                }
            }
        }
        banner.expire().await;
        let now = banner.clock.now();
        let next_expiry = banner
            .store
            .next_ban_expiry()
            .ok()
            .flatten()
            .and_then(chrono::DateTime::from_timestamp_millis);
        let until = [next_expiry, reconcile_at]
            .into_iter()
            .flatten()
            .fold(now + KEEPER_POLL, Timestamp::min);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = changed.changed() => {}
            _ = banner.clock.sleep_until(until) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::delivery::sample_alert;

    #[test]
    fn the_address_is_the_groups_one_ip_or_at_ip_field() {
        let mut a = sample_alert();
        assert_eq!(
            address_of(&a, None).unwrap(),
            "10.20.30.40".parse::<IpAddr>().unwrap()
        );
        a.group = serde_json::json!({"src": {"ip": "::ffff:198.51.100.9"}, "port": "22"});
        assert_eq!(
            address_of(&a, None).unwrap(),
            "198.51.100.9".parse::<IpAddr>().unwrap(),
            "an IPv4-mapped address is banned as IPv4"
        );
        a.group = serde_json::json!({"src": {"ip": "2001:db8::7"}, "dst": {"ip": "2001:db8::1"}});
        let e = address_of(&a, None).unwrap_err();
        assert!(e.is_permanent());
        assert!(
            e.to_string()
                .contains("several IP addresses (2001:db8::7, 2001:db8::1)"),
            "{e}"
        );
        let path = FieldPath::parse("group.src.ip").unwrap();
        assert_eq!(
            address_of(&a, Some(&path)).unwrap(),
            "2001:db8::7".parse::<IpAddr>().unwrap()
        );
        a.group = serde_json::json!({"src": {"ip": "db-01.example.com"}});
        let e = address_of(&a, Some(&path)).unwrap_err().to_string();
        assert_eq!(
            e,
            "refused: `db-01.example.com` at ip_field `group.src.ip` is not an IP address"
        );
        a.group = serde_json::json!({"user": "alice"});
        let e = address_of(&a, None).unwrap_err().to_string();
        assert!(e.contains("holds no IP address"), "{e}");
    }

    /// A fake `nft`: `list` prints `listing.json` from its directory (or fails as nft
    /// does for a missing table), `-f -` appends what it reads to `applied.log`.
    fn fake_nft(dir: &std::path::Path) -> String {
        use std::os::unix::fs::PermissionsExt as _;
        let path = dir.join("nft");
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\nd={}\nif [ \"$2\" = list ]; then\n  if [ -f $d/listing.json ]; then cat $d/listing.json; exit 0; fi\n  echo 'Error: No such file or directory' >&2; exit 1\nfi\ncat >> $d/applied.log; echo >> $d/applied.log\n",
                dir.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.to_string_lossy().into_owned()
    }

    fn listing(elements: &[(&str, u32)]) -> String {
        let elem: Vec<serde_json::Value> = elements
            .iter()
            .map(|(a, left)| serde_json::json!({"elem": {"val": a, "timeout": 3600, "expires": left}}))
            .collect();
        serde_json::json!({"nftables": [
            {"set": {"family": "inet", "name": "banned4", "table": "vigil", "type": "ipv4_addr", "handle": 1, "flags": ["timeout"], "elem": elem}},
            {"set": {"family": "inet", "name": "banned6", "table": "vigil", "type": "ipv6_addr", "handle": 2, "flags": ["timeout"]}},
            {"rule": {"family": "inet", "table": "vigil", "chain": "input", "handle": 3, "comment": "vigil: drop banned4", "expr": []}},
            {"rule": {"family": "inet", "table": "vigil", "chain": "input", "handle": 4, "comment": "vigil: drop banned6", "expr": []}}
        ]})
        .to_string()
    }

    /// What a ban applies, decided on the live set a fake `nft` shows: the table made when
    /// missing, a longer repeat replacing the element, a shorter one kept, the allow
    /// list and `max_bans` refusing (counted), every ban recorded.
    #[tokio::test]
    async fn a_ban_is_decided_on_the_live_set() {
        let dir = tempfile::tempdir().unwrap();
        let nft = fake_nft(dir.path());
        let store = Arc::new(Store::in_memory().unwrap());
        let clock = crate::time::VirtualClock::new(chrono::Utc::now());
        let cx = BuildContext {
            id: "p.ban".into(),
            pipeline: "p".into(),
            node: "ban".into(),
            base_dir: Default::default(),
            state_dir: Default::default(),
            rejected_max_bytes: 1 << 24,
            clock: Arc::new(clock.clone()),
            store: store.clone(),
            keep_state: false,
            public_url: "http://vigil".into(),
            history_interval: chrono::Duration::minutes(1),
            rebuilt: false,
            counters: Default::default(),
        };
        let settings = BanSettings {
            ttl: StdDuration::from_secs(3600),
            ip_field: None,
            allow: vec![AllowEntry::Net("10.0.0.0/8".parse().unwrap())],
            max_bans: 2,
            dry_run: false,
            nft,
        };
        let banner = Banner::new(settings, &cx, &BanServices::default());
        let origin = || BanOrigin {
            alert_id: Some("a1".into()),
            message: Some("m1".into()),
            origin: "alert",
            created_by: "p.ban".into(),
        };
        let addr = |a: &str| a.parse::<IpAddr>().unwrap();
        let hour = StdDuration::from_secs(3600);
        let applied =
            || std::fs::read_to_string(dir.path().join("applied.log")).unwrap_or_default();

        // No table yet: it is made, rules included, with the ban, in one batch.
        let out = banner
            .ban(addr("203.0.113.7"), hour, origin())
            .await
            .unwrap();
        assert_eq!(out.to_string(), "banned 203.0.113.7 for 1h");
        let first = applied();
        assert_eq!(first.lines().count(), 1, "{first}");
        let mut expected = ruleset::setup_commands(true);
        expected.extend(ruleset::ban_commands(addr("203.0.113.7"), 3600, false));
        assert_eq!(first.trim(), ruleset::to_json(&ruleset::batch(expected)));
        let ban = store.active_ban("203.0.113.7").unwrap().unwrap();
        assert_eq!(ban.expires_at - ban.banned_at, 3_600_000);
        assert_eq!(ban.message.as_deref(), Some("m1"));

        // The live ban has 100 s left: a 1 h ban replaces it (no setup: the table is ready).
        std::fs::write(
            dir.path().join("listing.json"),
            listing(&[("203.0.113.7", 100)]),
        )
        .unwrap();
        let out = banner
            .ban(addr("203.0.113.7"), hour, origin())
            .await
            .unwrap();
        assert_eq!(
            out.to_string(),
            "banned 203.0.113.7 for 1h (its ban had 1m 40s left)"
        );
        let second = applied().lines().nth(1).unwrap_or_default().to_string();
        assert_eq!(
            second,
            ruleset::to_json(&ruleset::batch(ruleset::ban_commands(
                addr("203.0.113.7"),
                3600,
                true
            )))
        );
        assert_eq!(
            store.bans(true, 10).unwrap().len(),
            2,
            "the first ban ended as extended"
        );

        // It has 7000 s left: a 1 h ban keeps it, and nothing is applied.
        std::fs::write(
            dir.path().join("listing.json"),
            listing(&[("203.0.113.7", 7000)]),
        )
        .unwrap();
        let out = banner
            .ban(addr("203.0.113.7"), hour, origin())
            .await
            .unwrap();
        assert!(
            matches!(
                out,
                BanOutcome::Kept {
                    remaining: Some(7000),
                    ..
                }
            ),
            "{out:?}"
        );
        assert_eq!(applied().lines().count(), 2);

        // The allow list, then max_bans (2 live elements): refused, counted, not applied.
        let out = banner.ban(addr("10.1.2.3"), hour, origin()).await.unwrap();
        assert_eq!(
            out.to_string(),
            "refused: 10.1.2.3 is in the allow list (10.0.0.0/8)"
        );
        std::fs::write(
            dir.path().join("listing.json"),
            listing(&[("203.0.113.7", 7000), ("203.0.113.8", 60)]),
        )
        .unwrap();
        let out = banner
            .ban(addr("203.0.113.9"), hour, origin())
            .await
            .unwrap();
        assert_eq!(
            out.to_string(),
            "refused: 203.0.113.9 not banned: max_bans (2) bans are active"
        );
        assert_eq!(applied().lines().count(), 2);
        assert_eq!(
            cx.counters.dropped(),
            vec![("allow_listed", 1), ("max_bans", 1)]
        );

        // At a start, the store follows the live set: 203.0.113.8 is adopted.
        let found = banner.reconcile().await.unwrap();
        assert_eq!(
            found,
            Reconciled {
                set_up: false,
                ended: 0,
                adopted: 1
            }
        );
        assert_eq!(
            store.active_ban("203.0.113.8").unwrap().unwrap().origin,
            "adopted"
        );
    }

    #[test]
    fn outcomes_read_as_the_delivery_says_them() {
        let address: IpAddr = "203.0.113.7".parse().unwrap();
        let hour = StdDuration::from_secs(3600);
        assert_eq!(
            BanOutcome::Banned {
                address,
                ttl: hour,
                was: None
            }
            .to_string(),
            "banned 203.0.113.7 for 1h"
        );
        assert_eq!(
            BanOutcome::Banned {
                address,
                ttl: hour,
                was: Some(600)
            }
            .to_string(),
            "banned 203.0.113.7 for 1h (its ban had 10m left)"
        );
        assert_eq!(
            BanOutcome::Kept {
                address,
                remaining: Some(7000),
                ttl: hour
            }
            .to_string(),
            "203.0.113.7 already banned for 1h 56m 40s more (not less than 1h); kept"
        );
        assert_eq!(
            BanOutcome::Refused {
                address,
                why: Refusal::AllowList {
                    entry: "203.0.113.0/24".into()
                }
            }
            .to_string(),
            "refused: 203.0.113.7 is in the allow list (203.0.113.0/24)"
        );
        assert_eq!(
            BanOutcome::Refused {
                address,
                why: Refusal::MaxBans { max: 2 }
            }
            .to_string(),
            "refused: 203.0.113.7 not banned: max_bans (2) bans are active"
        );
    }
}
