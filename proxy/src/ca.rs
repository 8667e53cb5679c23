//! The local certificate authority that signs the leaf certificates shown to intercepted clients.
//!
//! A jailed run uses a per-run CA ([`CertificateAuthority::ephemeral`]): its key is generated in
//! memory and never written anywhere, only its certificate is (for the jailed process's trust
//! variables), so no jail, in this run or any other, can read the key that signs the leaves.
//! A persistent CA ([`CertificateAuthority::load_or_create`], docs/interop.md §4's
//! `ca-cert.pem` and `ca-key.pem` in a directory) is loaded when both files are present and
//! valid (parseable, key matching the certificate, not expired), otherwise a fresh ECDSA P-256
//! CA is written; it is for tools outside a jail (selftest's fixture upstream). Leaves are
//! ECDSA P-256 too, minted per host name (or IP address, for TLS without SNI), with random
//! serials and a backdated start, and cached in a sharded map so that concurrent handshakes for
//! different hosts never wait on one global lock.

use std::collections::HashMap;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration as StdDuration, Instant};

use rand::RngCore;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
    PKCS_ECDSA_P256_SHA256,
};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

/// File name of the CA certificate inside the config directory (docs/interop.md §4).
pub const CA_CERT_FILE: &str = "ca-cert.pem";
/// File name of the CA private key inside the config directory (docs/interop.md §4).
pub const CA_KEY_FILE: &str = "ca-key.pem";

/// How long a freshly created CA is valid.
const CA_VALIDITY: Duration = Duration::days(365);
/// How long a leaf is valid; short, because leaves are cheap and only live in memory.
const LEAF_VALIDITY: Duration = Duration::days(7);
/// Start of validity is moved back so clients with a slightly slow clock accept the cert.
const BACKDATE: Duration = Duration::hours(1);
/// A cached leaf is replaced when it has less than this left (cache age, monotonic clock).
const LEAF_RENEW_AFTER: StdDuration = StdDuration::from_secs(6 * 24 * 3600);
/// Number of independently locked cache shards.
const SHARDS: usize = 32;
/// A shard that grows past this is emptied, bounding memory under a flood of host names.
const SHARD_CAPACITY: usize = 512;

/// Why the CA could not be loaded, created or used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot create the config directory {path}: {source}; set XDG_CONFIG_HOME or HOME to a writable place")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}; check that the config directory is writable")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot build the TLS configuration for {host}: {source}")]
    Tls { host: String, source: rustls::Error },
}

struct CachedLeaf {
    config: Arc<ServerConfig>,
    /// When this leaf is replaced by a fresh one (well before it expires).
    renew_at: Instant,
}

/// The loaded CA plus the leaf cache. Shared by every connection of one proxy.
pub struct CertificateAuthority {
    cert_path: PathBuf,
    /// Where the key is stored; `None` for a per-run CA whose key exists only in memory.
    key_path: Option<PathBuf>,
    issuer: Certificate,
    issuer_key: KeyPair,
    issuer_der: CertificateDer<'static>,
    shards: Vec<RwLock<HashMap<String, CachedLeaf>>>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// dir = the config dir (docs/interop.md §4): loads `<dir>/ca-cert.pem` + `<dir>/ca-key.pem` if
    /// valid, otherwise creates them (dir created 0700, key 0600). Clear error if dir unwritable.
    pub fn load_or_create(dir: &Path) -> Result<Self, CaError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        match load(&cert_path, &key_path) {
            Ok((issuer, issuer_key, issuer_der)) => {
                tracing::debug!(path = %cert_path.display(), "loaded existing CA");
                // Tighten a key file someone loosened; failure to do so is not fatal.
                let _ = fs::set_permissions(&key_path, fs::Permissions::from_mode(0o600));
                return Ok(Self::from_parts(
                    cert_path,
                    Some(key_path),
                    issuer,
                    issuer_key,
                    issuer_der,
                ));
            }
            Err(reason) => {
                if cert_path.exists() || key_path.exists() {
                    tracing::warn!(path = %cert_path.display(), %reason, "existing CA unusable; creating a new one");
                }
            }
        }
        create_private_dir(dir)?;
        let (issuer, issuer_key) = create_ca()?;
        write_file(
            &key_path,
            issuer_key.serialize_pem().as_bytes(),
            0o600,
            Durable::Yes,
        )?;
        write_file(&cert_path, issuer.pem().as_bytes(), 0o644, Durable::Yes)?;
        tracing::info!(path = %cert_path.display(), "created a new CA");
        let issuer_der = issuer.der().clone();
        Ok(Self::from_parts(
            cert_path,
            Some(key_path),
            issuer,
            issuer_key,
            issuer_der,
        ))
    }

    /// A CA for one run: a fresh key that exists only in this process's memory, and its
    /// certificate written to `<dir>/ca-cert.pem` (dir created 0700) for the jailed process's
    /// trust variables. Nothing on disk, in any run, ever holds the key, so no jail can read it.
    pub fn ephemeral(dir: &Path) -> Result<Self, CaError> {
        create_private_dir(dir)?;
        let cert_path = dir.join(CA_CERT_FILE);
        let (issuer, issuer_key) = create_ca()?;
        // Not synced: the file lives as long as this run, which is never after a crash (the
        // next run removes the directory), and fsync on a busy /tmp took 1-12 ms of the start.
        write_file(&cert_path, issuer.pem().as_bytes(), 0o644, Durable::No)?;
        let issuer_der = issuer.der().clone();
        Ok(Self::from_parts(
            cert_path, None, issuer, issuer_key, issuer_der,
        ))
    }

    fn from_parts(
        cert_path: PathBuf,
        key_path: Option<PathBuf>,
        issuer: Certificate,
        issuer_key: KeyPair,
        issuer_der: CertificateDer<'static>,
    ) -> Self {
        Self {
            cert_path,
            key_path,
            issuer,
            issuer_key,
            issuer_der,
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
        }
    }

    /// Path of the CA certificate, to hand to the jailed process's trust variables.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// Path of the stored CA key (`None` for a per-run CA whose key is only in memory).
    pub fn key_path(&self) -> Option<&Path> {
        self.key_path.as_deref()
    }

    /// The CA certificate as DER, exactly as stored on disk.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.issuer_der
    }

    /// A TLS server configuration presenting a leaf for `host` (a DNS name or an IP literal),
    /// offering ALPN h2 and http/1.1. Cached; minted on first use and renewed before expiry.
    pub fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, CaError> {
        let key = crate::host::normal_form(host);
        let shard = &self.shards[shard_index(&key)];
        if let Some(leaf) = shard.read().unwrap_or_else(|e| e.into_inner()).get(&key) {
            if Instant::now() < leaf.renew_at {
                return Ok(leaf.config.clone());
            }
        }
        let config = Arc::new(self.mint(&key)?);
        let mut map = shard.write().unwrap_or_else(|e| e.into_inner());
        if map.len() >= SHARD_CAPACITY {
            map.clear();
        }
        map.insert(
            key,
            CachedLeaf {
                config: config.clone(),
                renew_at: Instant::now() + LEAF_RENEW_AFTER,
            },
        );
        Ok(config)
    }

    /// Mints a new leaf for `host` without consulting the cache (also used by the benchmark).
    pub fn mint(&self, host: &str) -> Result<ServerConfig, CaError> {
        let (chain, key) = self.mint_leaf(host)?;
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|source| CaError::Tls {
                    host: host.to_string(),
                    source,
                })?
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .map_err(|source| CaError::Tls {
                    host: host.to_string(),
                    source,
                })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }

    /// A leaf certificate chain (leaf, CA) and its private key for `host`.
    pub fn mint_leaf(
        &self,
        host: &str,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let san = match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(host.to_string().try_into()?),
        };
        params.subject_alt_names = vec![san];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host);
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.serial_number = Some(random_serial());
        // Strict verifiers (OpenSSL's X509_STRICT, Python 3.13's default) require the AKI.
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + LEAF_VALIDITY;
        let cert = params.signed_by(&key, &self.issuer, &self.issuer_key)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((vec![cert.der().clone(), self.issuer_der.clone()], key_der))
    }
}

fn shard_index(key: &str) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() as usize) % SHARDS
}

/// 16 random bytes, top bit cleared so the DER INTEGER stays positive.
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

fn create_ca() -> Result<(Certificate, KeyPair), CaError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Coder Agent Boundaries");
    dn.push(DnType::CommonName, "Agent Boundaries local CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial());
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + CA_VALIDITY;
    let cert = params.self_signed(&key)?;
    Ok((cert, key))
}

/// Loads and checks an existing CA; the error string says why it is unusable.
fn load(
    cert_path: &Path,
    key_path: &Path,
) -> Result<(Certificate, KeyPair, CertificateDer<'static>), String> {
    let cert_pem = fs::read_to_string(cert_path).map_err(|e| format!("read certificate: {e}"))?;
    let key_pem = fs::read_to_string(key_path).map_err(|e| format!("read key: {e}"))?;
    let der = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .next()
        .ok_or("no certificate in the PEM file")?
        .map_err(|e| format!("bad PEM: {e}"))?;
    let (_, parsed) =
        x509_parser::parse_x509_certificate(&der).map_err(|e| format!("bad certificate: {e}"))?;
    let now = OffsetDateTime::now_utc();
    let validity = parsed.validity();
    // Expired or expiring within a day: leaves minted from it would soon fail everywhere.
    if validity.not_after.to_datetime() < now + Duration::days(1)
        || validity.not_before.to_datetime() > now + Duration::hours(1)
    {
        return Err("certificate expired or not yet valid".into());
    }
    if !parsed.is_ca() {
        return Err("certificate is not a CA".into());
    }
    let key = KeyPair::from_pem(&key_pem).map_err(|e| format!("bad key: {e}"))?;
    if key.public_key_der() != parsed.public_key().raw {
        return Err("key does not belong to the certificate".into());
    }
    let params = CertificateParams::from_ca_cert_der(&der).map_err(|e| e.to_string())?;
    // Re-signing reproduces the issuer name and key identifier the leaves must point at.
    let issuer = params.self_signed(&key).map_err(|e| e.to_string())?;
    Ok((issuer, key, der.into_owned()))
}

/// Creates `dir` (and its parents) readable by its owner only, where the CA's files go.
fn create_private_dir(dir: &Path) -> Result<(), CaError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| CaError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })
}

/// Whether a file must reach the disk before it replaces the old one (a CA that outlives the run).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Durable {
    Yes,
    No,
}

fn write_file(path: &Path, contents: &[u8], mode: u32, durable: Durable) -> Result<(), CaError> {
    let tmp = path.with_extension("pem.tmp");
    let result = (|| {
        let _ = fs::remove_file(&tmp);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(contents)?;
        if durable == Durable::Yes {
            f.sync_all()?;
        }
        fs::rename(&tmp, path)
    })();
    result.map_err(|source| CaError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests;
