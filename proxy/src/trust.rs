//! The origins' trust anchors: the system trust store plus `--upstream-ca-file`.
//!
//! They load on a thread of their own when the first connection to an HTTPS origin (or HTTPS
//! upstream proxy) starts, beside its TCP connect, and only its TLS handshake waits for them:
//! a run whose command makes no HTTPS request (`boundary -- true`) reads no certificate and
//! spends no CPU on them, and a load that fails or hangs fails the handshakes that need it,
//! with the reason (the handshake timeout bounds the wait), instead of the run.
//!
//! The system store is found as OpenSSL finds it (`SSL_CERT_FILE` and `SSL_CERT_DIR`, else the
//! distribution's bundle file and certificate directories). Each certificate is read once: the
//! bundle file at load, and the directories (on Debian, one file per certificate of the same
//! bundle) only when an origin's certificate does not verify against the bundle, as OpenSSL
//! consults its certificate directory only for an issuer its bundle lacks. A certificate that
//! verifies against the bundle therefore verifies as it would against bundle and directories
//! together, and one that needs a certificate found only in a directory still verifies.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::sync::watch;

/// What a load ends with: the verifier, or why there is none (the whole message).
type Loaded = Result<Arc<Verifier>, String>;

/// The trust anchors, loaded on a thread of their own from the first time a connection needs
/// them; clones share the one load.
#[derive(Clone)]
pub(crate) struct TrustStore(Arc<Load>);

struct Load {
    extra: Option<PathBuf>,
    begun: Once,
    done: watch::Sender<Option<Loaded>>,
}

impl TrustStore {
    /// The system store plus `extra` (`--upstream-ca-file`); nothing is read yet.
    pub(crate) fn new(extra: Option<PathBuf>) -> Self {
        Self(Arc::new(Load {
            extra,
            begun: Once::new(),
            done: watch::channel(None).0,
        }))
    }

    /// Starts the load unless it has started. A failure is logged when it happens and given
    /// to every TLS handshake that needs the anchors.
    pub(crate) fn begin(&self) {
        self.0.begun.call_once(|| {
            let load = self.0.clone();
            let spawned = std::thread::Builder::new()
                .name("boundary-trust".into())
                .spawn(move || {
                    let extra = load.extra.clone();
                    let loaded = std::panic::catch_unwind(move || {
                        load_from(Sources::find(), extra.as_deref())
                    })
                    .unwrap_or_else(|_| Err("loading them panicked".into()));
                    load.finish(loaded);
                });
            if let Err(e) = spawned {
                self.0
                    .finish(Err(format!("cannot start a thread to load them: {e}")));
            }
        });
    }

    /// Starts the load if needed and waits for it (cancel-safe: a caller that stops waiting
    /// takes nothing from the others).
    pub(crate) async fn verifier(&self) -> Loaded {
        self.begin();
        let mut rx = self.0.done.subscribe();
        let done = rx.wait_for(Option::is_some).await;
        let loaded = done.expect("the sender lives in self").clone();
        loaded.expect("waited for Some")
    }
}

impl Load {
    fn finish(&self, loaded: Loaded) {
        let loaded = loaded.map_err(|e| {
            let e = format!("cannot load trust anchors: {e}");
            tracing::error!("{e}; HTTPS requests to origins fail until boundary restarts");
            e
        });
        self.done.send_replace(Some(loaded));
    }
}

/// A TLS client configuration for one ALPN offer, made at its first use from the anchors.
pub(crate) struct UpstreamTls {
    trust: TrustStore,
    alpn: Vec<Vec<u8>>,
    config: OnceLock<Arc<ClientConfig>>,
}

impl UpstreamTls {
    pub(crate) fn new(trust: TrustStore, alpn: &[&[u8]]) -> Self {
        Self {
            trust,
            alpn: alpn.iter().map(|p| p.to_vec()).collect(),
            config: OnceLock::new(),
        }
    }

    /// Starts loading the anchors, ahead of [`Self::config`] (e.g. while the TCP connect runs).
    pub(crate) fn begin(&self) {
        self.trust.begin();
    }

    /// The configuration; waits for the anchors the first time.
    pub(crate) async fn config(&self) -> Result<Arc<ClientConfig>, String> {
        if let Some(c) = self.config.get() {
            return Ok(c.clone());
        }
        let verifier = self.trust.verifier().await?;
        let config = self.config.get_or_init(|| {
            let mut c = ClientConfig::builder_with_provider(verifier.provider.clone())
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth();
            c.alpn_protocols = self.alpn.clone();
            Arc::new(c)
        });
        Ok(config.clone())
    }
}

/// Checks `--upstream-ca-file` exactly as the load will read it (and nothing else), so the
/// binary can refuse a missing or malformed one before it starts a jail.
pub(crate) fn check_extra(path: &Path) -> Result<(), String> {
    add_extra(&mut RootCertStore::empty(), path)
}

/// Where the system store is: `SSL_CERT_FILE`/`SSL_CERT_DIR` when either is set, else the
/// distribution's usual places.
struct Sources {
    file: Option<PathBuf>,
    dirs: Vec<PathBuf>,
}

impl Sources {
    fn find() -> Self {
        let file = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
        let dirs: Vec<PathBuf> = std::env::var_os("SSL_CERT_DIR")
            .map(|d| {
                std::env::split_paths(&d)
                    .filter(|p| !p.as_os_str().is_empty())
                    .collect()
            })
            .unwrap_or_default();
        if file.is_some() || !dirs.is_empty() {
            return Self { file, dirs };
        }
        let probed = openssl_probe::probe();
        Self {
            file: probed.cert_file,
            dirs: probed.cert_dir,
        }
    }
}

/// Reads the bundle file and `extra`; the directories wait for [`Verifier::with_dirs`].
fn load_from(sources: Sources, extra: Option<&Path>) -> Result<Arc<Verifier>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    let mut seen = HashSet::new();
    if let Some(file) = &sources.file {
        if let Ok(meta) = std::fs::metadata(file) {
            seen.insert((meta.dev(), meta.ino()));
        }
        add_pem_file(&mut roots, file);
    }
    tracing::debug!(anchors = roots.len(), file = ?sources.file, "system trust bundle loaded");
    if let Some(path) = extra {
        add_extra(&mut roots, path)?;
    }
    Ok(Arc::new(Verifier {
        primary: build(&roots, &provider),
        roots,
        dirs: sources.dirs,
        seen,
        with_dirs: OnceLock::new(),
        provider,
    }))
}

/// Adds every certificate of a PEM file of the system store; what cannot be read or parsed
/// is skipped (and logged), as TLS libraries do with a system store.
fn add_pem_file(roots: &mut RootCertStore, path: &Path) {
    let pem = match std::fs::read(path) {
        Ok(pem) => pem,
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "skipping part of the system trust store");
            return;
        }
    };
    let certs = CertificateDer::pem_slice_iter(&pem).filter_map(|c| {
        c.map_err(|e| {
            tracing::debug!(path = %path.display(), error = %e, "skipping part of the system trust store");
        })
        .ok()
    });
    let (_, ignored) = roots.add_parsable_certificates(certs);
    if ignored > 0 {
        tracing::debug!(path = %path.display(), ignored, "certificates of the system trust store not usable as anchors");
    }
}

/// Adds `--upstream-ca-file`: unlike the system store, every part of it must be usable.
fn add_extra(roots: &mut RootCertStore, path: &Path) -> Result<(), String> {
    let pem = std::fs::read(path)
        .map_err(|e| format!("cannot read upstream CA file {}: {e}", path.display()))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("upstream CA file {} is not PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "upstream CA file {} holds no certificate",
            path.display()
        ));
    }
    for cert in certs {
        roots.add(cert).map_err(|e| {
            format!(
                "upstream CA file {} holds a bad certificate: {e}",
                path.display()
            )
        })?;
    }
    Ok(())
}

/// A webpki verifier over `roots`; `None` when there are no anchors at all.
fn build(
    roots: &RootCertStore,
    provider: &Arc<CryptoProvider>,
) -> Option<Arc<WebPkiServerVerifier>> {
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots.clone()), provider.clone())
        .build()
        .ok()
}

/// Verifies origins against the bundle and `--upstream-ca-file`, and, for a certificate they
/// do not verify, against those plus the certificate directories (read the first time).
#[derive(Debug)]
pub(crate) struct Verifier {
    primary: Option<Arc<WebPkiServerVerifier>>,
    roots: RootCertStore,
    dirs: Vec<PathBuf>,
    /// Files already read (device, inode): the bundle, which usually sits in a directory.
    seen: HashSet<(u64, u64)>,
    /// The bundle plus the directories; `None` when the directories add no anchor.
    with_dirs: OnceLock<Option<Arc<WebPkiServerVerifier>>>,
    provider: Arc<CryptoProvider>,
}

impl Verifier {
    /// The verifier with the directories' anchors added, reading them on first use.
    fn with_dirs(&self) -> Option<&Arc<WebPkiServerVerifier>> {
        self.with_dirs
            .get_or_init(|| {
                let mut roots = self.roots.clone();
                let before = roots.len();
                let mut seen = self.seen.clone();
                for dir in &self.dirs {
                    add_pem_dir(&mut roots, dir, &mut seen);
                }
                tracing::debug!(added = roots.len() - before, dirs = ?self.dirs, "system trust directories loaded");
                (roots.len() > before)
                    .then(|| build(&roots, &self.provider))
                    .flatten()
            })
            .as_ref()
    }
}

/// Adds the certificates of every file in `dir` not read before (symbolic links followed,
/// each file once).
fn add_pem_dir(roots: &mut RootCertStore, dir: &Path, seen: &mut HashSet<(u64, u64)>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            tracing::debug!(dir = %dir.display(), error = %e, "skipping part of the system trust store");
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_file() && seen.insert((meta.dev(), meta.ino())) {
            add_pem_file(roots, &path);
        }
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verify = |v: &WebPkiServerVerifier| {
            v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        };
        let first = match &self.primary {
            Some(v) => verify(v),
            None => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            )),
        };
        if first.is_ok() || self.dirs.is_empty() {
            return first;
        }
        match self.with_dirs() {
            Some(v) => verify(v),
            None => first,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

    /// A CA and a leaf for `name` signed by it.
    struct Issuer {
        ca: rcgen::Certificate,
        key: KeyPair,
    }

    impl Issuer {
        fn new(cn: &str) -> Self {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::default();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(rcgen::DnType::CommonName, cn);
            Self {
                ca: p.self_signed(&key).unwrap(),
                key,
            }
        }

        fn leaf(&self, name: &str) -> CertificateDer<'static> {
            let key = KeyPair::generate().unwrap();
            let p = CertificateParams::new(vec![name.to_string()]).unwrap();
            p.signed_by(&key, &self.ca, &self.key)
                .unwrap()
                .der()
                .clone()
        }
    }

    fn verify(v: &Verifier, leaf: &CertificateDer<'_>, name: &str) -> Result<(), rustls::Error> {
        let name = ServerName::try_from(name.to_string()).unwrap();
        v.verify_server_cert(leaf, &[], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    #[test]
    fn the_directories_are_read_only_for_a_certificate_the_bundle_does_not_verify() {
        let tmp = tempfile::tempdir().unwrap();
        let (in_bundle, only_in_dir, stranger) = (
            Issuer::new("bundle CA"),
            Issuer::new("directory CA"),
            Issuer::new("stranger CA"),
        );
        let bundle = tmp.path().join("bundle.pem");
        std::fs::write(&bundle, in_bundle.ca.pem()).unwrap();
        let dir = tmp.path().join("certs");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("directory.pem"), only_in_dir.ca.pem()).unwrap();
        // As on Debian: the bundle itself and links to the same file sit in the directory.
        std::os::unix::fs::symlink(&bundle, dir.join("ca-certificates.crt")).unwrap();
        std::os::unix::fs::symlink("directory.pem", dir.join("0123abcd.0")).unwrap();
        std::fs::write(dir.join("README"), "not a certificate").unwrap();
        let sources = Sources {
            file: Some(bundle),
            dirs: vec![dir],
        };
        let v = load_from(sources, None).unwrap();

        verify(&v, &in_bundle.leaf("a.test"), "a.test").unwrap();
        assert!(
            v.with_dirs.get().is_none(),
            "the bundle verified it: the directories stay unread"
        );
        verify(&v, &only_in_dir.leaf("b.test"), "b.test").unwrap();
        assert!(
            matches!(v.with_dirs.get(), Some(Some(_))),
            "the directory's anchor was read and used"
        );
        let err = verify(&v, &stranger.leaf("c.test"), "c.test").unwrap_err();
        assert_eq!(
            err,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
        );
        // Trusted issuer, wrong name: refused with both stores.
        assert!(verify(&v, &only_in_dir.leaf("b.test"), "other.test").is_err());
        assert!(verify(&v, &in_bundle.leaf("a.test"), "other.test").is_err());
    }

    #[test]
    fn no_system_store_at_all_refuses_every_origin_and_the_extra_file_still_counts() {
        let tmp = tempfile::tempdir().unwrap();
        let issuer = Issuer::new("corporate CA");
        let extra = tmp.path().join("corp.pem");
        std::fs::write(&extra, issuer.ca.pem()).unwrap();
        let nothing = || Sources {
            file: Some(tmp.path().join("missing.pem")),
            dirs: vec![tmp.path().join("missing-dir")],
        };
        let bare = load_from(nothing(), None).unwrap();
        assert_eq!(
            verify(&bare, &issuer.leaf("a.test"), "a.test").unwrap_err(),
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
        );
        let with_extra = load_from(nothing(), Some(&extra)).unwrap();
        verify(&with_extra, &issuer.leaf("a.test"), "a.test").unwrap();
    }

    #[test]
    fn a_bad_extra_file_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let empty = tmp.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let none = || Sources {
            file: None,
            dirs: vec![],
        };
        let e = load_from(none(), Some(&empty)).unwrap_err();
        assert!(
            e.contains("holds no certificate") && e.contains("empty.pem"),
            "{e}"
        );
        assert_eq!(check_extra(&empty).unwrap_err(), e);
        let missing = tmp.path().join("missing.pem");
        let e = load_from(none(), Some(&missing)).unwrap_err();
        assert!(e.starts_with("cannot read upstream CA file"), "{e}");
    }
}
