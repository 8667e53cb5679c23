//! Allow-rule parser and policy engine on arbitrary text. Every line is one rule: parsing must
//! return a rule or an error (never panic); a rule that parses must print canonically and
//! parse back to an equal rule whose canonical text is stable; a policy built from the lines
//! must decide, pre-check and suggest for requests derived from the same input without
//! panicking, and its decisions must agree with its own suggestions.
#![no_main]

use boundary_proxy::rules::{Policy, Rule};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines: Vec<&str> = text.split('\n').collect();
    // The last line, when there are several, is the request: "METHOD HOST PATH".
    let request = if lines.len() > 1 { lines.pop() } else { None };
    let mut good = Vec::new();
    for line in &lines {
        if let Ok(rule) = Rule::parse(line) {
            let canonical = rule.to_string();
            let again: Rule = canonical
                .parse()
                .unwrap_or_else(|e| panic!("canonical {canonical:?} of {line:?} fails: {e:?}"));
            assert_eq!(rule, again, "round trip changed the meaning of {line:?}");
            assert_eq!(canonical, again.to_string(), "canonical text is not stable");
            good.push(line.to_string());
        }
    }
    let policy = match Policy::parse(&lines) {
        Ok(p) => p,
        Err(_) => match Policy::parse(&good) {
            Ok(p) => p,
            Err(e) => panic!("rules that each parse fail together: {e:?}"),
        },
    };
    let Some(request) = request else { return };
    let mut parts = request.splitn(3, ' ');
    let method = parts.next().unwrap_or("GET");
    let host = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("/");
    let decision = policy.decide(method, host, path);
    let could = policy.could_allow_host(host);
    if decision.allowed {
        assert!(
            could,
            "allowed {method} {host} {path} but the host pre-check says no"
        );
        assert!(decision.matched_rule.is_some(), "an allow names no rule");
    }
    // Any method, host and path: `suggest` keeps only rules that allow the request they were
    // made for (fixed after fuzz/artifacts-found/rules-suggest-*), so no input is exempt.
    for suggestion in policy.suggest(method, host, path) {
        // A suggestion is a rule, and adding it must allow the request.
        let mut with = good.clone();
        with.push(suggestion.clone());
        let p = Policy::parse(&with)
            .unwrap_or_else(|e| panic!("suggested rule {suggestion:?} does not parse: {e:?}"));
        assert!(
            p.decide(method, host, path).allowed,
            "suggested rule {suggestion:?} does not allow {method} {host} {path}"
        );
    }
});
