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
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| CaError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        let (issuer, issuer_key) = create_ca()?;
        write_file(&key_path, issuer_key.serialize_pem().as_bytes(), 0o600)?;
        write_file(&cert_path, issuer.pem().as_bytes(), 0o644)?;
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
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| CaError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        let cert_path = dir.join(CA_CERT_FILE);
        let (issuer, issuer_key) = create_ca()?;
        write_file(&cert_path, issuer.pem().as_bytes(), 0o644)?;
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

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), CaError> {
    let tmp = path.with_extension("pem.tmp");
    let result = (|| {
        let _ = fs::remove_file(&tmp);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    result.map_err(|source| CaError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_then_reloads_the_same_ca() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("coder_boundary");
        let ca = CertificateAuthority::load_or_create(&conf).unwrap();
        let first = fs::read(ca.cert_path()).unwrap();
        let mode = fs::metadata(ca.key_path().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = fs::metadata(&conf).unwrap().permissions().mode() & 0o777;
        assert_eq!(dmode, 0o700);
        let again = CertificateAuthority::load_or_create(&conf).unwrap();
        assert_eq!(first, fs::read(again.cert_path()).unwrap());
        assert_eq!(again.cert_der().as_ref(), ca.cert_der().as_ref());
    }

    #[test]
    fn a_per_run_ca_writes_only_its_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let ca = CertificateAuthority::ephemeral(&run).unwrap();
        assert!(ca.key_path().is_none());
        let names: Vec<_> = fs::read_dir(&run)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(CA_CERT_FILE)]);
        let pem = fs::read_to_string(ca.cert_path()).unwrap();
        assert!(!pem.contains("PRIVATE KEY"));
        let dmode = fs::metadata(&run).unwrap().permissions().mode() & 0o777;
        assert_eq!(dmode, 0o700);
        // It signs leaves, and a second one is a different CA.
        ca.mint_leaf("p.example").unwrap();
        let other = CertificateAuthority::ephemeral(&dir.path().join("run2")).unwrap();
        assert_ne!(other.cert_der().as_ref(), ca.cert_der().as_ref());
    }

    #[test]
    fn replaces_a_corrupt_ca() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(CA_CERT_FILE), "garbage").unwrap();
        fs::write(dir.path().join(CA_KEY_FILE), "garbage").unwrap();
        let ca = CertificateAuthority::load_or_create(dir.path()).unwrap();
        assert!(fs::read_to_string(ca.cert_path())
            .unwrap()
            .contains("BEGIN CERTIFICATE"));
    }

    #[test]
    fn replaces_a_ca_whose_key_does_not_match() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let ca_a = CertificateAuthority::load_or_create(a.path()).unwrap();
        let _ca_b = CertificateAuthority::load_or_create(b.path()).unwrap();
        fs::copy(b.path().join(CA_KEY_FILE), a.path().join(CA_KEY_FILE)).unwrap();
        let reloaded = CertificateAuthority::load_or_create(a.path()).unwrap();
        assert_ne!(reloaded.cert_der().as_ref(), ca_a.cert_der().as_ref());
    }

    #[test]
    fn unwritable_dir_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        fs::write(&file, "x").unwrap();
        let err = CertificateAuthority::load_or_create(&file.join("sub")).unwrap_err();
        assert!(err
            .to_string()
            .contains("cannot create the config directory"));
    }

    #[test]
    fn leaves_are_cached_and_distinct_per_host() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::load_or_create(dir.path()).unwrap();
        let a1 = ca.server_config("a.example").unwrap();
        let a2 = ca.server_config("A.example.").unwrap();
        let b = ca.server_config("b.example").unwrap();
        assert!(Arc::ptr_eq(&a1, &a2));
        assert!(!Arc::ptr_eq(&a1, &b));
        ca.server_config("127.0.0.1").unwrap();
        ca.server_config("::1").unwrap();
    }

    #[test]
    fn leaf_authority_key_id_names_the_ca() {
        use x509_parser::extensions::ParsedExtension;
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::load_or_create(dir.path()).unwrap();
        // Also after a reload, when the issuer is rebuilt from the file.
        let ca = CertificateAuthority::load_or_create(dir.path()).unwrap_or(ca);
        let (chain, _) = ca.mint_leaf("k.example").unwrap();
        let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
        let (_, root) = x509_parser::parse_x509_certificate(ca.cert_der()).unwrap();
        let aki = leaf
            .iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(a) => {
                    a.key_identifier.as_ref().map(|k| k.0.to_vec())
                }
                _ => None,
            });
        let ski = root
            .iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
                _ => None,
            });
        assert!(aki.is_some(), "leaf has no authority key identifier");
        assert_eq!(aki, ski);
    }

    #[test]
    fn leaves_are_renewed_when_due() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::load_or_create(dir.path()).unwrap();
        let first = ca.server_config("r.example").unwrap();
        {
            let mut shard = ca.shards[shard_index("r.example")].write().unwrap();
            shard.get_mut("r.example").unwrap().renew_at = Instant::now();
        }
        let second = ca.server_config("r.example").unwrap();
        assert!(!Arc::ptr_eq(&first, &second), "a due leaf was not renewed");
        let third = ca.server_config("r.example").unwrap();
        assert!(Arc::ptr_eq(&second, &third));
    }

    #[test]
    fn leaf_has_san_random_serial_and_backdated_start() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::load_or_create(dir.path()).unwrap();
        let (c1, _) = ca.mint_leaf("x.example").unwrap();
        let (c2, _) = ca.mint_leaf("10.1.2.3").unwrap();
        let (_, p1) = x509_parser::parse_x509_certificate(&c1[0]).unwrap();
        let (_, p2) = x509_parser::parse_x509_certificate(&c2[0]).unwrap();
        assert_ne!(p1.serial, p2.serial);
        assert!(p1.validity().not_before.to_datetime() < OffsetDateTime::now_utc());
        let san = p1.subject_alternative_name().unwrap().unwrap();
        assert_eq!(
            format!("{:?}", san.value.general_names),
            "[DNSName(\"x.example\")]"
        );
        let san2 = p2.subject_alternative_name().unwrap().unwrap();
        assert!(format!("{:?}", san2.value.general_names).contains("IPAddress"));
    }
}
