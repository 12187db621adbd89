//! `[overload]`: rates and caps applied before the proxy keeps any state for a request.

use std::collections::BTreeMap;
use std::time::Duration;

use super::Validator;
use crate::config::{raw, ConfigError, Gateway, OverloadSettings, UnknownSenders};

impl Validator<'_> {
    pub(super) fn overload(
        &self,
        raw: &raw::RawOverload,
        gateways: &[Gateway],
        cloud_peer: &str,
        appliances: &[String],
    ) -> Result<OverloadSettings, ConfigError> {
        let rate = |key: &str, v: Option<u32>, default: u32| -> Result<u32, ConfigError> {
            let x = v.unwrap_or(default);
            if (1..=1_000_000).contains(&x) {
                Ok(x)
            } else {
                Err(self.err(key, &format!("{x} is out of range 1..=1000000")))
            }
        };
        let mut peers = BTreeMap::new();
        for (name, r) in &raw.peers {
            let key = format!("overload.peers.{name:?}");
            let lower = name.trim_end_matches('.').to_ascii_lowercase();
            let known = lower == cloud_peer.to_ascii_lowercase()
                || gateways
                    .iter()
                    .any(|g| g.name.to_string().eq_ignore_ascii_case(&lower))
                || appliances.iter().any(|a| a.eq_ignore_ascii_case(&lower));
            if !known {
                return Err(self.err(
                    &key,
                    "not a configured gateway, another site's mediation server or the cloud peer",
                ));
            }
            peers.insert(lower, rate(&key, Some(*r), 1)?);
        }
        let unknown_senders = match raw.unknown_senders.as_deref() {
            None | Some("reject") => UnknownSenders::Reject,
            Some("silent") => UnknownSenders::Silent,
            Some(other) => {
                return Err(self.err(
                    "overload.unknown_senders",
                    &format!("{other:?} is neither \"reject\" nor \"silent\""),
                ))
            }
        };
        let count = |key: &str, v: Option<usize>, default: usize| -> Result<usize, ConfigError> {
            let x = v.unwrap_or(default);
            if (1..=10_000_000).contains(&x) {
                Ok(x)
            } else {
                Err(self.err(key, &format!("{x} is out of range 1..=10000000")))
            }
        };
        let secs =
            |key: &str, v: Option<u64>, default: u64, max: u64| -> Result<u64, ConfigError> {
                let x = v.unwrap_or(default);
                if (1..=max).contains(&x) {
                    Ok(x)
                } else {
                    Err(self.err(key, &format!("{x} is out of range 1..={max}")))
                }
            };
        Ok(OverloadSettings {
            peer_requests_per_second: rate(
                "overload.peer_requests_per_second",
                raw.peer_requests_per_second,
                100,
            )?,
            cloud_peer_requests_per_second: rate(
                "overload.cloud_peer_requests_per_second",
                raw.cloud_peer_requests_per_second,
                2000,
            )?,
            peers,
            calls_per_second: rate("overload.calls_per_second", raw.calls_per_second, 2000)?,
            max_calls: count("overload.max_calls", raw.max_calls, 20_000)?,
            max_transactions: count("overload.max_transactions", raw.max_transactions, 100_000)?,
            refusals_per_second: rate("overload.refusals_per_second", raw.refusals_per_second, 20)?,
            retry_after: Duration::from_secs(secs(
                "overload.retry_after_s",
                raw.retry_after_s,
                5,
                3600,
            )?),
            unknown_senders,
            unknown_sender_interval: Duration::from_secs(secs(
                "overload.unknown_sender_interval_s",
                raw.unknown_sender_interval_s,
                10,
                3600,
            )?),
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::{err_of, LAB};
    use crate::config::Config;
    use std::path::Path;

    #[test]
    fn peer_rates_name_gateways_other_sites_appliances_or_the_cloud_peer() {
        let with = |peers: &str| {
            LAB.replace(
                "peers = { \"gw1.lab.example\" = 5000 }",
                &format!("peers = {{ {peers} }}"),
            )
        };
        let c = Config::from_toml(
            Path::new("t.toml"),
            &with("\"gw1.lab.example\" = 5000, \"Mediation.Remote.Example\" = 3000, \"sip.cloud.lab.example\" = 9000"),
        )
        .unwrap();
        assert_eq!(
            c.overload.peers.get("mediation.remote.example"),
            Some(&3000)
        );
        assert_eq!(c.overload.peers.len(), 3);
        // Our own mediation server hands us nothing.
        let e = err_of(&with("\"mediation.lab.example\" = 10"));
        assert!(e.key.starts_with("overload.peers"), "{e}");
        assert!(err_of(&with("\"gw9.lab.example\" = 10"))
            .reason
            .contains("not a configured gateway"));
    }
}
