//! `[[dial_plans]]` (normalization rules: a regular expression and its translation, first
//! match wins) and the sites' `emergency_numbers`.

use std::collections::HashSet;

use super::Validator;
use crate::config::{raw, ConfigError, DialPlanDecl, DialRule, DEFAULT_EMERGENCY_NUMBERS};

/// Most rules in one dial plan, and the longest pattern accepted (the regex crate bounds the
/// compiled size as well).
const MAX_RULES: usize = 256;
const MAX_PATTERN: usize = 512;

impl Validator<'_> {
    pub(super) fn dial_plans(
        &self,
        raw: &[raw::RawDialPlan],
    ) -> Result<Vec<DialPlanDecl>, ConfigError> {
        let mut plans = Vec::new();
        let mut names = HashSet::new();
        for (i, p) in raw.iter().enumerate() {
            let key = format!("dial_plans[{i}]");
            if p.name.trim().is_empty() {
                return Err(self.err(&format!("{key}.name"), "a dial plan needs a name"));
            }
            if !names.insert(p.name.clone()) {
                return Err(self.err(
                    &format!("{key}.name"),
                    &format!("dial plan {:?} is defined twice", p.name),
                ));
            }
            if p.rules.len() > MAX_RULES {
                return Err(self.err(
                    &format!("{key}.rules"),
                    &format!("at most {MAX_RULES} rules"),
                ));
            }
            let mut rules = Vec::new();
            for (j, r) in p.rules.iter().enumerate() {
                let k = format!("{key}.rules[{j}]");
                if r.name.trim().is_empty() {
                    return Err(self.err(&format!("{k}.name"), "a rule needs a name"));
                }
                if r.pattern.len() > MAX_PATTERN {
                    return Err(self.err(
                        &format!("{k}.pattern"),
                        &format!("longer than {MAX_PATTERN} characters"),
                    ));
                }
                let re = regex::Regex::new(&r.pattern).map_err(|e| {
                    self.err(
                        &format!("{k}.pattern"),
                        &format!("not a regular expression: {e}"),
                    )
                })?;
                let groups = re.captures_len();
                if let Some(bad) = translation_groups(&r.translation).find(|g| *g >= groups) {
                    return Err(self.err(
                        &format!("{k}.translation"),
                        &format!("${bad} names no group of the pattern"),
                    ));
                }
                rules.push(DialRule {
                    name: r.name.clone(),
                    pattern: r.pattern.clone(),
                    translation: r.translation.clone(),
                });
            }
            plans.push(DialPlanDecl {
                name: p.name.clone(),
                rules,
            });
        }
        Ok(plans)
    }

    /// A site's emergency numbers: dial strings of digits, `*` and `#` (1 to 15), or the
    /// defaults when the key is absent.
    pub(super) fn emergency_numbers(
        &self,
        key: &str,
        raw: Option<&[String]>,
    ) -> Result<Vec<String>, ConfigError> {
        let Some(list) = raw else {
            return Ok(DEFAULT_EMERGENCY_NUMBERS
                .iter()
                .map(|s| (*s).to_owned())
                .collect());
        };
        let mut out: Vec<String> = Vec::new();
        for (i, n) in list.iter().enumerate() {
            let ok = (1..=15).contains(&n.len())
                && n.bytes()
                    .all(|b| b.is_ascii_digit() || b == b'*' || b == b'#');
            if !ok {
                return Err(self.err(
                    &format!("{key}[{i}]"),
                    &format!("{n:?} is not a dial string (1 to 15 digits, '*', '#')"),
                ));
            }
            if !out.contains(n) {
                out.push(n.clone());
            }
        }
        Ok(out)
    }
}

/// The numbered groups a translation names (`$1`, `${2}`).
fn translation_groups(t: &str) -> impl Iterator<Item = usize> + '_ {
    let b = t.as_bytes();
    (0..b.len()).filter_map(move |i| {
        if b.get(i) != Some(&b'$') {
            return None;
        }
        let rest = t.get(i + 1..)?;
        let digits = rest.strip_prefix('{').unwrap_or(rest);
        let n: String = digits.chars().take_while(char::is_ascii_digit).collect();
        n.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::{err_of, lab, LAB};
    use crate::config::Config;
    use std::path::Path;

    const PLAN: &str = "\n[[dial_plans]]\nname = \"lab-plan\"\nrules = [\n  \
        { name = \"extension\", pattern = '^(\\d{4})$', translation = \"+1425555$1\" },\n  \
        { name = \"national\", pattern = '^1?(\\d{10})$', translation = \"+1$1\" },\n]\n";

    #[test]
    fn defaults_and_a_plan_assigned_to_a_site() {
        let c = lab();
        assert_eq!(c.sites[0].emergency_numbers, ["911", "112", "999", "933"]);
        let text = format!(
            "{}{PLAN}",
            LAB.replace(
                "name = \"lab\"\naccess_edge_fqdn = \"ap.lab.example\"\n",
                "name = \"lab\"\naccess_edge_fqdn = \"ap.lab.example\"\ndial_plan = \"lab-plan\"\nemergency_numbers = [\"911\", \"112\"]\n",
            )
        );
        let c = Config::from_toml(Path::new("t.toml"), &text).unwrap();
        assert_eq!(c.sites[0].dial_plan.as_deref(), Some("lab-plan"));
        assert_eq!(c.sites[0].emergency_numbers, ["911", "112"]);
        assert_eq!(c.dial_plans[0].rules.len(), 2);
        assert_eq!(c.dial_plans[0].rules[0].translation, "+1425555$1");
    }

    #[test]
    fn bad_plans_name_their_key() {
        let unknown = LAB.replace(
            "name = \"lab\"\naccess_edge_fqdn = \"ap.lab.example\"\n",
            "name = \"lab\"\naccess_edge_fqdn = \"ap.lab.example\"\ndial_plan = \"nope\"\n",
        );
        assert_eq!(err_of(&unknown).key, "sites[0].dial_plan");
        let bad_re = format!("{LAB}{}", PLAN.replace("^(\\d{4})$", "^(\\d{4}$"));
        assert_eq!(err_of(&bad_re).key, "dial_plans[0].rules[0].pattern");
        let bad_group = format!("{LAB}{}", PLAN.replace("+1425555$1", "+1425555$2"));
        assert_eq!(err_of(&bad_group).key, "dial_plans[0].rules[0].translation");
        let twice = format!("{LAB}{PLAN}{PLAN}");
        assert_eq!(err_of(&twice).key, "dial_plans[1].name");
        let bad_number = LAB.replace(
            "name = \"lab\"\naccess_edge_fqdn = \"ap.lab.example\"\n",
            "name = \"lab\"\naccess_edge_fqdn = \"ap.lab.example\"\nemergency_numbers = [\"9-1-1\"]\n",
        );
        assert_eq!(err_of(&bad_number).key, "sites[0].emergency_numbers[0]");
    }

    #[test]
    fn several_cloud_peers_in_priority_order() {
        let text = LAB.replace(
            "fqdn = \"sip.cloud.lab.example\"",
            "fqdns = [\"sip.cloud.lab.example\", \"sip2.cloud.lab.example\"]",
        );
        let c = Config::from_toml(Path::new("t.toml"), &text).unwrap();
        assert_eq!(c.cloud_peer.fqdn.as_str(), "sip.cloud.lab.example");
        assert_eq!(c.cloud_peer.fqdns.len(), 2);
        assert_eq!(
            c.tls.cloud_peer_names,
            ["sip.cloud.lab.example", "sip2.cloud.lab.example"]
        );
        let both = LAB.replace(
            "fqdn = \"sip.cloud.lab.example\"",
            "fqdn = \"sip.cloud.lab.example\"\nfqdns = [\"sip2.cloud.lab.example\"]",
        );
        assert_eq!(err_of(&both).key, "cloud_peer.fqdns");
        let twice = LAB.replace(
            "fqdn = \"sip.cloud.lab.example\"",
            "fqdns = [\"sip.cloud.lab.example\", \"SIP.cloud.lab.example\"]",
        );
        assert_eq!(err_of(&twice).key, "cloud_peer.fqdns[1]");
        assert_eq!(lab().cloud_peer.fqdns.len(), 1);
    }
}
