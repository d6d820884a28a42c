//! The one way Drover makes HTTP requests to URLs that tenants write (external command endpoints
//! and webhooks), under the outbound address policy ([`OutboundPolicy`]): by default such
//! a URL may not reach loopback, link-local (cloud metadata), private, shared (CGNAT), unspecified,
//! multicast or reserved addresses; the operator's allow-list opens exceptions.
//!
//! Where the rule is enforced:
//! - **at connect time, on the resolved addresses**: the client's DNS resolver ([`PolicyResolver`])
//!   resolves a host name and hands the connector only the allowed addresses, so a name that
//!   resolves to something else on the second lookup (DNS rebinding) gains nothing — there is no
//!   second lookup;
//! - **literal addresses** (`http://127.0.0.1/`, `http://[::ffff:a9fe:a9fe]/`, `http://2130706433/`)
//!   never reach a resolver: [`OutboundClient::request`] checks them before building the
//!   request, with the same URL parser reqwest uses;
//! - **redirects are not followed**: a 3xx answer is an error ([`OutboundError::Redirect`]), so a
//!   permitted host cannot bounce a request inside;
//! - **no proxy**: the environment's `HTTP_PROXY` and friends are ignored (through a proxy, the
//!   resolver would judge the proxy's address instead of the target's);
//! - **at write time** the API refuses what can be judged without DNS: literal addresses and
//!   `localhost` ([`OutboundPolicy::check_url`]).

mod policy;

use std::error::Error as _;
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};

pub use policy::{
    classify, AddressClass, AllowEntry, AllowEntryError, OutboundPolicy, OutboundRefusal,
};

/// Why an outbound request was not made or did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("invalid URL '{url}': {source}")]
    InvalidUrl {
        url: String,
        #[source]
        source: url::ParseError,
    },
    #[error("unsupported URL '{url}': only http and https")]
    Scheme { url: String },
    #[error(transparent)]
    Refused(#[from] OutboundRefusal),
    #[error("{url} answered {status}{}; redirects are not followed", location.as_ref().map(|l| format!(" (to {l})")).unwrap_or_default())]
    Redirect {
        url: String,
        status: StatusCode,
        location: Option<String>,
    },
    // reqwest's own message leaves out why a connection failed: show the causes too.
    #[error("{}", drover_model::error::chain(.0))]
    Transport(#[source] reqwest::Error),
    #[error("cannot build the outbound HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("cannot read the CA certificates: {0}")]
    Roots(#[source] reqwest::Error),
    #[error("no CA certificate in the PEM")]
    NoRoots,
    #[error("invalid CA certificates: {0}")]
    BadRoots(#[source] drover_auth::x509::CertificateError),
}

impl OutboundError {
    /// A refusal by the resolver comes back inside reqwest's (and hyper's) connect errors.
    fn from_reqwest(e: reqwest::Error) -> Self {
        let mut cause = e.source();
        while let Some(c) = cause {
            if let Some(r) = c.downcast_ref::<OutboundRefusal>() {
                return OutboundError::Refused(r.clone());
            }
            cause = c.source();
        }
        OutboundError::Transport(e)
    }
}

/// reqwest's DNS resolver: resolves with the system resolver (through tokio) and keeps only the
/// addresses the policy allows; none allowed is an [`OutboundRefusal`].
pub struct PolicyResolver {
    policy: Arc<OutboundPolicy>,
}

impl PolicyResolver {
    pub fn new(policy: Arc<OutboundPolicy>) -> Self {
        Self { policy }
    }
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let allowed = policy.filter(&host, found)?;
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The certificates of a PEM bundle (at least one).
pub fn parse_roots(pem: &str) -> Result<Vec<reqwest::Certificate>, OutboundError> {
    drover_auth::x509::parse_ca_bundle(pem).map_err(OutboundError::BadRoots)?;
    let certs =
        reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(OutboundError::Roots)?;
    if certs.is_empty() {
        return Err(OutboundError::NoRoots);
    }
    Ok(certs)
}

/// An HTTP client for tenant-configured URLs (cheap to clone). Time limits are per request
/// ([`RequestBuilder::timeout`]).
#[derive(Clone)]
pub struct OutboundClient {
    http: reqwest::Client,
    policy: Arc<OutboundPolicy>,
}

impl OutboundClient {
    pub fn new(policy: Arc<OutboundPolicy>) -> Result<Self, OutboundError> {
        let http = Self::builder(&policy)
            .build()
            .map_err(OutboundError::Client)?;
        Ok(Self { http, policy })
    }

    /// A client under the same policy that trusts the certificates of `pem` (one or more PEM
    /// certificates) instead of the system's roots, for a tenant's own CA.
    pub fn with_roots(&self, pem: &str) -> Result<Self, OutboundError> {
        let certs = parse_roots(pem)?;
        let mut builder = Self::builder(&self.policy).tls_built_in_root_certs(false);
        for c in certs {
            builder = builder.add_root_certificate(c);
        }
        let http = builder.build().map_err(OutboundError::Client)?;
        Ok(Self {
            http,
            policy: self.policy.clone(),
        })
    }

    fn builder(policy: &Arc<OutboundPolicy>) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .dns_resolver(Arc::new(PolicyResolver::new(policy.clone())))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
    }

    pub fn policy(&self) -> &OutboundPolicy {
        &self.policy
    }

    /// A request to `url`, after the checks that need no DNS: an http(s) URL, and, if its host
    /// is a literal address, one the policy allows.
    pub fn request(&self, method: Method, url: &str) -> Result<RequestBuilder, OutboundError> {
        let parsed = Url::parse(url).map_err(|source| OutboundError::InvalidUrl {
            url: url.to_string(),
            source,
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(OutboundError::Scheme {
                url: url.to_string(),
            });
        }
        self.policy.check_literal(&parsed)?;
        Ok(self.http.request(method, parsed))
    }

    /// Sends a request made by [`OutboundClient::request`]. A 3xx answer is an error
    /// (redirects are not followed); other answers are the caller's to judge.
    pub async fn send(&self, request: RequestBuilder) -> Result<Response, OutboundError> {
        let response = request.send().await.map_err(OutboundError::from_reqwest)?;
        if response.status().is_redirection() {
            return Err(OutboundError::Redirect {
                url: response.url().to_string(),
                status: response.status(),
                location: response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .map(str::to_string),
            });
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    /// A listener nobody serves: whatever connects stays in its accept queue, to be counted.
    fn listener(ip: &str) -> (std::net::TcpListener, u16) {
        let l = std::net::TcpListener::bind((ip, 0)).unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        (l, port)
    }

    fn connections(l: &std::net::TcpListener) -> usize {
        std::iter::from_fn(|| l.accept().ok()).count()
    }

    fn client(allow: &str) -> OutboundClient {
        OutboundClient::new(Arc::new(OutboundPolicy::new(
            OutboundPolicy::parse_list(allow).unwrap(),
        )))
        .unwrap()
    }

    #[tokio::test]
    async fn the_resolver_refuses_names_of_loopback() {
        let resolver = PolicyResolver::new(Arc::default());
        let e = match resolver.resolve("localhost".parse().unwrap()).await {
            Ok(addrs) => panic!("resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(e) => e,
        };
        let r = e.downcast_ref::<OutboundRefusal>().unwrap();
        assert_eq!(r.class, AddressClass::Loopback);
        assert!(e.to_string().contains("localhost resolves to"), "{e}");

        let allow = Arc::new(OutboundPolicy::new(
            OutboundPolicy::parse_list("127.0.0.0/8").unwrap(),
        ));
        let addrs: Vec<_> = PolicyResolver::new(allow)
            .resolve("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(!addrs.is_empty());
        assert!(addrs.iter().all(|a| a.ip().is_ipv4()), "{addrs:?}");
    }

    #[tokio::test]
    async fn refused_hosts_are_never_connected_to() {
        let (l, port) = listener("127.0.0.1");
        let c = client("");
        // A literal address: refused before any request is built.
        let e = c
            .request(Method::POST, &format!("http://127.0.0.1:{port}/"))
            .unwrap_err();
        assert!(matches!(e, OutboundError::Refused(_)), "{e}");
        // A name: refused by the resolver; the error says so, not "connection failed".
        let req = c
            .request(Method::POST, &format!("http://localhost:{port}/"))
            .unwrap();
        let e = c.send(req).await.unwrap_err();
        match &e {
            OutboundError::Refused(r) => {
                assert_eq!(r.host, "localhost");
                assert_eq!(r.class, AddressClass::Loopback);
            }
            other => panic!("{other}"),
        }
        assert!(
            e.to_string()
                .starts_with("refused by the outbound address policy: localhost resolves to"),
            "{e}"
        );
        assert_eq!(connections(&l), 0);
        // The count is real: a connection does show.
        std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        assert_eq!(connections(&l), 1);
        let e = c
            .request(Method::GET, "ftp://example.com/")
            .unwrap_err()
            .to_string();
        assert!(e.contains("only http and https"), "{e}");
        assert!(c.request(Method::GET, "not a url").is_err());
    }

    #[tokio::test]
    async fn allowed_hosts_are_reached_and_redirects_are_not_followed() {
        let (inner, inner_port) = listener("127.0.0.2");
        let target = format!("http://127.0.0.2:{inner_port}/secret");
        let app = axum::Router::new()
            .route("/ok", axum::routing::post(|| async { "fine" }))
            .route(
                "/bounce",
                axum::routing::post(move || {
                    let target = target.clone();
                    async move {
                        (
                            axum::http::StatusCode::TEMPORARY_REDIRECT,
                            [(axum::http::header::LOCATION, target)],
                        )
                    }
                }),
            );
        let outer = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let outer_port = outer.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(outer, app).await.unwrap() });

        let c = client("127.0.0.1");
        for host in ["127.0.0.1", "localhost"] {
            let req = c
                .request(Method::POST, &format!("http://{host}:{outer_port}/ok"))
                .unwrap()
                .timeout(Duration::from_secs(5));
            let r = c.send(req).await.unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{host}");
        }
        let req = c
            .request(
                Method::POST,
                &format!("http://127.0.0.1:{outer_port}/bounce"),
            )
            .unwrap();
        let e = c.send(req).await.unwrap_err();
        assert!(matches!(e, OutboundError::Redirect { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("307 Temporary Redirect (to http://127.0.0.2:"),
            "{e}"
        );
        assert!(e.to_string().ends_with("redirects are not followed"), "{e}");
        assert_eq!(connections(&inner), 0);
        // The redirect target itself is refused (127.0.0.2 is not on the list).
        let e = c
            .request(Method::POST, &format!("http://127.0.0.2:{inner_port}/"))
            .unwrap_err();
        assert!(matches!(e, OutboundError::Refused(_)), "{e}");
    }
}
