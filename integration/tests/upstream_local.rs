//! Through the real binary in nsjail: an allowed name that resolves to loopback (`localhost`,
//! from the host's /etc/hosts) is refused with a 403 that says why, and the `--audit-log`
//! record says denied; `--resolve` or `--upstream-allow-local` let the same request through
//! (the positive controls: the fixture's file comes back).
//!
//! Needs `cargo build -p boundary` first, and curl, python3, openssl.

mod nsjail_common;
use nsjail_common::*;

/// The jailed curl asks for fixture.test (which reaches the proxy) with `Host: localhost`, so
/// the proxy decides on `localhost` and resolves it itself.
fn jailed_localhost(fx: &Fixture, extra: &[&str]) -> (String, String) {
    let config = config_home(As::Root);
    let audit = config.path().join("audit.jsonl");
    let mut flags = fx.flags(&["domain=localhost"]);
    flags.extend(["--jail-type".into(), "nsjail".into()]);
    flags.extend(["--audit-log".into(), audit.display().to_string()]);
    flags.extend(extra.iter().map(|s| s.to_string()));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let p = fx.http_port;
    let script = format!(
        "curl -sS --max-time 20 -w ' status=%{{http_code}}' -H 'Host: localhost:{p}' \
         http://fixture.test:{p}/allowed.txt"
    );
    let o = jailed_sh(As::Root, config.path(), &[], &flags, &script);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    (out, std::fs::read_to_string(&audit).unwrap_or_default())
}

#[test]
fn a_name_resolving_to_loopback_is_refused_through_the_real_binary() {
    let fx = Fixture::start();
    let (out, audit) = jailed_localhost(&fx, &[]);
    assert!(out.ends_with("status=403"), "{out}");
    assert!(
        out.contains("loopback") && out.contains("--upstream-allow-local"),
        "the 403 says why and what to do: {out}"
    );
    assert!(!out.contains(ALLOWED_BODY), "{out}");
    let records: Vec<&str> = audit.lines().collect();
    assert_eq!(records.len(), 1, "one record: {audit}");
    assert!(
        records[0].contains("\"decision\":\"deny\"") && records[0].contains("localhost"),
        "{audit}"
    );

    for relax in [
        &["--resolve", "localhost=127.0.0.1"][..],
        &["--upstream-allow-local"][..],
    ] {
        let (out, audit) = jailed_localhost(&fx, relax);
        assert!(
            out.contains(ALLOWED_BODY) && out.ends_with("status=200"),
            "{relax:?}: {out}"
        );
        assert!(
            audit.contains("\"decision\":\"allow\""),
            "{relax:?}: {audit}"
        );
    }
}
