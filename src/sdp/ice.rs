//! ICE attributes (RFC 8839 §5): kept per level so that the anchor can
//! strip them, and `a=candidate` read for the fields the media layer needs.

use super::address::parse_addr;
use super::ConnAddr;

/// An ICE `a=candidate` (RFC 8839 §5.1), the fields the media layer reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Foundation.
    pub foundation: String,
    /// Component id (1 RTP, 2 RTCP).
    pub component: u32,
    /// Transport (`UDP`, `TCP`…).
    pub transport: String,
    /// Priority.
    pub priority: u64,
    /// Connection address.
    pub address: ConnAddr,
    /// Port.
    pub port: u16,
    /// `typ` value (`host`, `srflx`, `prflx`, `relay`).
    pub typ: String,
}

impl Candidate {
    /// Parses a candidate attribute value.
    pub fn parse(value: &str) -> Option<Candidate> {
        let f: Vec<&str> = value.split_ascii_whitespace().collect();
        let foundation = (*f.first()?).to_owned();
        let component = f.get(1)?.parse().ok()?;
        let transport = (*f.get(2)?).to_owned();
        let priority = f.get(3)?.parse().ok()?;
        let address = parse_addr(f.get(4)?).ok()?;
        let port = f.get(5)?.parse().ok()?;
        if *f.get(6)? != "typ" {
            return None;
        }
        let typ = (*f.get(7)?).to_owned();
        Some(Candidate {
            foundation,
            component,
            transport,
            priority,
            address,
            port,
            typ,
        })
    }
}

/// ICE attributes of one level (RFC 8839 §5).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ice {
    /// `a=ice-ufrag`
    pub ufrag: Option<String>,
    /// `a=ice-pwd`
    pub pwd: Option<String>,
    /// `a=ice-options`
    pub options: Option<String>,
    /// `a=ice-lite` (session level)
    pub lite: bool,
    /// `a=candidate` values, verbatim.
    pub candidates: Vec<String>,
    /// `a=end-of-candidates` (RFC 8840)
    pub end_of_candidates: bool,
    /// `a=remote-candidates` value.
    pub remote_candidates: Option<String>,
}

impl Ice {
    /// True if any ICE attribute is present.
    pub fn is_present(&self) -> bool {
        self.ufrag.is_some()
            || self.pwd.is_some()
            || self.options.is_some()
            || self.lite
            || !self.candidates.is_empty()
            || self.end_of_candidates
            || self.remote_candidates.is_some()
    }

    /// The candidates that parse.
    pub fn parsed_candidates(&self) -> Vec<Candidate> {
        self.candidates
            .iter()
            .filter_map(|c| Candidate::parse(c))
            .collect()
    }

    pub(super) fn absorb(&mut self, name: &str, value: Option<&str>) -> bool {
        let owned = || value.map(|v| v.trim().to_owned());
        match name {
            "ice-ufrag" => self.ufrag = owned(),
            "ice-pwd" => self.pwd = owned(),
            "ice-options" => self.options = owned(),
            "ice-lite" => self.lite = true,
            "candidate" => {
                if let Some(v) = owned() {
                    self.candidates.push(v);
                }
            }
            "end-of-candidates" => self.end_of_candidates = true,
            "remote-candidates" => self.remote_candidates = owned(),
            _ => return false,
        }
        true
    }
}

/// Attribute names that belong to ICE and are removed by `strip_ice`
/// (RFC 8839 §5, plus `ice-mismatch`, `ice-pacing` and the pre-standard
/// `x-candidate*` of Lync/Skype for Business).
pub(crate) fn is_ice_attr(name: &str) -> bool {
    matches!(
        name,
        "ice-ufrag"
            | "ice-pwd"
            | "ice-options"
            | "ice-lite"
            | "ice-mismatch"
            | "ice-pacing"
            | "candidate"
            | "end-of-candidates"
            | "remote-candidates"
            | "x-candidate"
            | "x-candidate-ipv6"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_edge_cases() {
        let c = Candidate::parse("1 1 UDP 2130706431 2001:db8::7 5000 typ host").unwrap();
        assert_eq!(c.address, ConnAddr::Ip("2001:db8::7".parse().unwrap()));
        let c = Candidate::parse("2 1 udp 1 4a7b.local 5000 typ host generation 0").unwrap();
        assert_eq!(c.address, ConnAddr::Name("4a7b.local".into()));
        assert_eq!(Candidate::parse("1 1 UDP 1 10.0.0.1 5000 host"), None);
        assert_eq!(Candidate::parse("1 1 UDP 1 10.0.0.1 99999 typ host"), None);
    }
}
