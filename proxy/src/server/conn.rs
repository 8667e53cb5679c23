//! Phase 3, serving a connection: HTTP/1.1 or HTTP/2 on one client connection, the idle
//! timeout, and each request's way through deciding, forwarding and responding.

use std::convert::Infallible;
use std::sync::Arc;

use http::header;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use super::body::drain;
use super::decide::Verdict;
use super::sniff::ConnCtx;
use super::{respond, Proxy, ProxyBody, MAX_CONCURRENT_STREAMS, MAX_HEADER_LIST};
use crate::io::Activity;
use crate::stall::Watched;

impl Proxy {
    pub(super) async fn serve_http<S>(self: Arc<Self>, io: S, ctx: ConnCtx)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Activity::new();
        crate::slots::attach(&activity);
        let unruled = ctx.unruled_tunnel();
        let ctx = Arc::new(ctx);
        let proxy = self.clone();
        let act = activity.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let proxy = proxy.clone();
            let ctx = ctx.clone();
            let guard = act.begin();
            async move {
                let sweeper = proxy.sweeper.clone();
                let resp = proxy.route(req, &ctx).await;
                Ok::<_, Infallible>(resp.map(|b| Watched::new(b, guard, &sweeper).boxed()))
            }
        });
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        // No header-read timer: it would arm a timer for every request, and the idle watchdog
        // below already closes a connection whose headers never finish (nothing in flight).
        builder.http1().keep_alive(true).half_close(false);
        if unruled {
            // Every request here is denied: a client that sends no complete request head (SSH
            // and other protocols over CONNECT) is closed after the handshake timeout, not
            // the idle timeout, and its CONNECT audited then.
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(self.config.handshake_timeout);
        }
        builder
            .http2()
            .timer(TokioTimer::new())
            .adaptive_window(true)
            .max_header_list_size(MAX_HEADER_LIST)
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS);
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(conn);
        let idle = self.config.idle_timeout;
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "client connection ended with an error");
                }
                return;
            }
            _ = activity.idle_for(idle) => {
                tracing::debug!(?idle, "closing idle client connection");
                conn.as_mut().graceful_shutdown();
            }
        }
        // A graceful shutdown waits for a request head that is still arriving; one that is
        // still not complete (nothing in flight) after another idle period is cut off.
        activity.touch();
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "client connection ended with an error");
                }
            }
            _ = activity.idle_for(idle) => {
                tracing::debug!("dropping a connection that stayed idle after shutdown");
            }
        }
    }

    /// One request through the phases: decide, then forward, open a tunnel, or refuse.
    async fn route(self: Arc<Self>, req: Request<Incoming>, ctx: &ConnCtx) -> Response<ProxyBody> {
        let grpc = respond::is_grpc(req.headers());
        match self.decide(&req, ctx).await {
            Verdict::Forward(decided) => match self.forward(req, decided).await {
                Ok(resp) => resp,
                Err(failure) => respond::failure(&failure, grpc),
            },
            Verdict::Tunnel {
                host,
                port,
                unruled,
            } => {
                let requester = ctx.requester.clone();
                self.open_tunnel(req, host, port, unruled, requester)
            }
            Verdict::Refuse(refusal) => {
                // A client waiting for `100 Continue` has sent nothing yet: let it be.
                if !req.headers().contains_key(header::EXPECT) {
                    drain(req.into_body());
                }
                respond::refusal(&refusal, grpc)
            }
        }
    }
}
