//! `nftables_ban` sink: bans the address an alert names with nftables, for a while.
//!
//! vigil owns one table, `inet vigil` (see [`ruleset`]), and never touches another: a
//! ban adds the address, with the sink's `ttl` as its timeout, to the set `banned4` or
//! `banned6`, whose drop rule (with a counter) in the table's input chain drops what it
//! sends; the kernel removes the address when the timeout passes. A ban is a delivery
//! of its alert: the alert becomes an outbox message as for every delivering sink
//! ([`crate::sinks::delivery`]), the worker bans, and the message's answer says what
//! happened — `banned 203.0.113.7 for 1h`, `dry run: would apply {…}`, `refused:
//! 10.0.0.5 is in the allow list (10.0.0.0/8)`. `nft` missing or refusing (no
//! CAP_NET_ADMIN) fails the delivery, which is retried by the sink's `retry`.
//!
//! - A second ban of a banned address keeps the longer TTL: the live element's
//!   `expires` is read, and a longer ban replaces it (delete and add, one transaction).
//! - `allow` (CIDRs, addresses, `ip_list:` names of the PCE) and the PCE's own address
//!   are never banned; `max_bans` bounds the bans active at once.
//! - `dry_run: true` (the default) runs no `nft` at all: the JSON a ban would apply is
//!   logged and recorded on the delivery.
//! - Every ban is a row of the store's `bans` table ([`crate::store::bans`]) until it
//!   ends: its TTL passed (recorded at or after that time, on the engine's clock), it
//!   was removed (`vigil ban remove`, the API, the dashboard), a longer ban replaced it.
//!   At start the sink reads the live sets: bans whose element is gone end, elements the
//!   store does not know are adopted.
//! - [`BanRegistry`] lists the running sinks for the API (`/api/v1/bans`) and `vigil ban`.

mod banner;
mod config;
pub mod nft;
pub mod ruleset;

pub use banner::{
    BanError, BanOrigin, BanOutcome, BanRegistry, BanServices, Banner, PceAccess, Reconciled,
    Refusal, UnbanOutcome, address_of,
};
pub use config::{AllowEntry, MAX_TTL, NftablesBanSinkConfig, parse_allow};
