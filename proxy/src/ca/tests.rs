//! Tests of the local CA: creation, reload, repair, per-run CAs, leaf minting and renewal.

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
