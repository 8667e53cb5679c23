//! Tests that walk the settings table, so a new row is covered the moment it is added:
//! precedence across every source, help text, file keys, `boundary config` rows, defaults.

use clap::CommandFactory;

use super::cli::RunCli;
use super::settings::{Fallback, Setting, Shape, SETTINGS};
use super::tests::{source, World};
use super::*;

/// The text `boundary config` shows for `value` of row `s` (what `apply` returns).
fn shown(s: &Setting, value: &str) -> String {
    let mut c = Config::blank(PathBuf::new());
    c.session_correlation = true;
    (s.apply)(&mut c, value).unwrap_or_else(|e| panic!("{}: example {value:?}: {e:?}", s.key))
}

/// Rows of `key` in `boundary config`, as (shown value, source).
fn rows(c: &Config, key: &str) -> Vec<(String, Source)> {
    c.sources
        .iter()
        .filter(|r| r.0 == key)
        .map(|r| (r.1.clone(), r.2.clone()))
        .collect()
}

/// The YAML for `value` of row `s` under its key: a scalar, a one-item list or a one-entry map.
fn yaml_of(s: &Setting, value: &str) -> String {
    let y = s.yaml.unwrap();
    match s.shape {
        Shape::One | Shape::Switch => format!("{y}: \"{value}\"\n"),
        Shape::List { .. } => format!("{y}:\n  - \"{value}\"\n"),
        Shape::Map => {
            let (k, v) = value.split_once('=').unwrap();
            format!("{y}:\n  \"{k}\": \"{v}\"\n")
        }
    }
}

#[test]
fn every_row_takes_flag_over_env_over_file_over_default() {
    for s in SETTINGS.iter().filter(|s| s.key != settings::CONFIG_KEY) {
        let [file_v, env_v, flag_v] = s.examples;
        let mut w = World::new();
        w.set("CODER_AGENT_URL", "https://dev.coder.com");
        let flag = format!("--{}={flag_v}", s.flag);
        let file_path = s.yaml.map(|_| w.file("c.yaml", &yaml_of(s, file_v)));
        let mut args: Vec<&str> = Vec::new();
        if let Some(p) = &file_path {
            args.extend(["--config", p.as_str()]);
        }

        // Default only (an empty config file where the row has a key).
        let empty = w.file("empty.yaml", "");
        let c = w.resolve(&["--config", &empty]).unwrap();
        let want_default = match s.default {
            Fallback::Text(_) | Fallback::Duration(_) => 1,
            Fallback::Derived(..) => rows(&c, s.key).len(),
            Fallback::Unset(_) if matches!(s.shape, Shape::One | Shape::Switch) => 1,
            Fallback::Unset(_) => 0,
        };
        let got = rows(&c, s.key);
        assert_eq!(got.len(), want_default, "{}: default rows {got:?}", s.key);
        let derived_from_env = matches!(s.default, Fallback::Derived(..))
            && got.iter().any(|r| matches!(r.1, Source::Env(_)));
        if !derived_from_env {
            assert!(got.iter().all(|r| r.1 == Source::Default), "{}", s.key);
        }

        // File.
        if let Some(p) = &file_path {
            let c = w
                .resolve(&args)
                .unwrap_or_else(|e| panic!("{} file: {e}", s.key));
            let want = vec![(shown(s, file_v), Source::File(p.into()))];
            assert_eq!(rows(&c, s.key), want, "{}: from the file", s.key);
        }

        // Env over file (or with it, for merged lists).
        w.set(s.env[0], env_v);
        let c = w
            .resolve(&args)
            .unwrap_or_else(|e| panic!("{} env: {e}", s.key));
        let env_row = (shown(s, env_v), Source::Env(s.env[0]));
        let file_row = file_path
            .as_ref()
            .map(|p| (shown(s, file_v), Source::File(p.into())));
        let merges = matches!(s.shape, Shape::Map | Shape::List { merge: true, .. });
        let mut want: Vec<_> = file_row.clone().filter(|_| merges).into_iter().collect();
        want.push(env_row.clone());
        assert_eq!(rows(&c, s.key), want, "{}: env over file", s.key);

        // Flag over env.
        args.push(&flag);
        let c = w
            .resolve(&args)
            .unwrap_or_else(|e| panic!("{} flag: {e}", s.key));
        let flag_row = (shown(s, flag_v), Source::Flag(s.flag));
        let want: Vec<_> = if merges {
            file_row.into_iter().chain([env_row, flag_row]).collect()
        } else {
            vec![flag_row]
        };
        assert_eq!(rows(&c, s.key), want, "{}: flag over env", s.key);
    }
}

#[test]
fn every_legacy_variable_is_read_after_ours() {
    for s in SETTINGS.iter().filter(|s| s.env.len() > 1) {
        let [_, ours, legacy] = s.examples;
        let mut w = World::new();
        w.set(s.env[1], legacy);
        let c = w.resolve(&[]).unwrap();
        assert_eq!(
            rows(&c, s.key),
            vec![(shown(s, legacy), Source::Env(s.env[1]))]
        );
        w.set(s.env[0], ours);
        let c = w.resolve(&[]).unwrap();
        assert_eq!(
            rows(&c, s.key),
            vec![(shown(s, ours), Source::Env(s.env[0]))]
        );
    }
}

#[test]
fn every_row_is_in_the_help_with_its_names_and_default() {
    let help = RunCli::command().render_long_help().to_string();
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    for s in SETTINGS {
        assert!(
            help.contains(&format!("--{} ", s.flag)) || help.contains(&format!("--{}[", s.flag)),
            "help lacks --{}",
            s.flag
        );
        assert!(
            help.contains(&format!("env: {}", s.env.join(", then "))),
            "help lacks env of {}",
            s.key
        );
        if let Some(y) = s.yaml {
            assert!(
                help.contains(&format!("yaml: {y}")),
                "help lacks yaml key {y}"
            );
        }
        if let Fallback::Text(d) = s.default {
            assert!(
                help.contains(&format!("default: {d}]")),
                "help lacks default of {}",
                s.key
            );
        }
    }
}

#[test]
fn every_row_has_three_valid_examples_and_a_valid_default() {
    for s in SETTINGS {
        let [file, env, flag] = s.examples;
        assert!(
            file != env && env != flag,
            "{}: neighbouring examples must differ",
            s.key
        );
        for v in s.examples {
            shown(s, v);
        }
        match s.default {
            Fallback::Text(t) => drop(shown(s, t)),
            Fallback::Duration(d) => drop(shown(s, &Dur(d).to_string())),
            _ => {}
        }
        assert!(!s.env.is_empty(), "{}: every setting has a variable", s.key);
        assert!(!s.help.is_empty(), "{}: every setting has help", s.key);
    }
    let mut keys: Vec<_> = SETTINGS.iter().map(|s| s.key).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), SETTINGS.len(), "keys must be unique");
}

#[test]
fn every_row_appears_in_boundary_config_even_when_unset() {
    let w = World::new();
    let c = w.resolve(&[]).unwrap();
    for s in SETTINGS {
        let listed = c.sources.iter().any(|r| r.0 == s.key);
        let may_be_absent = matches!(s.shape, Shape::List { .. } | Shape::Map);
        assert!(listed || may_be_absent, "boundary config lacks {}", s.key);
    }
}

#[test]
fn every_yaml_key_is_known_to_the_file_and_a_misspelt_one_is_refused() {
    for s in SETTINGS.iter().filter(|s| s.yaml.is_some()) {
        let text = yaml_of(s, s.examples[0]);
        let f = file::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", s.key));
        assert_eq!(f.get(s.key).map(Vec::len), Some(1), "{}", s.key);
        let misspelt = format!("x{text}");
        let err = file::parse(&misspelt).unwrap_err();
        assert!(
            err.contains("unknown key") && err.contains("line 1"),
            "{err}"
        );
    }
}

#[test]
fn a_bad_upstream_proxy_is_refused_when_resolving_not_after_the_jail_started() {
    let w = World::new();
    for bad in [
        "http://proxy.corp:3128/path",
        "http://proxy corp:3128",
        "http://proxy.corp:99999",
        "http://proxy.corp:0",
        "http://proxy.corp:",
        "HTTP://proxy.corp:3128",
        "http://proxy.corp:3128?user=x",
        "http://proxy.corp:3128/?user=x",
        "http://proxy.corp:3128#x",
    ] {
        let err = w
            .resolve(&["--upstream-proxy", bad])
            .expect_err(bad)
            .to_string();
        assert!(
            err.contains("upstream_proxy from flag --upstream-proxy"),
            "{err}"
        );
        assert!(
            err.contains("http://proxy.corp:3128"),
            "says what to write: {err}"
        );
    }
}

#[test]
fn the_idle_timeout_default_is_the_proxys() {
    let c = World::new().resolve(&[]).unwrap();
    let proxy = boundary_proxy::ProxyConfig::new(c.policy.clone());
    assert_eq!(c.idle_timeout, proxy.idle_timeout);
    assert_eq!(source(&c, "idle_timeout"), Source::Default);
    assert_eq!(c.client_stall_timeout, proxy.client_stall_timeout);
    assert_eq!(source(&c, "client_stall_timeout"), Source::Default);
}

#[test]
fn the_upstream_proxy_password_is_never_shown() {
    let mut w = World::new();
    w.set(
        "BOUNDARY_UPSTREAM_PROXY",
        "http://joe:s3cret@proxy.corp:3128",
    );
    let c = w.resolve(&[]).unwrap();
    assert_eq!(
        c.upstream_proxy.as_ref().map(|u| u.url.as_str()),
        Some("http://joe:s3cret@proxy.corp:3128"),
        "the proxy gets the real URL"
    );
    let debug = format!("{c:?}");
    assert!(!debug.contains("s3cret"), "{debug}");
    let shown: Vec<_> = rows(&c, "upstream_proxy");
    assert_eq!(shown[0].0, "http://joe:***@proxy.corp:3128");
    let err = w
        .resolve(&["--upstream-proxy", "http://joe:s3cret@proxy.corp:3128/path"])
        .unwrap_err()
        .to_string();
    assert!(!err.contains("s3cret") && err.contains("joe:***@"), "{err}");
}

#[test]
fn the_upstream_proxy_is_not_boundarys_own_listener() {
    let w = World::new();
    for own in [
        "http://127.0.0.1:8080",
        "http://localhost:8080",
        "http://LOCALHOST.:8080",
        "http://0.0.0.0:8080",
        "http://[::1]:8080",
        "http://[::]:8080",
        "http://[::ffff:127.0.0.1]:8080",
        "https://joe:s3cret@127.0.0.2:8080",
    ] {
        let err = w
            .resolve(&["--upstream-proxy", own])
            .expect_err(own)
            .to_string();
        assert!(
            err.contains("upstream_proxy from flag --upstream-proxy")
                && err.contains("own proxy listener")
                && err.contains("--proxy-port"),
            "{err}"
        );
        assert!(!err.contains("s3cret"), "{err}");
    }
    // The same address on another port, or the port on another host, is a real proxy.
    for fine in ["http://127.0.0.1:3128", "http://proxy.corp:8080"] {
        w.resolve(&["--upstream-proxy", fine]).expect(fine);
    }
    let err = w
        .resolve(&[
            "--upstream-proxy",
            "http://127.0.0.1:3128",
            "--proxy-port",
            "3128",
        ])
        .unwrap_err()
        .to_string();
    assert!(err.contains("port 3128"), "{err}");
}
