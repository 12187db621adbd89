//! The directory's objects as the CLI prints them and the API returns them: the field names of
//! the Skype for Business / Teams cmdlets (Get-CsOnlineUser, Get-CsTenantHybridConfiguration,
//! Get-CsHybridMediationServer).

use crate::routing::{DirUser, HybridMediationServer, TenantHybridConfig};

/// A user as `user show` prints it (Get-CsOnlineUser / Get-CsUserPstnSettings fields).
pub fn user_json(u: &DirUser) -> serde_json::Value {
    serde_json::json!({
        "SipAddress": format!("sip:{}", u.sip_address),
        "UserPrincipalName": u.upn,
        "DisplayName": u.display_name,
        "EnterpriseVoiceEnabled": u.enterprise_voice,
        "HostedVoiceMail": u.hosted_voicemail,
        "OnPremLineURI": u.line_uri,
        "VoicePolicy": u.voice_policy(),
        "VoiceRoutingPolicy": u.voice_routing_policy.as_str(),
        "HybridPstnSite": u.pstn_site,
    })
}

pub fn tenant_json(t: &TenantHybridConfig) -> serde_json::Value {
    serde_json::json!({
        "PeerDestination": t.peer_destination,
        "UseOnPremDialPlan": t.use_on_prem_dial_plan,
        "SharedSipAddressSpace": t.shared_sip_address_space,
    })
}

pub fn mediation_server_json(m: &HybridMediationServer) -> serde_json::Value {
    serde_json::json!({
        "Identity": m.identity,
        "Fqdn": m.fqdn,
        "AccessProxyExternalFqdn": m.access_proxy_external_fqdn,
    })
}
