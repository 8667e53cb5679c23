//! Real clients inside the nsjail behave as the policy says: curl (HTTP and HTTPS, allowed and
//! denied), git clone over HTTPS, Python urllib and requests, Node https.get, all trusting our
//! CA through the variables boundary sets. As root and as an unprivileged user.
//!
//! Needs `cargo build -p boundary` first, and curl, git, python3-requests, nodejs, openssl.

mod nsjail_common;
use nsjail_common::*;

const SCRIPT: &str = r#"
set -u
S=https://fixture.test:$HTTPS_PORT
H=http://fixture.test:$HTTP_PORT
echo "curl-https-allowed=[$(curl -sS --max-time 20 $S/allowed.txt)]"
echo "curl-https-denied=$(curl -sS --max-time 20 -o /dev/null -w '%{http_code}' $S/denied.txt)"
echo "curl-https-denied-text=$(curl -sS --max-time 20 $S/denied.txt | grep -c 'Request Blocked by Boundary')"
echo "curl-http-allowed=[$(curl -sS --max-time 20 $H/allowed.txt)]"
echo "curl-http-denied=$(curl -sS --max-time 20 -o /dev/null -w '%{http_code}' $H/denied.txt)"
D=$(mktemp -d)
git clone -q $S/repo.git $D/clone && echo "git-clone=[$(cat $D/clone/README)]"
git clone -q $S/other.git $D/other 2>/dev/null; echo "git-denied-rc=$?"
rm -rf $D
python3 - <<PY
import urllib.request, urllib.error
print("urllib-allowed=[%s]" % urllib.request.urlopen("$S/allowed.txt", timeout=20).read().decode())
try:
    urllib.request.urlopen("$S/denied.txt", timeout=20)
    print("urllib-denied=200")
except urllib.error.HTTPError as e:
    print("urllib-denied=%d" % e.code)
import requests
print("requests-allowed=[%s]" % requests.get("$S/allowed.txt", timeout=20).text)
print("requests-denied=%d" % requests.get("$S/denied.txt", timeout=20).status_code)
PY
node -e '
const https = require("https");
const get = (u) => new Promise((ok, bad) => https.get(u, (r) => { let b = ""; r.on("data", (d) => b += d); r.on("end", () => ok([r.statusCode, b])); }).on("error", bad));
(async () => {
  const [s1, b1] = await get(process.argv[1] + "/allowed.txt");
  console.log("node-allowed=[" + b1 + "] " + s1);
  const [s2] = await get(process.argv[1] + "/denied.txt");
  console.log("node-denied=" + s2);
})().catch((e) => console.log("node-error=" + e));
' "$S"
"#;

fn clients_behave(who: As) {
    let fx = Fixture::start();
    let config = config_home(who);
    let flags = fx.flags(&["domain=fixture.test path=/allowed.txt,/repo.git/*"]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let script = format!(
        "HTTPS_PORT={} HTTP_PORT={}\n{SCRIPT}",
        fx.https_port, fx.http_port
    );
    let o = jailed_sh(who, config.path(), &[], &flags, &script);
    let out = String::from_utf8_lossy(&o.stdout);
    let t = text(&o);
    for expect in [
        format!("curl-https-allowed=[{ALLOWED_BODY}]"),
        "curl-https-denied=403".into(),
        "curl-https-denied-text=1".into(),
        format!("curl-http-allowed=[{ALLOWED_BODY}]"),
        "curl-http-denied=403".into(),
        "git-clone=[fixture-repo-readme]".into(),
        format!("urllib-allowed=[{ALLOWED_BODY}]"),
        "urllib-denied=403".into(),
        format!("requests-allowed=[{ALLOWED_BODY}]"),
        "requests-denied=403".into(),
        format!("node-allowed=[{ALLOWED_BODY}] 200"),
        "node-denied=403".into(),
    ] {
        assert!(out.contains(&expect), "missing {expect:?} in\n{t}");
    }
    assert!(
        !out.contains("git-denied-rc=0"),
        "git clone of a denied repo worked:\n{t}"
    );
    assert_eq!(o.status.code(), Some(0), "{t}");
}

#[test]
fn clients_behave_as_the_policy_says_as_root() {
    require_root().unwrap();
    clients_behave(As::Root);
}

#[test]
fn clients_behave_as_the_policy_says_as_an_unprivileged_user() {
    require_root().unwrap();
    clients_behave(As::User);
}
