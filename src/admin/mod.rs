//! Administration: the cmdlet-like CLI, the admin HTTP API and the metrics exposition, and the
//! operations around them. The directory it changes lives in [`crate::directory`]; what the
//! running proxy publishes, in [`crate::stats`].
//!
//! | file | holds |
//! |---|---|
//! | `cli.rs` | the directory and routing commands (cmdlets) |
//! | `client.rs` | the CLI's requests to the running appliance's admin API |
//! | `service_cli.rs` | `maintenance enter\|exit\|status`, `reload` (through the admin API) |
//! | `http.rs` | the admin HTTP API: JSON, `/metrics`, `/healthz`, `/readyz`, `/status` |
//! | `json.rs` | directory objects as JSON (cmdlet field names) |
//! | `metrics.rs` | the one module that names every exported series |
//! | `state.rs` | what the API knows besides the directory and the core: readiness, call statistics, certificates |
//! | `calls.rs` | call statistics from the call records (metrics, status page) |
//! | `certs.rs` | when our certificates, the CA and the CRL expire |
//! | `status.rs` + `status.{html,js,css}` | the status page and its JSON |
//! | `explain.rs` | `route explain` inbound (from a gateway) and outbound |
//! | `plan.rs` | `sipedge plan dns` / `plan firewall` |
//! | `doctor.rs` | `sipedge doctor`: the configuration against the world |
//! | `maintenance.rs` | maintenance mode: the switch, kept in the state directory |
//! | `logging.rs` | log set-up: colour only on a terminal, JSON field names, a non-blocking writer |
//! | `sd_notify.rs` | systemd notifications (READY, STOPPING, WATCHDOG, STATUS) |

pub mod calls;
pub mod certs;
pub mod cli;
pub mod client;
pub mod doctor;
pub mod explain;
pub mod http;
pub mod json;
pub mod logging;
pub mod maintenance;
pub mod metrics;
pub mod plan;
pub mod sd_notify;
pub mod service_cli;
pub mod state;
pub mod status;
