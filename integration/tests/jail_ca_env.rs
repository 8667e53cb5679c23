//! The jailed command's environment names the run's CA in every variable the clients and the
//! agents read (issue 17 item 6): each points at the CA certificate (`openssl x509` reads the
//! boundary CA's subject from it), `SSL_CERT_DIR` at its directory, in both jails, as root and
//! as an unprivileged user. A `CODEX_CA_CERTIFICATE` of the user's own is overridden, since
//! Codex reads it before `SSL_CERT_FILE`.
//!
//! Needs root and `cargo build -p boundary` first; packages: openssl, util-linux (runuser).

mod nsjail_common;
use nsjail_common::*;

use std::process::Stdio;

/// Every variable that must name the CA file (Codex: `CODEX_CA_CERTIFICATE`, then
/// `SSL_CERT_FILE`; Claude Code: `NODE_EXTRA_CA_CERTS`; the rest for the tools agents run).
/// Written out here on purpose, not taken from boundary's own list: the test is the oracle.
const CA_FILE_VARS: [&str; 11] = [
    "SSL_CERT_FILE",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    "REQUESTS_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "DENO_CERT",
    "PIP_CERT",
    "AWS_CA_BUNDLE",
    "CARGO_HTTP_CAINFO",
    "CODEX_CA_CERTIFICATE",
    "npm_config_cafile",
];

/// The subject of the CA boundary makes for each run (`proxy/src/ca.rs`).
const CA_SUBJECT: &str = "Agent Boundaries local CA";

fn ca_vars_name_the_ca(who: As) {
    require_root().expect("this test needs root");
    let mut script = String::new();
    for var in CA_FILE_VARS {
        script.push_str(&format!(
            "echo \"{var}=${var}\"; echo \"{var}-subject=$(openssl x509 -noout -subject -in \"${var}\" 2>&1)\"\n"
        ));
    }
    script.push_str("echo \"SSL_CERT_DIR=$SSL_CERT_DIR\"\n");
    for (jail, flags) in both_jails() {
        let config = config_home(who);
        let out = boundary_cmd(who, config.path(), &[])
            .env("CODEX_CA_CERTIFICATE", "/etc/users-own-corporate-ca.pem")
            .args(&flags)
            .args(["--", "sh", "-c", &script])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let t = format!("{jail} as {who:?}: {}", text(&out));
        assert!(out.status.success(), "{t}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let value = |key: &str| -> String {
            let prefix = format!("{key}=");
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .unwrap_or_else(|| panic!("no {key} line:\n{t}"))
                .to_string()
        };
        let cert = value("SSL_CERT_FILE");
        assert!(cert.ends_with("/ca-cert.pem"), "SSL_CERT_FILE={cert}\n{t}");
        for var in CA_FILE_VARS {
            assert_eq!(value(var), cert, "{var} must name the CA file\n{t}");
            let subject = value(&format!("{var}-subject"));
            assert!(subject.contains(CA_SUBJECT), "{var}: {subject}\n{t}");
        }
        let dir = cert.strip_suffix("/ca-cert.pem").unwrap();
        assert_eq!(value("SSL_CERT_DIR"), dir, "{t}");
    }
}

#[test]
fn ca_variables_name_the_ca_as_root() {
    ca_vars_name_the_ca(As::Root);
}

#[test]
fn ca_variables_name_the_ca_as_user() {
    ca_vars_name_the_ca(As::User);
}
