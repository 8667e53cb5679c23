//! Phase 3, serving a connection: HTTP/1.1 or HTTP/2 on one client connection (HTTP/1.1 parks
//! when idle, see [`park`]), the idle timeout, and each request's way through deciding,
//! forwarding and responding.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use super::body::{drain, BodyGuard};
use super::decide::Verdict;
use super::sniff::ConnCtx;
use super::{park, respond, Proxy, ProxyBody, MAX_CONCURRENT_STREAMS, MAX_HEADER_LIST};
use crate::io::{Activity, FlushMark, Rewind};
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
            let body_guard = (!req.body().is_end_stream()).then(|| act.begin());
            async move {
                let sweeper = proxy.sweeper.clone();
                let resp = proxy.route(req, &ctx, body_guard).await;
                Ok::<_, Infallible>(resp.map(|b| Watched::new(b, guard, &sweeper).boxed()))
            }
        });
        let mut io = FlushMark::new(Rewind::new(io, Bytes::new()), activity.clone());
        let idle = self.config.idle_timeout;
        match tokio::time::timeout(idle, park::sniff_h2(io.get_mut())).await {
            Ok(Ok(false)) => self.serve_h1(io, service, &activity, unruled).await,
            Ok(Ok(true)) => {
                let conn = http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .adaptive_window(true)
                    .max_header_list_size(MAX_HEADER_LIST)
                    .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
                    .serve_connection(TokioIo::new(io), service);
                // Boxed, like HTTP/1.1's: the connection's task holds only a pointer to it.
                park::until_closed(Box::pin(conn).as_mut(), &activity, idle).await;
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "client connection failed before a request"),
            Err(_) => tracing::debug!(?idle, "client sent no request before the idle timeout"),
        }
    }

    /// One request through the phases: decide, then forward, open a tunnel, or refuse.
    async fn route(
        self: Arc<Self>,
        req: Request<Incoming>,
        ctx: &ConnCtx,
        body_guard: BodyGuard,
    ) -> Response<ProxyBody> {
        let grpc = respond::is_grpc(req.headers());
        match self.decide(&req, ctx).await {
            Verdict::Forward(decided) => match self.forward(req, decided, body_guard).await {
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
                    drain(req.into_body(), body_guard);
                }
                respond::refusal(&refusal, grpc)
            }
        }
    }
}
