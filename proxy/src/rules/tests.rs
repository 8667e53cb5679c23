use super::*;

fn decide(rules: &[&str], method: &str, host: &str, path: &str) -> Decision {
    Policy::parse(rules)
        .expect("rules parse")
        .decide(method, host, path)
}

#[test]
fn first_matching_rule_is_reported_byte_for_byte() {
    let rules = [
        "domain=*.github.com",
        "domain=api.github.com  method=GET",
        "domain=*",
    ];
    let d = decide(&rules, "GET", "api.github.com", "/");
    assert_eq!(d.matched_rule.as_deref(), Some("domain=*.github.com"));
    let d = decide(
        &["method=GET   domain=Example.COM"],
        "GET",
        "example.com",
        "/",
    );
    assert_eq!(
        d.matched_rule.as_deref(),
        Some("method=GET   domain=Example.COM")
    );
    let d = decide(
        &["domain=a.com path=/x", "domain=a.com"],
        "GET",
        "a.com",
        "/y",
    );
    assert_eq!(d.matched_rule.as_deref(), Some("domain=a.com"));
}

#[test]
fn wildcard_positions() {
    assert!(decide(&["domain=*.a.com"], "GET", "x.y.a.com", "/").allowed);
    assert!(!decide(&["domain=*.a.com"], "GET", "a.com", "/").allowed);
    assert!(decide(&["domain=x.*.a.com"], "GET", "x.b.a.com", "/").allowed);
    assert!(!decide(&["domain=x.*.a.com"], "GET", "x.b.c.a.com", "/").allowed);
    assert!(!decide(&["domain=x.*.a.com"], "GET", "x.a.com", "/").allowed);
    assert!(decide(&["domain=*"], "GET", "anything.example", "/").allowed);
    assert!(!decide(&["domain=a.com"], "GET", "", "/").allowed);
    assert!(!decide(&["domain=a.com"], "GET", "a..com", "/").allowed);
}

#[test]
fn a_path_rule_must_allow_every_reading_of_the_path() {
    let public = ["path=/public/*"];
    for raw in [
        "/public/..%2Fprivate",
        "/public/..%5Cprivate",
        "/public\\..\\private",
        "/public/..%252Fprivate",
        "/public/..;/private",
        "/public/..%3B/private",
        "/private;/../public/x",
        "/private%3F/../public/x",
        // Look-alikes that IIS's best-fit mapping or an NFKC-normalising framework reads as
        // separators and dots, overlong UTF-8, and Windows' trailing dots and spaces.
        "/public/..%EF%BC%8Fprivate",
        "/public/..%E2%88%95private",
        "/public/..%E2%81%84private",
        "/public/..%EF%BC%BCprivate",
        "/public/..%C2%A5private",
        "/public/%EF%BC%8E%EF%BC%8E/private",
        "/public/%E2%80%A5/private",
        "/public/..%C0%AFprivate",
        "/public/%C0%AE%C0%AE/private",
        "/public/..%E0%80%AFprivate",
        "/public/..%20/private",
        "/public/...%20./private",
        "/public/..%252520/private",
        "/public/x%EF%BC%8F..%EF%BC%8F..%EF%BC%8Fprivate",
    ] {
        assert!(!decide(&public, "GET", "a.com", raw).allowed, "{raw}");
    }
    // Windows reads `private.` as `private`; other origins do not, so no rule allows both.
    assert!(!decide(&["path=/private/*"], "GET", "a.com", "/private./x").allowed);
    assert!(!decide(&public, "GET", "a.com", "/public./../private/x").allowed);
    for raw in [
        "/public/x",
        "/public/a%20b",
        "/public/x;jsessionid=1",
        "/public/x%2Fy",
        "/public/caf%C3%A9",
        "/public/%E2%82%AC.txt",
        "/public/v1.2/x",
    ] {
        assert!(decide(&public, "GET", "a.com", raw).allowed, "{raw}");
    }
    // A pattern holding a separator some origin reads could never match every reading.
    for bad in [
        "path=/a%2Fb",
        "path=/a%5Cb",
        "path=/a\\b",
        "path=/a;b",
        "path=/a%3Fb",
        "path=/a%252Fb",
        "path=/a%EF%BC%8Fb",
        "path=/v1./x",
        "path=/x%20",
        "path=/\u{FF50}ublic",
    ] {
        assert!(Rule::parse(bad).is_err(), "{bad}");
    }
    let e = Rule::parse("path=/v1./x").unwrap_err().to_string();
    assert!(e.contains("write \"v1\""), "{e}");
}

#[test]
fn paths_are_normalised() {
    assert!(!decide(&["path=/api/*"], "GET", "a.com", "/api/v1/../../admin").allowed);
    assert!(decide(&["path=/admin"], "GET", "a.com", "/api/v1/../../admin").allowed);
    assert!(!decide(&["path=/api/*/users"], "GET", "a.com", "/api/x%2Fy/z").allowed);
    assert!(decide(&["path=/api/*"], "GET", "a.com", "/api/x%2Fy").allowed);
    // The plain reading keeps `%2F` inside a segment, which `/api/users` does not match.
    assert!(!decide(&["path=/api/users"], "GET", "a.com", "/api%2Fusers").allowed);
    assert!(decide(&["path=/users"], "GET", "a.com", "/%75sers").allowed);
    assert!(decide(&["path=/"], "GET", "a.com", "/").allowed);
    assert!(decide(&["path=/"], "GET", "a.com", "").allowed);
    // Go's corners: `path=/` matches every path; a trailing `*` matches an empty last
    // segment; a literal does not; a pattern's trailing slash is dropped.
    assert!(decide(&["path=/"], "GET", "a.com", "/x/y").allowed);
    assert!(decide(&["path=/*"], "GET", "a.com", "/").allowed);
    assert!(decide(&["path=/api/*"], "GET", "a.com", "/api/").allowed);
    assert!(!decide(&["path=/api"], "GET", "a.com", "/api/").allowed);
    assert!(!decide(&["path=/api/"], "GET", "a.com", "/api/").allowed);
    assert!(decide(&["path=/api/"], "GET", "a.com", "/api").allowed);
    // Repeated slashes: Go keeps the empty segment, an origin may merge it; both readings
    // must be allowed.
    assert!(!decide(&["path=/a/b"], "GET", "a.com", "/a//b").allowed);
    assert!(!decide(&["path=/a/*/b"], "GET", "a.com", "/a//b").allowed);
    assert!(decide(&["path=/a/*"], "GET", "a.com", "/a//b").allowed);
    assert!(!decide(&["path=/public/*"], "GET", "a.com", "/public//../x").allowed);
}

#[test]
fn methods_are_case_sensitive_as_in_go() {
    assert!(!decide(&["method=get"], "GET", "a.com", "/").allowed);
    assert!(!decide(&["method=GET"], "get", "a.com", "/").allowed);
    assert!(decide(&["method=get"], "get", "a.com", "/").allowed);
    assert!(!decide(&["method=GET,HEAD"], "POST", "a.com", "/").allowed);
    assert!(decide(&["method=GET,*"], "PATCH", "a.com", "/").allowed);
}

#[test]
fn repeated_keys_join_as_in_go_except_domain() {
    let both = Rule::parse("method=GET method=POST path=/a path=/b/*").unwrap();
    assert_eq!(both, Rule::parse("method=GET,POST path=/a,/b/*").unwrap());
    assert!(decide(&["method=GET method=POST"], "POST", "a.com", "/").allowed);
    assert!(decide(&["path=/a path=/b"], "GET", "a.com", "/b").allowed);
    assert!(decide(&["method=GET method=*"], "PUT", "a.com", "/").allowed);
    let err = Rule::parse("domain=a.com domain=b.com").unwrap_err();
    assert!(err.to_string().contains("a.com.b.com"), "{err}");
    for bad in [
        "path=//a",
        "path=/a//b",
        "path=/a//",
        "path=//",
        "path=",
        "path=/a,",
    ] {
        assert!(Rule::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn no_rules_denies_everything() {
    let p = Policy::parse::<&str>(&[]).unwrap();
    assert!(p.is_empty());
    assert!(!p.decide("GET", "a.com", "/").allowed);
    assert!(!p.could_allow_host("a.com"));
}

#[test]
fn could_allow_host_ignores_method_and_path() {
    let p = Policy::parse(&["method=POST domain=api.a.com path=/x"]).unwrap();
    assert!(p.could_allow_host("api.a.com"));
    assert!(p.could_allow_host("API.a.com."));
    assert!(!p.could_allow_host("a.com"));
    let p = Policy::parse(&["path=/x"]).unwrap();
    assert!(p.could_allow_host("anything.com"));
}

#[test]
fn suggestions_parse_and_would_allow() {
    let p = Policy::parse(&["domain=other.com"]).unwrap();
    for (m, h, path) in [
        ("GET", "api.example.com", "/v1/x?y=1"),
        ("POST", "127.0.0.1", "/"),
        ("GET", "Example.COM.", "/a,b/*"),
        ("DELETE", "a.com", "/a/../b%2Fc"),
        ("get", "a.com", "/api/"),
        ("GET", "a.com", "/"),
        ("GET", "a.com", "/a//b"),
    ] {
        let s = p.suggest(m, h, path);
        assert!(!s.is_empty(), "{h}{path}");
        for rule in s {
            let q = Policy::parse(&[rule.as_str()]).unwrap();
            assert!(
                q.decide(m, h, path).allowed,
                "{rule} should allow {m} {h}{path}"
            );
        }
    }
    // The narrow suggestion names the method as sent and ends an empty segment in `*`.
    let s = p.suggest("get", "a.com", "/api/");
    assert_eq!(s[0], "method=get domain=a.com path=/api/*");
    assert_eq!(
        p.suggest("GET", "a.com", "/")[0],
        "method=GET domain=a.com path=/*"
    );
    // A host that is not a valid domain pattern gets no suggestion rather than a broken one.
    assert!(p.suggest("GET", "bad_host.com", "/").is_empty());
    // Found by fuzzing: a control byte in the host made a suggestion that parsed (the byte is a
    // separator) but allowed another host.
    assert!(p.suggest("GET", "x.testa\r", "/").is_empty());
    // Also found by fuzzing: a method with a comma printed as two methods.
    for rule in p.suggest("GET,HEAD/d", "a.com", "/") {
        let q = Policy::parse(&[rule.as_str()]).unwrap();
        assert!(q.decide("GET,HEAD/d", "a.com", "/").allowed, "{rule}");
    }
    // A tab in a path is printed percent-encoded, so that suggestion stays valid.
    assert!(p
        .suggest("GET", "a.com", "/x\ty")
        .iter()
        .any(|r| r.contains("path=/x%09y")));
}

#[test]
fn scale_does_not_change_answers() {
    let mut rules: Vec<String> = (0..10_000)
        .map(|i| format!("domain=host{i}.example.com"))
        .collect();
    rules.push("method=GET domain=*.target.com path=/ok/*".into());
    let p = Policy::parse(&rules).unwrap();
    assert!(p.decide("GET", "host9999.example.com", "/").allowed);
    assert!(!p.decide("GET", "host10000.example.com", "/").allowed);
    assert!(p.decide("GET", "a.target.com", "/ok/1").allowed);
    assert!(!p.decide("POST", "a.target.com", "/ok/1").allowed);
}
