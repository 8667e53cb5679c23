//! Upstream connections are capped per origin: 40 parallel requests to one HTTP/1.1 origin
//! that answers slowly all succeed (they wait for a pooled connection instead of failing), and
//! the origin never sees more connections than the cap.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use http::{Request, Response};
use hyper::body::Incoming;

#[test]
fn parallel_requests_wait_for_a_connection_under_the_per_origin_cap() {
    run(async {
        let handler: Handler = Arc::new(|_req: Request<Incoming>| {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Response::new(full("slow hello\n"))
            })
        });
        let origin = Origin::start(None, Some(handler)).await;
        let h = Harness::with(&["domain=origin.test"], |c| c.upstream_per_origin = 4).await;
        let url = format!("http://{ORIGIN}:{}/slow", origin.port());
        let mut args = vec!["--parallel", "--parallel-max", "40", "--proxy"];
        let proxy = h.proxy_url();
        args.push(&proxy);
        for _ in 0..40 {
            args.push(&url);
        }
        let out = curl(&args).await;
        assert_eq!(out.statuses.len(), 40, "{out:?}");
        assert!(out.statuses.iter().all(|s| *s == 200), "{out:?}");
        let opened = origin.connections.load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            opened <= 4,
            "the origin saw {opened} connections; the cap is 4"
        );
        assert_eq!(origin.seen().len(), 40);
    });
}
