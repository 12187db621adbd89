//! Routing, pure: `(request, sender, routing table, directory, live state) -> Decision + trace`.
//!
//! The Cloud Connector model in short: the PSTN gateways of this appliance's *site* call tenant
//! users, and those calls go to the *cloud peer* with the Request-URI set to the user's SIP
//! address (reverse number lookup on the line URI). The cloud peer's calls for a user go to the
//! PSTN through the user's hybrid PSTN site, else the tenant's default site (the one whose
//! access edge is the tenant's peer destination): this site's gateways, another site's
//! mediation servers. Enterprise voice and the voice routing policy (international calls)
//! may refuse a call; a conference escalation names a hybrid mediation server instead of a
//! user. The rules with their status codes are in `policy.rs`.
//!
//! Nothing here does IO or reads the clock: names are resolved by the IO layer before the
//! table is built, the directory is a snapshot, health and load come in as [`Live`].
//!
//! | file | holds |
//! |---|---|
//! | `table.rs` | [`RoutingTable`] from the configuration: [`NextHop`], [`GatewayEntry`], [`SiteEntry`]; names to resolve, who the [`Sender`] is (`identify_flow`), TLS names |
//! | `dialplan.rs` | [`DialPlan`] (normalization rules, first match wins), [`is_emergency`] |
//! | `e164.rs` | [`E164`]: [`normalize_e164`], [`warm_up`], [`is_international`], the called number of a Request-URI |
//! | `outbound.rs` | outbound calls (from the cloud peer, or handed over by another site's appliance): caller, site, emergency numbers, dial plan, policy |
//! | `policy.rs` | [`route`], [`explain`] → [`Routed`] ([`Decision`] + trace); [`Live`]; the gateway trial order (`RoutingTable::site_gateways`) |
//! | `directory.rs` | [`Directory`], the tenant directory snapshot: users, tenant hybrid configuration, hybrid mediation servers |
//! | `test_support.rs` | unit-test fixtures: the lab configuration's table, directory and gateway |
//!
//! Every public item is re-exported here: callers use `routing::X` (and
//! `routing::directory::user_from_decl`).

mod dialplan;
pub mod directory;
mod e164;
mod outbound;
mod policy;
mod table;
#[cfg(test)]
mod test_support;

pub use dialplan::{dial_string, is_emergency, DialPlan, Normalized};
pub use directory::{
    line_uri_number, DirUser, Directory, HybridMediationServer, TenantHybridConfig,
};
pub use e164::{is_international, normalize_e164, warm_up, E164};
pub use policy::{explain, route, Decision, Live, Routed};
pub use table::{
    GatewayEntry, NextHop, Resolve, ResolveAll, ResolveSrv, RoutingTable, Sender, SiteEntry,
    MAX_ADDRESSES_PER_NAME,
};
