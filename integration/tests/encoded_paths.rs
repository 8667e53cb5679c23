//! Through the real binary in nsjail: with `path=/repo.git/*`, encoded separators and dot
//! segments cannot make the fixture's Python `http.server` serve a file outside `/repo.git`;
//! the repository's own files still come back (the positive control).
//!
//! Needs `cargo build -p boundary` first, and curl, python3, openssl, git.

mod nsjail_common;
use nsjail_common::*;

#[test]
fn encoded_separators_cannot_leave_the_allowed_path() {
    let fx = Fixture::start();
    let config = config_home(As::Root);
    let mut flags = fx.flags(&["domain=fixture.test path=/repo.git/*"]);
    flags.extend(["--jail-type".into(), "nsjail".into()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let script = format!(
        r#"H=http://fixture.test:{}
for p in /repo.git/HEAD /repo.git/..%2Fdenied.txt /repo.git/..%2fdenied.txt \
         /repo.git/%2E%2E/denied.txt /repo.git/.%2e/denied.txt /repo.git/..%252Fdenied.txt \
         '/repo.git/..;/denied.txt' /repo.git/x%2F..%2F..%2Fdenied.txt; do
  echo "$p $(curl -sS --path-as-is --max-time 20 -w ' status=%{{http_code}}' "$H$p" | tr -d '\n')"
done"#,
        fx.http_port
    );
    let o = jailed_sh(As::Root, config.path(), &[], &flags, &script);
    let out = String::from_utf8_lossy(&o.stdout);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(
        out.lines()
            .next()
            .is_some_and(|l| l.ends_with("status=200")),
        "the repository's own file is served: {t}"
    );
    assert!(
        !out.contains("fixture-denied-content"),
        "served outside /repo.git: {t}"
    );
    assert_eq!(out.matches("status=403").count(), 7, "{t}");
}
