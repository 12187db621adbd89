//! `[sip]`, `[limits]` and `[routing]`: the timers, sizes and counts, each with a default and
//! an allowed range, and the responses that make a call fail over to the next gateway.

use std::time::Duration;

use super::Validator;
use crate::config::{raw, ConfigError, Limits, RoutingSettings, SipSettings};

impl Validator<'_> {
    /// `val`, or `default` when absent, refused outside `min..=max`.
    fn in_range(
        &self,
        key: &str,
        val: Option<u64>,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<u64, ConfigError> {
        let x = val.unwrap_or(default);
        if (min..=max).contains(&x) {
            Ok(x)
        } else {
            Err(self.err(key, &format!("{x} is out of range {min}..={max}")))
        }
    }

    pub(super) fn sip(&self, raw: &raw::RawSip) -> Result<SipSettings, ConfigError> {
        let sip = SipSettings {
            t1: Duration::from_millis(self.in_range("sip.t1_ms", raw.t1_ms, 500, 10, 60_000)?),
            t2: Duration::from_millis(self.in_range("sip.t2_ms", raw.t2_ms, 4000, 10, 600_000)?),
            t4: Duration::from_millis(self.in_range("sip.t4_ms", raw.t4_ms, 5000, 10, 600_000)?),
            max_message_bytes: self.in_range(
                "sip.max_message_bytes",
                raw.max_message_bytes.map(|x| x as u64),
                65536,
                1500,
                1 << 20,
            )? as usize,
        };
        if sip.t2 < sip.t1 {
            return Err(self.err("sip.t2_ms", "T2 must not be smaller than T1"));
        }
        Ok(sip)
    }

    pub(super) fn limits(&self, raw: &raw::RawLimits) -> Result<Limits, ConfigError> {
        Ok(Limits {
            max_connections: self.in_range(
                "limits.max_connections",
                raw.max_connections.map(|x| x as u64),
                4096,
                1,
                1_000_000,
            )? as usize,
            max_connections_per_ip: self.in_range(
                "limits.max_connections_per_ip",
                raw.max_connections_per_ip.map(|x| x as u64),
                64,
                1,
                1_000_000,
            )? as usize,
            tcp_idle_timeout: Duration::from_secs(self.in_range(
                "limits.tcp_idle_timeout_s",
                raw.tcp_idle_timeout_s,
                600,
                1,
                86_400,
            )?),
            message_timeout: Duration::from_millis(self.in_range(
                "limits.message_timeout_ms",
                raw.message_timeout_ms,
                5000,
                100,
                600_000,
            )?),
            write_queue: self.in_range(
                "limits.write_queue",
                raw.write_queue.map(|x| x as u64),
                256,
                4,
                65_536,
            )? as usize,
            drain_timeout: Duration::from_secs(self.in_range(
                "limits.drain_timeout_s",
                raw.drain_timeout_s,
                32,
                0,
                3600,
            )?),
        })
    }

    pub(super) fn routing(&self, raw: &raw::RawRouting) -> Result<RoutingSettings, ConfigError> {
        let failover_codes = raw.failover_codes.clone().unwrap_or(vec![408, 503, 504]);
        for (i, c) in failover_codes.iter().enumerate() {
            if !(300..=699).contains(c) || *c == 603 {
                return Err(self.err(
                    &format!("routing.failover_codes[{i}]"),
                    &format!("{c} cannot be a failover code (3xx-6xx, and 603 is never retried)"),
                ));
            }
        }
        Ok(RoutingSettings {
            failover_timer: Duration::from_secs(self.in_range(
                "routing.failover_timer_s",
                raw.failover_timer_s,
                10,
                1,
                180,
            )?),
            failover_codes,
            options_interval: Duration::from_secs(self.in_range(
                "routing.options_interval_s",
                raw.options_interval_s,
                60,
                1,
                3600,
            )?),
        })
    }
}
