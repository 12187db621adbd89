//! Dial plans and emergency numbers, pure.
//!
//! A **dial plan** is a list of normalization rules (as Teams and Skype for Business tenant
//! dial plans): each a regular expression over the dialled string and its translation (`$1`,
//! `${2}` name the pattern's groups); the first rule whose pattern matches wins and its
//! translation, expanded, is the number routed. A site's dial plan applies when the tenant's
//! `UseOnPremDialPlan` is on. The patterns are checked when the configuration is read; they
//! are compiled once, when the routing table is built.
//!
//! **Emergency numbers** are per site: a dialled string equal to one of them (visual
//! separators dropped) goes to that site's gateways whatever the caller's policy or voice
//! setting, and is never refused as an incomplete address.

use regex::Regex;

use crate::config::{DialPlanDecl, DialRule};

/// Drops the visual separators of RFC 3966 (`-`, `.`, `(`, `)`) and spaces from a dialled
/// string.
pub fn dial_string(raw: &str) -> String {
    raw.chars()
        .filter(|c| !matches!(c, '-' | '.' | '(' | ')' | ' '))
        .collect()
}

/// Is `dialled` (separators dropped; a leading `+` is ignored) one of `numbers`?
pub fn is_emergency(numbers: &[String], dialled: &str) -> bool {
    let d = dial_string(dialled);
    let d = d.strip_prefix('+').unwrap_or(&d);
    numbers.iter().any(|n| n == d)
}

/// One compiled rule.
#[derive(Debug, Clone)]
struct Rule {
    decl: DialRule,
    re: Regex,
}

/// A dial plan with its rules compiled.
#[derive(Debug, Clone)]
pub struct DialPlan {
    pub name: String,
    rules: Vec<Rule>,
}

/// Two plans are equal when their declarations are (the compiled form follows from them).
impl PartialEq for DialPlan {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.rules.len() == other.rules.len()
            && self
                .rules
                .iter()
                .zip(&other.rules)
                .all(|(a, b)| a.decl == b.decl)
    }
}

impl Eq for DialPlan {}

/// What normalization did: the rule that matched and the translated string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized<'a> {
    pub rule: &'a DialRule,
    pub number: String,
}

impl DialPlan {
    /// Compiles a declared plan; a pattern that does not compile (the validator refuses them
    /// first) is an error naming the rule.
    pub fn compile(decl: &DialPlanDecl) -> Result<DialPlan, String> {
        let mut rules = Vec::with_capacity(decl.rules.len());
        for r in &decl.rules {
            let re = Regex::new(&r.pattern)
                .map_err(|e| format!("dial plan {} rule {}: pattern: {e}", decl.name, r.name))?;
            rules.push(Rule {
                decl: r.clone(),
                re,
            });
        }
        Ok(DialPlan {
            name: decl.name.clone(),
            rules,
        })
    }

    /// The first rule matching `dialled` (separators dropped) and its translation; `None` when
    /// no rule matches.
    pub fn normalize(&self, dialled: &str) -> Option<Normalized<'_>> {
        let d = dial_string(dialled);
        self.rules.iter().find_map(|r| {
            let caps = r.re.captures(&d)?;
            let mut number = String::new();
            caps.expand(&r.decl.translation, &mut number);
            Some(Normalized {
                rule: &r.decl,
                number,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> DialPlan {
        let rule = |name: &str, pattern: &str, translation: &str| DialRule {
            name: name.into(),
            pattern: pattern.into(),
            translation: translation.into(),
        };
        DialPlan::compile(&DialPlanDecl {
            name: "lab-plan".into(),
            rules: vec![
                rule("extension", r"^(\d{4})$", "+1425555$1"),
                rule("national", r"^1?(\d{10})$", "+1$1"),
                rule("international", r"^011(\d{7,15})$", "+${1}"),
                rule("catch-all", r"^(\d+)$", "+1$1"),
            ],
        })
        .unwrap()
    }

    #[test]
    fn first_matching_rule_wins_and_its_groups_expand() {
        let p = plan();
        let n = p.normalize("4711").unwrap();
        assert_eq!(n.rule.name, "extension");
        assert_eq!(n.number, "+14255554711");
        let n = p.normalize("(425) 555-0101").unwrap();
        assert_eq!(n.rule.name, "national");
        assert_eq!(n.number, "+14255550101");
        let n = p.normalize("14255550101").unwrap();
        assert_eq!(n.rule.name, "national");
        let n = p.normalize("01133144556677").unwrap();
        assert_eq!(n.rule.name, "international");
        assert_eq!(n.number, "+33144556677");
        // Also matched by the catch-all, but the first match wins.
        assert_eq!(p.normalize("0123").unwrap().rule.name, "extension");
        assert!(p.normalize("+14255550101").is_none(), "no rule for E.164");
        assert!(p.normalize("abc").is_none());
    }

    #[test]
    fn bad_pattern_does_not_compile() {
        let decl = DialPlanDecl {
            name: "p".into(),
            rules: vec![DialRule {
                name: "r".into(),
                pattern: "(".into(),
                translation: String::new(),
            }],
        };
        let e = DialPlan::compile(&decl).unwrap_err();
        assert!(e.contains("rule r"), "{e}");
    }

    #[test]
    fn emergency_numbers_compare_dial_strings() {
        let n: Vec<String> = ["911", "112"].iter().map(|s| s.to_string()).collect();
        assert!(is_emergency(&n, "911"));
        assert!(is_emergency(&n, "+911"));
        assert!(is_emergency(&n, "1-1-2"));
        assert!(!is_emergency(&n, "9110"));
        assert!(!is_emergency(&n, "999"));
        assert!(!is_emergency(&[], "911"));
    }
}
