//! Decisions per second for 10, 1,000 and 100,000 rules, domain-only and mixed with methods and
//! paths. The domain index should make the domain-only cost flat in the number of rules.

use boundary_proxy::rules::Policy;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn domain_only(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("domain=svc{i}.corp{}.example.com", i % 97))
        .collect()
}

fn mixed(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| match i % 4 {
            0 => format!("domain=svc{i}.example.com"),
            1 => format!("method=GET,HEAD domain=*.team{i}.example.com"),
            2 => format!("method=POST domain=api{i}.example.com path=/v1/*,/v2/items"),
            _ => format!("domain=git{i}.example.com path=/repos/*/pulls"),
        })
        .collect()
}

/// Requests that hit the middle rule, miss everything, and hit a wildcard.
fn requests(n: usize) -> Vec<(&'static str, String, &'static str)> {
    let mid = n / 2;
    vec![
        ("GET", format!("svc{mid}.corp{}.example.com", mid % 97), "/"),
        ("GET", "unknown.nowhere.example".to_string(), "/x"),
        (
            "POST",
            format!("api{}.example.com", (mid / 4) * 4 + 2),
            "/v1/chat/completions",
        ),
        (
            "GET",
            format!("a.b.team{}.example.com", (mid / 4) * 4 + 1),
            "/x",
        ),
    ]
}

fn bench(c: &mut Criterion) {
    for (name, make) in [
        ("domain_only", domain_only as fn(usize) -> Vec<String>),
        ("mixed", mixed),
    ] {
        let mut group = c.benchmark_group(format!("decide/{name}"));
        for n in [10usize, 1_000, 100_000] {
            let policy = Policy::parse(&make(n)).expect("bench rules parse");
            let reqs = requests(n);
            group.throughput(Throughput::Elements(reqs.len() as u64));
            group.bench_with_input(BenchmarkId::from_parameter(n), &reqs, |b, reqs| {
                b.iter(|| {
                    for (m, h, p) in reqs {
                        std::hint::black_box(policy.decide(m, h, p));
                    }
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
