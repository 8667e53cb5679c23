//! Phase 4, deciding: one [`Verdict`] per request, and the only place that writes an audit
//! record, so every request is decided and audited exactly once by construction.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;

use boundary_audit::{AuditRecord, TraceContext};
use http::{HeaderMap, Method, Request, StatusCode};
use hyper::body::Body;

use super::sniff::{ConnCtx, Who};
use super::target::Target;
use super::Proxy;
use super::{framing, overrides};
use crate::host::{Authority, Host};
use crate::rules::{Policy, PolicySnapshot};

/// The W3C trace context header an audit record continues; a name, not text: a lookup by text
/// parses the name first, on every request.
static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

/// What the proxy does with one request.
pub(super) enum Verdict {
    /// Allowed: forward it to the target.
    Forward(Decided),
    /// A CONNECT (not to the proxy itself): open the tunnel and decide each request in it (the
    /// CONNECT itself is not audited; the requests inside are). `unruled`: no rule of this
    /// policy generation can allow the host, so if no request inside is decided the CONNECT is
    /// audited as denied (under that generation).
    Tunnel {
        host: Host,
        port: u16,
        unruled: Option<u64>,
    },
    /// Refused, with the reason; audited unless it could not even be routed.
    Refuse(Refusal),
}

/// An allowed request, with everything the forwarding phase needs.
pub(super) struct Decided {
    pub target: Target,
    /// Path and query as the request wrote them.
    pub path: String,
    /// The audited URL (`target` and `path`), formatted once per request.
    pub url: String,
    /// The sequence number of its audit record (also sent as a correlation header).
    pub sequence: i32,
}

/// Why a request is refused.
#[derive(Debug, Clone)]
pub(super) enum RefusalKind {
    /// The request cannot be routed (no host, a bad host, an unknown scheme): 400, not
    /// audited, since there is no URL to audit.
    Unroutable(String),
    /// The names on the connection or in the request disagree (SNI, CONNECT, Host): 403.
    HostMismatch(String),
    /// The request or tunnel is addressed to the proxy's own listener: 403.
    ProxyItself { tunnel: bool },
    /// No allow rule matches: 403, with rules that would allow it.
    NoRule { tunnel: bool },
    /// Allowed by a rule, but the host resolves to a loopback, link-local, metadata or other
    /// host-internal address that neither `--resolve` nor the rule names: 403.
    LocalAddress(String),
    /// The request's framing could be read differently by the origin (a body on GET, two
    /// `Host` headers): 400.
    Unframeable(String),
    /// A method or path override header asks for what no rule allows: 403.
    Override(String),
}

impl RefusalKind {
    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            RefusalKind::Unroutable(_) | RefusalKind::Unframeable(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::FORBIDDEN,
        }
    }

    /// The reason shown on the refusal page and in the log.
    pub fn reason(&self) -> String {
        match self {
            RefusalKind::Unroutable(m)
            | RefusalKind::HostMismatch(m)
            | RefusalKind::LocalAddress(m)
            | RefusalKind::Unframeable(m)
            | RefusalKind::Override(m) => m.clone(),
            RefusalKind::ProxyItself { tunnel: true } => {
                "the tunnel is addressed to the proxy itself".into()
            }
            RefusalKind::ProxyItself { tunnel: false } => {
                "the request is addressed to the proxy itself".into()
            }
            RefusalKind::NoRule { tunnel: true } => "no allow rule matches this host".into(),
            RefusalKind::NoRule { tunnel: false } => "no allow rule matches this request".into(),
        }
    }
}

/// A refused request as the responding phase renders it.
pub(super) struct Refusal {
    pub kind: RefusalKind,
    pub method: String,
    /// Where it was going, when that is known.
    pub target: Option<Target>,
    /// Path and query (empty for CONNECT).
    pub path: String,
    /// `--allow` rules that would have allowed it.
    pub suggestions: Vec<String>,
}

/// A request judged against the policy, before it is numbered and audited.
struct Judged {
    method: String,
    target: Target,
    path: String,
    /// The audited URL.
    url: String,
    /// `Ok(matched rule)` when allowed.
    outcome: Result<String, RefusalKind>,
    /// The matched rule names the host literally (see `Decision::names_host`).
    names_host: bool,
    suggestions: Vec<String>,
    /// The policy generation that decided it.
    generation: u64,
}

/// The judgement before auditing: some requests are never audited (see [`Verdict`]).
enum Judgement {
    Unroutable(Refusal),
    Tunnel {
        host: Host,
        port: u16,
        unruled: Option<u64>,
    },
    Judged(Judged),
}

impl Proxy {
    /// Decides one request; the single place where requests are numbered and audited. An
    /// allowed request's upstream addresses are checked (and pinned for the connector) before
    /// the record is written, so a refused address is audited as the denial it is.
    pub(super) async fn decide<B: Body>(&self, req: &Request<B>, ctx: &ConnCtx) -> Verdict {
        let started = std::time::Instant::now();
        let mut judged = match self.judge(req, ctx) {
            Judgement::Unroutable(r) => {
                // No URL to audit; the local log still says what was refused and why.
                tracing::info!(method = %r.method, reason = %r.kind.reason(), "refused unroutable request");
                return Verdict::Refuse(r);
            }
            Judgement::Tunnel {
                host,
                port,
                unruled,
            } => {
                return Verdict::Tunnel {
                    host,
                    port,
                    unruled,
                }
            }
            Judgement::Judged(j) => j,
        };
        if judged.outcome.is_ok() {
            let t = &judged.target;
            if let Err(e) = self
                .settings
                .check_destination(t.host.as_str(), t.port, judged.names_host)
                .await
            {
                judged.outcome = Err(RefusalKind::LocalAddress(e.message));
            }
        }
        let sequence = self.sequence.fetch_add(1, Ordering::SeqCst);
        self.audit(sequence, &judged, req.headers(), ctx.requester.clone());
        ctx.decided();
        self.metrics.decided(judged.outcome.is_ok());
        self.metrics.decision.observe(started.elapsed());
        match judged.outcome {
            Ok(_) => Verdict::Forward(Decided {
                target: judged.target,
                path: judged.path,
                url: judged.url,
                sequence,
            }),
            Err(kind) => Verdict::Refuse(Refusal {
                kind,
                method: judged.method,
                target: Some(judged.target),
                path: judged.path,
                suggestions: judged.suggestions,
            }),
        }
    }

    fn audit(&self, sequence: i32, j: &Judged, headers: &HeaderMap, requester: Who) {
        if let Err(kind) = &j.outcome {
            tracing::info!(sequence, method = %j.method, url = %j.url, reason = %kind.reason(), "denied");
        }
        let traceparent = headers.get(&TRACEPARENT).and_then(|v| v.to_str().ok());
        self.sink.record(AuditRecord {
            allowed: j.outcome.is_ok(),
            time: chrono::Utc::now(),
            method: j.method.clone(),
            url: j.url.clone(),
            matched_rule: j.outcome.as_ref().ok().cloned(),
            sequence_number: sequence,
            trace: TraceContext::from_traceparent(traceparent),
            requester,
            policy_generation: j.generation,
        });
    }

    /// Judges one request under one policy generation, taken once here: the verdict, the
    /// suggestions and the audit record all come from the same rules, whatever a reload does
    /// meanwhile.
    fn judge<B: Body>(&self, req: &Request<B>, ctx: &ConnCtx) -> Judgement {
        let snapshot = self.config.policy.snapshot();
        if req.method() == Method::CONNECT {
            return self.judge_connect(req, &snapshot);
        }
        let method = req.method().as_str().to_string();
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_string();
        let target = match Target::of(req, ctx) {
            Ok(t) => t,
            Err(message) => return unroutable(method, message),
        };
        let url = target.url(&path);
        let mut suggestions = Vec::new();
        let mut names_host = false;
        let outcome = if let Some(reason) = framing::host_refusal(req) {
            Err(RefusalKind::Unframeable(reason))
        } else if let Some(reason) = ctx.mismatch.clone().or_else(|| target.mismatch(req, ctx)) {
            Err(RefusalKind::HostMismatch(reason))
        } else if self.targets_self(&target.host, target.port) {
            Err(RefusalKind::ProxyItself { tunnel: false })
        } else if let Some(reason) = framing::refusal(req) {
            Err(RefusalKind::Unframeable(reason))
        } else {
            let (outcome, named) = judge_policy(
                &snapshot.policy,
                req.headers(),
                &method,
                &target.host,
                &path,
                &mut suggestions,
            );
            names_host = named;
            outcome
        };
        Judgement::Judged(Judged {
            method,
            target,
            path,
            url,
            outcome,
            names_host,
            suggestions,
            generation: snapshot.generation,
        })
    }

    /// The rules' answer, including what override headers ask for: `Ok(matched rule)`, and
    /// whether the matched rule names the host literally.
    /// CONNECT: refused at once when no rule could allow the host, else a tunnel.
    fn judge_connect<B>(&self, req: &Request<B>, snapshot: &PolicySnapshot) -> Judgement {
        let Some(Authority { host, port }) = req
            .uri()
            .authority()
            .and_then(|a| Authority::parse(a.as_str()))
        else {
            let message = format!(
                "CONNECT needs a host:port target, got {:?}",
                crate::hide_password(&req.uri().to_string())
            );
            return unroutable("CONNECT".into(), message);
        };
        let port = port.unwrap_or(443);
        if self.targets_self(&host, port) {
            let outcome = Err(RefusalKind::ProxyItself { tunnel: true });
            return Judgement::Judged(connect_judged(
                host,
                port,
                outcome,
                Vec::new(),
                snapshot.generation,
            ));
        }
        let unruled =
            (!snapshot.policy.could_allow_host(host.as_str())).then_some(snapshot.generation);
        Judgement::Tunnel {
            host,
            port,
            unruled,
        }
    }

    /// Audits, once, a CONNECT to a host no rule allows whose tunnel carried no request that
    /// could be decided (the client did not speak TLS or HTTP, or refused our certificate).
    /// `generation` is the policy generation under which no rule could allow the host.
    pub(super) fn refuse_tunnel_after(
        &self,
        host: Host,
        port: u16,
        requester: Who,
        generation: u64,
    ) {
        let suggestions = vec![format!("domain={}", host.as_str())];
        let judged = connect_judged(
            host,
            port,
            Err(RefusalKind::NoRule { tunnel: true }),
            suggestions,
            generation,
        );
        let sequence = self.sequence.fetch_add(1, Ordering::SeqCst);
        self.audit(sequence, &judged, &HeaderMap::new(), requester);
        self.metrics.decided(false);
    }

    /// Whether `host:port` is known (without DNS) to be this proxy's own listener.
    fn targets_self(&self, host: &Host, port: u16) -> bool {
        let ip = if let Some(ip) = host.ip() {
            ip
        } else if let Some(ip) = self.settings.resolve.get(host.as_str()) {
            *ip
        } else if host.as_str() == "localhost" {
            IpAddr::from([127, 0, 0, 1])
        } else {
            return false;
        };
        self.settings.is_self(SocketAddr::new(ip, port))
    }
}

/// A CONNECT as audited: `https://host:port`, the port always written.
fn connect_judged(
    host: Host,
    port: u16,
    outcome: Result<String, RefusalKind>,
    suggestions: Vec<String>,
    generation: u64,
) -> Judged {
    Judged {
        method: "CONNECT".into(),
        url: format!("https://{}", host.with_port(port)),
        target: Target {
            scheme: "https",
            host,
            port,
        },
        path: String::new(),
        outcome,
        names_host: false,
        suggestions,
        generation,
    }
}

/// The rules' answer, including what override headers ask for: `Ok(matched rule)`, and
/// whether the matched rule names the host literally.
fn judge_policy(
    policy: &Policy,
    headers: &HeaderMap,
    method: &str,
    host: &Host,
    path: &str,
    suggestions: &mut Vec<String>,
) -> (Result<String, RefusalKind>, bool) {
    let decision = policy.decide(method, host.as_str(), path);
    let names_host = decision.names_host;
    let Some(rule) = decision.matched_rule.filter(|_| decision.allowed) else {
        *suggestions = policy.suggest(method, host.as_str(), path);
        return (Err(RefusalKind::NoRule { tunnel: false }), names_host);
    };
    if let Some((reason, s)) = overrides::refusal(policy, headers, method, host.as_str(), path) {
        *suggestions = s;
        return (Err(RefusalKind::Override(reason)), names_host);
    }
    (Ok(rule), names_host)
}

fn unroutable(method: String, message: String) -> Judgement {
    Judgement::Unroutable(Refusal {
        kind: RefusalKind::Unroutable(message),
        method,
        target: None,
        path: String::new(),
        suggestions: Vec::new(),
    })
}
