//! Call statistics derived from the call records as they arrive (a [`RecordSink`] of the
//! writer thread): calls by direction, site, gateway and outcome, the setup-time histogram, and
//! the recent failures the status page lists. Labels are bounded: a site or gateway the
//! configuration does not name counts as `other`, a call without a gateway as `none`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

use crate::cdr::writer::RecordSink;
use crate::cdr::{CallRecord, CdrEntry};
use crate::config::Config;

/// Upper bounds (seconds) of the `sipedge_call_setup_seconds` buckets.
pub const SETUP_BUCKETS: [f64; 11] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0];

/// How many failed calls the status page shows.
pub const RECENT_FAILURES: usize = 20;

/// A cumulative histogram (Prometheus semantics).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// Count per bucket of [`SETUP_BUCKETS`] (not cumulative; the exposition sums them).
    pub buckets: [u64; SETUP_BUCKETS.len()],
    pub count: u64,
    pub sum: f64,
}

impl Histogram {
    pub fn observe(&mut self, v: f64) {
        if let Some(i) = SETUP_BUCKETS.iter().position(|b| v <= *b) {
            if let Some(n) = self.buckets.get_mut(i) {
                *n += 1;
            }
        }
        self.count += 1;
        self.sum += v;
    }

    /// `(le, cumulative count)` per bucket, then `+Inf`.
    pub fn cumulative(&self) -> Vec<(String, u64)> {
        let mut acc = 0;
        let mut v: Vec<(String, u64)> = SETUP_BUCKETS
            .iter()
            .zip(self.buckets.iter())
            .map(|(le, n)| {
                acc += n;
                (format!("{le}"), acc)
            })
            .collect();
        v.push(("+Inf".into(), self.count));
        v
    }
}

/// A failed (unanswered, not cancelled) call, for the status page.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub end: String,
    pub call_id: String,
    pub direction: &'static str,
    pub gateway: Option<String>,
    pub status: u16,
    pub outcome: &'static str,
    pub reason: String,
}

/// What the records so far add up to.
#[derive(Debug, Clone, Default)]
pub struct CallStats {
    sites: BTreeSet<String>,
    gateways: BTreeSet<String>,
    /// (direction, site, gateway, outcome) → calls.
    pub calls: BTreeMap<(&'static str, String, String, &'static str), u64>,
    /// Setup time by direction.
    pub setup: BTreeMap<&'static str, Histogram>,
    pub failures: VecDeque<Failure>,
}

impl CallStats {
    /// Statistics labelled with the sites and peers (gateways, mediation servers) of `cfg`.
    pub fn for_config(cfg: &Config) -> CallStats {
        let sites = cfg.sites.iter().map(|s| s.name.clone()).collect();
        let mut gateways: BTreeSet<String> = cfg
            .gateways
            .iter()
            .map(|g| g.name.to_string().to_ascii_lowercase())
            .collect();
        for s in &cfg.sites {
            for m in &s.mediation_servers {
                gateways.insert(m.fqdn.to_string().to_ascii_lowercase());
            }
        }
        CallStats {
            sites,
            gateways,
            ..CallStats::default()
        }
    }

    fn site_label(&self, s: &str) -> String {
        if self.sites.contains(s) {
            s.to_owned()
        } else {
            "other".into()
        }
    }

    fn gateway_label(&self, g: Option<&str>) -> String {
        match g.map(str::to_ascii_lowercase) {
            None => "none".into(),
            Some(g) if self.gateways.contains(&g) => g,
            Some(_) => "other".into(),
        }
    }

    /// Adds one record.
    pub fn observe(&mut self, r: &CallRecord, e: &CdrEntry) {
        let direction = r.direction.as_str();
        let outcome = r.outcome();
        let key = (
            direction,
            self.site_label(&r.site),
            self.gateway_label(r.gateway.as_deref()),
            outcome,
        );
        *self.calls.entry(key).or_insert(0) += 1;
        if let Some(s) = r.setup() {
            self.setup
                .entry(direction)
                .or_default()
                .observe(s.as_secs_f64());
        }
        if !matches!(outcome, "answered" | "cancelled") {
            if self.failures.len() >= RECENT_FAILURES {
                self.failures.pop_front();
            }
            self.failures.push_back(Failure {
                end: e.end.clone(),
                call_id: r.call_id.clone(),
                direction,
                gateway: r.gateway.clone(),
                status: r.status,
                outcome,
                reason: r.reason.clone(),
            });
        }
    }

    /// Calls ended so far by outcome (for the status page).
    pub fn by_outcome(&self) -> BTreeMap<&'static str, u64> {
        let mut m = BTreeMap::new();
        for ((_, _, _, o), n) in &self.calls {
            *m.entry(*o).or_insert(0) += n;
        }
        m
    }
}

/// The writer-thread side of shared [`CallStats`].
#[derive(Debug, Clone)]
pub struct StatsSink(pub Arc<Mutex<CallStats>>);

impl RecordSink for StatsSink {
    fn name(&self) -> &'static str {
        "stats"
    }

    fn write(&mut self, r: &CallRecord, e: &CdrEntry) -> Result<(), String> {
        self.0
            .lock()
            .map_err(|_| "call statistics lock poisoned".to_owned())?
            .observe(r, e);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdr::test_support::{answered, failed};
    use crate::cdr::WallClock;
    use std::time::{Instant, SystemTime};

    #[test]
    fn records_add_up_with_bounded_labels() {
        let cfg = crate::config::Config::from_toml(
            std::path::Path::new("/x/sipedge.toml"),
            include_str!("../../config/sipedge.toml"),
        )
        .unwrap();
        let mut st = CallStats::for_config(&cfg);
        let i0 = Instant::now();
        let clock = WallClock::new(i0, SystemTime::now());
        let mut recs = vec![answered(i0, "a", 3), failed(i0, "b", 486)];
        let mut odd = failed(i0, "c", 503);
        odd.gateway = Some("intruder.example".into());
        odd.site = "elsewhere".into();
        recs.push(odd);
        for r in &recs {
            st.observe(r, &CdrEntry::from_record(r, &clock));
        }
        let key = |d, s: &str, g: &str, o| (d, s.to_owned(), g.to_owned(), o);
        assert_eq!(
            st.calls
                .get(&key("inbound", "lab", "gw1.lab.example", "answered")),
            Some(&1)
        );
        assert_eq!(
            st.calls
                .get(&key("outbound", "lab", "gw2.lab.example", "busy")),
            Some(&1)
        );
        assert_eq!(
            st.calls.get(&key("outbound", "other", "other", "failed")),
            Some(&1)
        );
        let h = &st.setup["inbound"];
        assert_eq!(h.count, 1);
        let cum = h.cumulative();
        assert_eq!(cum.iter().find(|(le, _)| le == "0.25").unwrap().1, 0);
        assert_eq!(cum.iter().find(|(le, _)| le == "0.5").unwrap().1, 1);
        assert_eq!(cum.last().unwrap(), &("+Inf".to_owned(), 1));
        assert_eq!(st.failures.len(), 2);
        assert_eq!(st.by_outcome()["busy"], 1);
    }
}
