//! `sipedge check`'s security warnings: configurations that work but trust less than they
//! seem to. Not errors (a lab, or a peer that only speaks UDP, may need them).

use super::{Config, SrtpMode, Transport};

impl Config {
    /// What `sipedge check` warns about: the cloud peer over UDP or TCP (its identity is its
    /// source address only, which UDP lets anyone spoof), and SDES keys (`a=crypto`, RFC 4568
    /// §8.3: only as safe as the signalling that carries them) in SDP over non-TLS signalling.
    pub fn security_warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let p = &self.cloud_peer;
        if p.transport != Transport::Tls {
            out.push(format!(
                "cloud_peer.transport = \"{}\": the cloud peer is identified by its source address only{}; use \"tls\" (mutual TLS, identity from its certificate)",
                p.transport.uri_param(),
                if p.transport == Transport::Udp {
                    ", which anyone can spoof over UDP"
                } else {
                    ""
                }
            ));
        }
        if self.media.is_none() {
            // No anchoring: we add no keys (the peers' own SDP passes untouched).
            return out;
        }
        if p.srtp != SrtpMode::Off && p.transport != Transport::Tls {
            out.push(format!(
                "cloud_peer.srtp = \"{}\" over {}: SDES keys (a=crypto) would travel in clear signalling",
                srtp_name(p.srtp),
                p.transport.uri_param()
            ));
        }
        for (i, g) in self.gateways.iter().enumerate() {
            if g.srtp != SrtpMode::Off && g.transport != Transport::Tls {
                out.push(format!(
                    "gateways[{i}] ({}): srtp = \"{}\" over {}: SDES keys (a=crypto) would travel in clear signalling",
                    g.name,
                    srtp_name(g.srtp),
                    g.transport.uri_param()
                ));
            }
        }
        out
    }
}

fn srtp_name(m: SrtpMode) -> &'static str {
    match m {
        SrtpMode::Required => "required",
        SrtpMode::Optional => "optional",
        SrtpMode::Off => "off",
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::lab;
    use crate::config::{SrtpMode, Transport};

    #[test]
    fn cloud_peer_over_udp_and_sdes_in_clear_are_warned() {
        let mut c = lab();
        let w = c.security_warnings();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("cloud_peer.transport = \"udp\"") && w[0].contains("spoof"));
        assert!(w[1].contains("SDES keys") && w[1].contains("cloud_peer.srtp = \"optional\""));
        c.gateways[0].srtp = SrtpMode::Required;
        let w = c.security_warnings();
        assert!(
            w.iter()
                .any(|x| x.starts_with("gateways[0] (gw1.lab.example)")),
            "{w:?}"
        );
        c.gateways[0].transport = Transport::Tls;
        c.cloud_peer.transport = Transport::Tls;
        assert!(c.security_warnings().is_empty());
        c.cloud_peer.transport = Transport::Tcp;
        let w = c.security_warnings();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(!w[0].contains("spoof"));
        c.media = None;
        assert_eq!(c.security_warnings().len(), 1);
    }
}
