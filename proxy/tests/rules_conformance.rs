//! Every row of the conformance table with Go's boundary (tests/data/rules-conformance.tsv:
//! the rule, the request, Go's answer, ours, and why they differ where they do), plus the
//! parser's error messages and round-trip properties.

use boundary_proxy::rules::{Policy, Rule};
use proptest::prelude::*;

/// Splits `https://host[:port]/path?query` into host (no port) and path-with-query.
fn split_url(url: &str) -> (String, String) {
    let rest = url.split_once("://").expect("scheme").1;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let host = match authority.rfind(':') {
        Some(i) => &authority[..i],
        None => authority,
    };
    (host.to_string(), path.to_string())
}

/// One answer in the table.
fn answer(
    policy: Result<Policy, boundary_proxy::rules::RuleError>,
    method: &str,
    url: &str,
) -> &'static str {
    match policy {
        Err(_) => "error",
        Ok(policy) => {
            let (host, path) = split_url(url);
            let d = policy.decide(method, &host, &path);
            assert_eq!(d.matched_rule.is_some(), d.allowed, "{url}");
            if d.allowed {
                "allow"
            } else {
                "deny"
            }
        }
    }
}

#[test]
fn conformance_table() {
    let table = include_str!("data/rules-conformance.tsv");
    let mut rows = 0;
    let mut differences = 0;
    for (lineno, line) in table.lines().enumerate() {
        let at = format!("line {}", lineno + 1);
        if line.starts_with('#') {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols.len(), 7, "{at}: {line:?}");
        let [rules, method, url, go, ours, why, source] = cols[..] else {
            unreachable!()
        };
        for a in [go, ours] {
            assert!(
                ["allow", "deny", "error"].contains(&a),
                "{at}: answer {a:?}"
            );
        }
        assert!(
            source.starts_with("rulesengine/"),
            "{at}: source {source:?}"
        );
        if go == ours {
            assert!(
                why.is_empty(),
                "{at}: same answer, yet a difference is noted"
            );
        } else {
            differences += 1;
            assert!(
                why.starts_with("deliberate: "),
                "{at}: Go says {go}, we say {ours}, and no deliberate reason is given"
            );
        }
        let rules: Vec<&str> = rules.split(" | ").collect();
        let got = answer(Policy::parse(&rules), method, url);
        assert_eq!(got, ours, "{at}: {rules:?} {method} {url}");
        rows += 1;
    }
    assert_eq!(rows, 80, "every row of the table ran");
    assert_eq!(differences, 14, "every deliberate difference is counted");
}

/// (rule, column, a phrase the message must contain)
const MALFORMED: &[(&str, usize, &str)] = &[
    ("domain=api.*", 8, "a domain pattern cannot end with \"*\"; to allow every subdomain of api write \"domain=*.api.<suffix>\""),
    ("", 1, "the rule is empty"),
    ("   ", 1, "the rule is empty"),
    ("domain", 1, "expected key=value"),
    ("host=github.com", 1, "unknown key \"host\"; expected method, domain or path (to match a host write domain=)"),
    ("Domain=github.com", 1, "keys are lowercase; write \"domain\""),
    ("domain=", 8, "domain= has no value"),
    ("domain=a.com domain=b.com", 14, "key \"domain\" appears twice; a request has one host, and Go's boundary would silently join the two values into one host name (domain=a.com domain=b.com as a.com.b.com)"),
    (" domain=a.com", 1, "the rule starts with whitespace"),
    ("path=/a//b", 8, "\"//\" cannot appear in a path pattern"),
    ("path=", 6, "Go's boundary reads an empty path pattern as every path"),
    ("path=/a,", 9, "empty path in the list"),
    ("domain = a.com", 1, "no spaces are allowed around \"=\""),
    ("=a.com", 1, "a value without a key"),
    ("domain=github.com:8080", 18, "a domain cannot carry a port"),
    ("domain=github.com.", 18, "cannot end with \".\""),
    ("domain=a..com", 10, "empty label"),
    ("domain=.a.com", 8, "empty label"),
    ("domain=my_host.com", 10, "\"_\" is not allowed"),
    ("domain=-a.com", 8, "cannot start or end with \"-\""),
    ("domain=gith*b.com", 8, "\"*\" must be a whole label"),
    ("domain=https://github.com", 13, "not a URL; write domain=github.com"),
    ("domain=github.com/api", 18, "write domain=github.com path=/api"),
    ("domain=\"github.com\"", 8, "quotes are not part of the rule language"),
    ("method=GET,,POST", 12, "empty method in the list"),
    ("method=GET,", 12, "empty method in the list"),
    ("method=GE(T", 10, "cannot appear in an HTTP method"),
    ("path=api", 6, "a path pattern starts with \"/\""),
    ("path=/api/v*", 11, "\"*\" must be a whole segment"),
    ("path=/a,,/b", 9, "empty path in the list"),
    ("path=/a?x=1", 8, "cannot contain a query or fragment"),
    ("path=/a/../b", 9, "dot segments"),
    ("domain=a.com extra", 14, "expected key=value"),
    ("path=/api/a%2Fb", 11, "an encoded slash (%2F) cannot appear in a path pattern"),
    ("path=/a;v=1", 7, "\";\" (a path parameter) cannot appear in a path pattern"),
    ("domain=ключ.com", 8, "is not allowed in a domain label"),
];

#[test]
fn malformed_rules_are_explained() {
    assert!(MALFORMED.len() >= 20);
    for &(rule, column, phrase) in MALFORMED {
        let err = Rule::parse(rule).expect_err(rule);
        assert_eq!(err.column, column, "column for {rule:?}: {err}");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("invalid allow rule {rule:?} at column {column}: ")),
            "{text}"
        );
        assert!(
            text.contains(phrase),
            "message for {rule:?} lacks {phrase:?}: {text}"
        );
    }
}

#[test]
fn documented_example_message() {
    let err = Rule::parse("domain=api.*").unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid allow rule \"domain=api.*\" at column 8: a domain pattern cannot end with \"*\"; to allow every subdomain of api write \"domain=*.api.<suffix>\""
    );
}

fn rule_strategy() -> impl Strategy<Value = String> {
    let method = prop::sample::select(vec!["GET", "HEAD", "POST", "get,put", "*", "PATCH,DELETE"]);
    let label = "[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?";
    let domain = prop::collection::vec(
        prop_oneof![label.prop_map(|s| s), Just("*".to_string())],
        1..4,
    )
    .prop_map(|labels| labels.join("."));
    let segment = prop_oneof!["[A-Za-z0-9._~%-]{1,8}", Just("*".to_string())];
    let path = prop::collection::vec(
        prop::collection::vec(segment, 0..4).prop_map(|s| format!("/{}", s.join("/"))),
        1..3,
    )
    .prop_map(|ps| ps.join(","));
    (
        prop::option::of(method),
        prop::option::of(domain),
        prop::option::of(path),
    )
        .prop_map(|(m, d, p)| {
            let mut parts = Vec::new();
            if let Some(m) = m {
                parts.push(format!("method={m}"));
            }
            if let Some(d) = d {
                parts.push(format!("domain={d}"));
            }
            if let Some(p) = p {
                parts.push(format!("path={p}"));
            }
            parts.join(" ")
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_input_never_panics(s in "\\PC{0,64}") {
        let _ = Rule::parse(&s);
        if let Ok(p) = Policy::parse(&[s.as_str()]) {
            let _ = p.decide("GET", "a.example.com", "/x/../y?z");
        }
    }

    #[test]
    fn random_rule_like_input_never_panics(s in "[a-z=*.,/ %:_-]{0,40}") {
        let _ = Rule::parse(&s);
    }

    #[test]
    fn parsed_rules_print_back_to_the_same_rule(text in rule_strategy()) {
        if let Ok(rule) = Rule::parse(&text) {
            let printed = rule.to_string();
            let again = Rule::parse(&printed).unwrap_or_else(|e| panic!("{text:?} printed as {printed:?}: {e}"));
            prop_assert_eq!(&again, &rule, "{} printed as {}", text, printed);
        }
    }

    #[test]
    fn any_parsed_rule_round_trips(s in "\\PC{0,48}") {
        if let Ok(rule) = Rule::parse(&s) {
            let printed = rule.to_string();
            let again = Rule::parse(&printed);
            prop_assert!(again.is_ok(), "{:?} printed as {:?} does not parse", s, printed);
            prop_assert_eq!(again.unwrap(), rule);
        }
    }
}
