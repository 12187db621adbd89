//! The admin HTTP API (axum): the CLI's operations as JSON, and `GET /metrics`
//! ([`super::metrics`]).
//!
//! Bound to loopback by default (`[admin] listen`, `allow_remote` to widen it). Every route
//! but `/metrics` needs `Authorization: Bearer <token>`, the token kept in
//! `<state_dir>/admin.token` (mode 0600, generated at first start). Errors are JSON
//! `{"error": "field: why"}` with a precise status: 400 invalid input, 401 no or wrong token,
//! 404 unknown user, 409 conflict.
//!
//! | method and path | cmdlet |
//! |---|---|
//! | `GET /users[?pattern=*x*]`, `GET /users/{identity}` | Get-CsOnlineUser |
//! | `POST /users` `{"sip_address": …, fields…}` | (user add) |
//! | `DELETE /users/{identity}` | (user remove) |
//! | `PATCH /users/{identity}` `{"enterprise_voice", "hosted_voicemail", "line_uri", "upn", "display_name"}` | Set-CsUser |
//! | `PUT /users/{identity}/pstn-site` `{"site": "lab" \| null}` | Set-CsUserPstnSettings |
//! | `POST /users/{identity}/policy` `{"policy": …}` | Grant-CsVoiceRoutingPolicy |
//! | `GET /tenant`, `PATCH /tenant` `{"peer_destination", "use_on_prem_dial_plan", "shared_sip_address_space"}` | Set-CsTenantHybridConfiguration |
//! | `GET /mediation-servers`, `PUT /mediation-servers/{identity}` `{"fqdn", "access_proxy_external_fqdn"}` | Set-CsHybridMediationServer |
//! | `GET /route/explain?from=…&to=…` | (route explain, with live health and load; `from` a gateway: inbound) |
//! | `GET /status.json` | the status page's data (see [`super::status`]) |
//! | `GET /tls/refusals[?last=N]` | the newest TLS refusals with their reasons |
//! | `GET /maintenance`, `POST /maintenance/enter`, `POST /maintenance/exit` | maintenance mode (Enter-CcUpdate / Exit-CcUpdate): `{"maintenance", "since", "active_calls"}` |
//! | `GET /config/reload`, `POST /config/reload` | the last configuration reload's outcome; reload now and answer it (`{"result", "trigger", "at", "error", "needs_restart"}`) |
//!
//! Without the token: `GET /metrics`; `GET /healthz` (200 while the process serves: `status`,
//! `version`, `pid`, `uptime_s`); `GET /readyz` (200 `{"status":"ready"}` when listeners are
//! bound, the directory is loaded and the appliance is neither draining nor in maintenance,
//! else 503 with `reasons`); `GET /status` (the page itself, no data: it reads the token from
//! its URL fragment and fetches `/status.json`).

use std::path::Path;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::json::{mediation_server_json, tenant_json, user_json};
use super::maintenance::Maintenance;
use super::state::{OpsState, ReloadReport};
use super::status;
use crate::config::VoiceRoutingPolicy;
use crate::directory::{Store, StoreError, TenantPatch, UserPatch};
use crate::routing::{Directory, RoutingTable};
use crate::stats::{Published, TRANSPORT};

#[derive(Clone)]
pub struct AdminState {
    pub store: Arc<Mutex<Store>>,
    pub token: Arc<String>,
    /// The routing table in force (swapped by a reload).
    pub table: Arc<ArcSwap<RoutingTable>>,
    pub dir: Arc<ArcSwap<Directory>>,
    pub live: Arc<ArcSwap<Published>>,
    /// Readiness, call statistics, certificates, directory changes, reloads.
    pub ops: Arc<OpsState>,
    /// The maintenance switch.
    pub maintenance: Arc<Maintenance>,
    /// Asks the reloader for a reload now; it answers with the outcome.
    pub reload: tokio::sync::mpsc::Sender<tokio::sync::oneshot::Sender<ReloadReport>>,
}

/// Reads the admin token, or creates it (0600) at first start.
pub fn load_or_create_token(state_dir: &Path) -> std::io::Result<String> {
    crate::state::secret(state_dir, "admin.token")
}

#[derive(Debug)]
struct ApiError(u16, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError(e.http_status(), e.to_string())
    }
}

type ApiResult = Result<axum::Json<serde_json::Value>, ApiError>;

fn authorize(state: &AdminState, headers: &HeaderMap) -> Result<(), ApiError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        None => Err(ApiError(
            401,
            "Authorization: a bearer token is required (see <state_dir>/admin.token)".into(),
        )),
        Some(t) if constant_time_eq(t.trim().as_bytes(), state.token.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError(401, "Authorization: wrong bearer token".into())),
    }
}

/// Compares the token without leaking where it differs (aws-lc's constant-time compare).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError(400, format!("body: {e}")))
}

/// Runs a store operation off the async threads (SQLite is blocking).
async fn with_store<T: Send + 'static>(
    state: &AdminState,
    f: impl FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || {
        let mut s = store
            .lock()
            .map_err(|_| ApiError(500, "directory store lock poisoned".into()))?;
        f(&mut s).map_err(ApiError::from)
    })
    .await
    .map_err(|e| ApiError(500, format!("internal: {e}")))?
}

/// `null` → `Some(None)`, absent → `None`.
fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

fn policy<'de, D>(d: D) -> Result<Option<VoiceRoutingPolicy>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let s = Option::<String>::deserialize(d)?;
    s.map(|s| VoiceRoutingPolicy::parse(&s).map_err(serde::de::Error::custom))
        .transpose()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserBody {
    #[serde(default)]
    sip_address: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    upn: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    display_name: Option<Option<String>>,
    #[serde(default)]
    enterprise_voice: Option<bool>,
    #[serde(default)]
    hosted_voicemail: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    line_uri: Option<Option<String>>,
    #[serde(default, deserialize_with = "policy")]
    voice_routing_policy: Option<VoiceRoutingPolicy>,
    #[serde(default, deserialize_with = "nullable")]
    pstn_site: Option<Option<String>>,
}

impl UserBody {
    fn patch(&self) -> UserPatch {
        UserPatch {
            upn: self.upn.clone(),
            display_name: self.display_name.clone(),
            enterprise_voice: self.enterprise_voice,
            hosted_voicemail: self.hosted_voicemail,
            line_uri: self.line_uri.clone(),
            voice_routing_policy: self.voice_routing_policy,
            pstn_site: self.pstn_site.clone(),
        }
    }
}

#[derive(Deserialize)]
struct PatternQuery {
    pattern: Option<String>,
}

async fn list_users(
    State(st): State<AdminState>,
    headers: HeaderMap,
    Query(q): Query<PatternQuery>,
) -> ApiResult {
    authorize(&st, &headers)?;
    let users = with_store(&st, move |s| s.users(q.pattern.as_deref())).await?;
    Ok(axum::Json(serde_json::Value::Array(
        users.iter().map(user_json).collect(),
    )))
}

async fn get_user(
    State(st): State<AdminState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> ApiResult {
    authorize(&st, &headers)?;
    let u = with_store(&st, move |s| s.find_user(&id)).await?;
    Ok(axum::Json(user_json(&u)))
}

async fn add_user(State(st): State<AdminState>, headers: HeaderMap, body: Bytes) -> ApiResult {
    authorize(&st, &headers)?;
    let b: UserBody = parse_body(&body)?;
    let Some(addr) = b.sip_address.clone() else {
        return Err(ApiError(400, "sip_address: required".into()));
    };
    let p = b.patch();
    let u = with_store(&st, move |s| s.add_user(&addr, &p)).await?;
    Ok(axum::Json(user_json(&u)))
}

async fn remove_user(
    State(st): State<AdminState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> ApiResult {
    authorize(&st, &headers)?;
    let u = with_store(&st, move |s| s.remove_user(&id)).await?;
    Ok(axum::Json(
        serde_json::json!({ "removed": format!("sip:{}", u.sip_address) }),
    ))
}

async fn set_user(
    State(st): State<AdminState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> ApiResult {
    authorize(&st, &headers)?;
    let b: UserBody = parse_body(&body)?;
    if b.sip_address.is_some() {
        return Err(ApiError(
            400,
            "sip_address: the identity cannot be changed".into(),
        ));
    }
    let p = b.patch();
    let u = with_store(&st, move |s| s.set_user(&id, &p)).await?;
    Ok(axum::Json(user_json(&u)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SiteBody {
    site: Option<String>,
}

async fn set_pstn_site(
    State(st): State<AdminState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> ApiResult {
    authorize(&st, &headers)?;
    let b: SiteBody = parse_body(&body)?;
    let p = UserPatch {
        pstn_site: Some(b.site),
        ..Default::default()
    };
    let u = with_store(&st, move |s| s.set_user(&id, &p)).await?;
    Ok(axum::Json(user_json(&u)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyBody {
    #[serde(deserialize_with = "policy")]
    policy: Option<VoiceRoutingPolicy>,
}

async fn grant_policy(
    State(st): State<AdminState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> ApiResult {
    authorize(&st, &headers)?;
    let b: PolicyBody = parse_body(&body)?;
    let Some(pol) = b.policy else {
        return Err(ApiError(400, "policy: required".into()));
    };
    let p = UserPatch {
        voice_routing_policy: Some(pol),
        ..Default::default()
    };
    let u = with_store(&st, move |s| s.set_user(&id, &p)).await?;
    Ok(axum::Json(user_json(&u)))
}

async fn get_tenant(State(st): State<AdminState>, headers: HeaderMap) -> ApiResult {
    authorize(&st, &headers)?;
    let t = with_store(&st, |s| s.tenant()).await?;
    Ok(axum::Json(tenant_json(&t)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantBody {
    #[serde(default, deserialize_with = "nullable")]
    peer_destination: Option<Option<String>>,
    #[serde(default)]
    use_on_prem_dial_plan: Option<bool>,
    #[serde(default)]
    shared_sip_address_space: Option<bool>,
}

async fn set_tenant(State(st): State<AdminState>, headers: HeaderMap, body: Bytes) -> ApiResult {
    authorize(&st, &headers)?;
    let b: TenantBody = parse_body(&body)?;
    let p = TenantPatch {
        peer_destination: b.peer_destination,
        use_on_prem_dial_plan: b.use_on_prem_dial_plan,
        shared_sip_address_space: b.shared_sip_address_space,
    };
    let t = with_store(&st, move |s| s.set_tenant(&p)).await?;
    Ok(axum::Json(tenant_json(&t)))
}

async fn list_mediation(State(st): State<AdminState>, headers: HeaderMap) -> ApiResult {
    authorize(&st, &headers)?;
    let ms = with_store(&st, |s| s.mediation_servers()).await?;
    Ok(axum::Json(serde_json::Value::Array(
        ms.iter().map(mediation_server_json).collect(),
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MediationBody {
    fqdn: String,
    access_proxy_external_fqdn: String,
}

async fn set_mediation(
    State(st): State<AdminState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> ApiResult {
    authorize(&st, &headers)?;
    let b: MediationBody = parse_body(&body)?;
    let m = with_store(&st, move |s| {
        s.set_mediation_server(&id, &b.fqdn, &b.access_proxy_external_fqdn)
    })
    .await?;
    Ok(axum::Json(mediation_server_json(&m)))
}

#[derive(Deserialize)]
struct ExplainQuery {
    from: Option<String>,
    to: Option<String>,
}

async fn explain(
    State(st): State<AdminState>,
    headers: HeaderMap,
    Query(q): Query<ExplainQuery>,
) -> ApiResult {
    authorize(&st, &headers)?;
    let from = q
        .from
        .ok_or_else(|| ApiError(400, "from: required".into()))?;
    let to = q.to.ok_or_else(|| ApiError(400, "to: required".into()))?;
    let dir = st.dir.load();
    let live = st.live.load();
    let table = st.table.load();
    let (direction, r) = super::explain::explain(&table, &dir, &live.live, &from, &to)
        .map_err(|e| ApiError(400, e))?;
    let mut v = super::cli::routed_json(&r);
    v["direction"] = serde_json::json!(direction.as_str());
    Ok(axum::Json(v))
}

async fn metrics(State(st): State<AdminState>) -> Response {
    let snap = st.live.load();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        super::metrics::render(&snap, &st.ops.metrics()),
    )
        .into_response()
}

async fn healthz(State(st): State<AdminState>) -> Response {
    let uptime = std::time::SystemTime::now()
        .duration_since(st.ops.started)
        .map_or(0, |d| d.as_secs());
    axum::Json(serde_json::json!({
        "status": "alive",
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "uptime_s": uptime,
    }))
    .into_response()
}

async fn readyz(State(st): State<AdminState>) -> Response {
    let reasons = st.ops.readiness.not_ready();
    if reasons.is_empty() {
        axum::Json(serde_json::json!({ "status": "ready" })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "status": "not ready", "reasons": reasons })),
        )
            .into_response()
    }
}

/// One of the status page's files, with its security headers.
fn page_file(content_type: &'static str, body: &'static str) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    for (k, v) in status::PAGE_HEADERS {
        h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    r
}

async fn status_page() -> Response {
    page_file("text/html; charset=utf-8", status::PAGE_HTML)
}

async fn status_script() -> Response {
    page_file("text/javascript; charset=utf-8", status::PAGE_JS)
}

async fn status_style() -> Response {
    page_file("text/css; charset=utf-8", status::PAGE_CSS)
}

async fn status_data(State(st): State<AdminState>, headers: HeaderMap) -> ApiResult {
    authorize(&st, &headers)?;
    let snap = st.live.load();
    let refusals = TRANSPORT.recent_refusals(status::REFUSALS_SHOWN);
    Ok(axum::Json(status::status_json(
        &st.table.load(),
        &snap,
        &st.ops,
        &refusals,
        std::time::SystemTime::now(),
    )))
}

#[derive(Deserialize)]
struct LastQuery {
    last: Option<usize>,
}

async fn tls_refusals(
    State(st): State<AdminState>,
    headers: HeaderMap,
    Query(q): Query<LastQuery>,
) -> ApiResult {
    authorize(&st, &headers)?;
    let n = q.last.unwrap_or(status::REFUSALS_SHOWN);
    Ok(axum::Json(serde_json::Value::Array(
        TRANSPORT
            .recent_refusals(n)
            .iter()
            .map(status::refusal_json)
            .collect(),
    )))
}

fn maintenance_json(st: &AdminState) -> serde_json::Value {
    let s = st.maintenance.status();
    serde_json::json!({
        "maintenance": s.maintenance,
        "since": s.since,
        "active_calls": super::metrics::active_calls(&st.live.load()),
    })
}

async fn get_maintenance(State(st): State<AdminState>, headers: HeaderMap) -> ApiResult {
    authorize(&st, &headers)?;
    Ok(axum::Json(maintenance_json(&st)))
}

async fn set_maintenance(st: &AdminState, headers: &HeaderMap, on: bool) -> ApiResult {
    authorize(st, headers)?;
    let m = st.maintenance.clone();
    tokio::task::spawn_blocking(move || m.set(on))
        .await
        .map_err(|e| ApiError(500, format!("internal: {e}")))?
        .map_err(|e| ApiError(500, format!("maintenance state not kept: {e}")))?;
    // Answer once the core refuses (or takes) new calls: a script may rely on it.
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    while st.live.load().maintenance != on && tokio::time::Instant::now() < until {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Ok(axum::Json(maintenance_json(st)))
}

async fn enter_maintenance(State(st): State<AdminState>, headers: HeaderMap) -> ApiResult {
    set_maintenance(&st, &headers, true).await
}

async fn exit_maintenance(State(st): State<AdminState>, headers: HeaderMap) -> ApiResult {
    set_maintenance(&st, &headers, false).await
}

fn reload_json(r: Option<ReloadReport>) -> serde_json::Value {
    match r {
        Some(r) => serde_json::to_value(r).unwrap_or_default(),
        None => serde_json::json!({ "result": "none" }),
    }
}

async fn get_reload(State(st): State<AdminState>, headers: HeaderMap) -> ApiResult {
    authorize(&st, &headers)?;
    Ok(axum::Json(reload_json(st.ops.last_reload())))
}

async fn post_reload(State(st): State<AdminState>, headers: HeaderMap) -> ApiResult {
    authorize(&st, &headers)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    st.reload
        .send(tx)
        .await
        .map_err(|_| ApiError(503, "the reloader is not running".into()))?;
    let r = rx
        .await
        .map_err(|_| ApiError(503, "the reloader gave no answer".into()))?;
    let failed = r.result == "failed";
    let v = reload_json(Some(r));
    if failed {
        return Err(ApiError(
            422,
            v["error"].as_str().unwrap_or("reload failed").to_owned(),
        ));
    }
    Ok(axum::Json(v))
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/users", get(list_users).post(add_user))
        .route(
            "/users/{identity}",
            get(get_user).patch(set_user).delete(remove_user),
        )
        .route("/users/{identity}/pstn-site", put(set_pstn_site))
        .route("/users/{identity}/policy", post(grant_policy))
        .route("/tenant", get(get_tenant).patch(set_tenant))
        .route("/mediation-servers", get(list_mediation))
        .route("/mediation-servers/{identity}", put(set_mediation))
        .route("/route/explain", get(explain))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status_page))
        .route("/status.js", get(status_script))
        .route("/status.css", get(status_style))
        .route("/status.json", get(status_data))
        .route("/tls/refusals", get(tls_refusals))
        .route("/maintenance", get(get_maintenance))
        .route("/maintenance/enter", post(enter_maintenance))
        .route("/maintenance/exit", post(exit_maintenance))
        .route("/config/reload", get(get_reload).post(post_reload))
        .with_state(state)
}

/// Serves the admin API on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, state: AdminState) {
    if let Err(e) = axum::serve(listener, router(state)).await {
        tracing::error!(error = %e, "admin API stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_created_0600_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let a = load_or_create_token(tmp.path()).unwrap();
        assert_eq!(a.len(), 64);
        let mode = std::fs::metadata(tmp.path().join("admin.token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create_token(tmp.path()).unwrap(), a);
        assert!(constant_time_eq(b"abc", b"abc") && !constant_time_eq(b"abc", b"abd"));
    }

    #[test]
    fn bodies_refuse_unknown_fields_and_bad_policies() {
        assert!(
            parse_body::<UserBody>(&Bytes::from_static(b"{\"enterprise_voise\":true}")).is_err()
        );
        assert!(parse_body::<PolicyBody>(&Bytes::from_static(b"{\"policy\":\"Nope\"}")).is_err());
        let b: UserBody = parse_body(&Bytes::from_static(
            b"{\"pstn_site\":null,\"enterprise_voice\":true}",
        ))
        .unwrap();
        assert_eq!(b.patch().pstn_site, Some(None));
        assert_eq!(b.patch().line_uri, None);
    }
}
