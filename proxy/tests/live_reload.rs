//! Live reload: while the policy is replaced over and over, every request is decided wholly
//! under one generation. Each record's decision and matched rule are those of the generation
//! it names, and the origin saw exactly the requests recorded as allowed.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use boundary_proxy::rules::{LivePolicy, Policy};
use common::*;

/// Odd generations allow `/a`, even ones `/b`.
fn rule_of(generation: u64) -> &'static str {
    if generation % 2 == 1 {
        "domain=origin.test path=/a"
    } else {
        "domain=origin.test path=/b"
    }
}

#[test]
fn each_request_is_decided_under_the_one_generation_its_record_names() {
    run(async {
        let origin = Origin::start(None, None).await;
        let mut live: Option<Arc<LivePolicy>> = None;
        let h = Harness::with(&[rule_of(1)], |c| live = Some(c.policy.clone())).await;
        let live = live.unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let reloads = {
            let (live, stop) = (live.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut last = 1;
                while !stop.load(Ordering::Relaxed) {
                    let next = Arc::new(Policy::parse(&[rule_of(last + 1)]).unwrap());
                    last = live.replace(next);
                    std::thread::yield_now();
                }
                last
            })
        };
        let mut args: Vec<String> = vec![
            "--parallel".into(),
            "--parallel-immediate".into(),
            "--parallel-max".into(),
            "50".into(),
            "--proxy".into(),
            h.proxy_url(),
        ];
        for i in 0..300 {
            let path = if i % 2 == 0 { "a" } else { "b" };
            args.push(format!("http://{ORIGIN}:{}/{path}?i={i}", origin.port()));
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = curl(&refs).await;
        stop.store(true, Ordering::Relaxed);
        let last = reloads.join().unwrap();
        assert_eq!(out.statuses.len(), 300, "{}", out.stderr);
        let recs = h.records();
        assert_eq!(recs.len(), 300);
        for r in &recs {
            let g = r.policy_generation;
            assert!((1..=last).contains(&g), "{r:?}");
            let on_a = r.url.contains("/a?");
            assert_eq!(r.allowed, on_a == (g % 2 == 1), "{r:?}");
            assert_eq!(
                r.matched_rule.as_deref(),
                r.allowed.then_some(rule_of(g)),
                "{r:?}"
            );
        }
        let generations: BTreeSet<u64> = recs.iter().map(|r| r.policy_generation).collect();
        assert!(
            generations.len() > 1,
            "the reloads never overlapped the requests: {generations:?} (last {last})"
        );
        // The verdict acted on is the one audited: the origin saw the allowed ones only.
        let allowed: BTreeSet<String> = recs
            .iter()
            .filter(|r| r.allowed)
            .map(|r| r.url.rsplit_once('/').unwrap().1.to_string())
            .collect();
        let seen: BTreeSet<String> = origin
            .seen()
            .iter()
            .map(|s| s.uri.rsplit_once('/').unwrap().1.to_string())
            .collect();
        assert_eq!(seen, allowed);
        let statuses_ok = out.statuses.iter().filter(|s| **s != 403).count();
        assert_eq!(statuses_ok, allowed.len());
    });
}
