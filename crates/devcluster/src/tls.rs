//! TLS material: a fresh CA per server and a serving certificate for loopback names.

use std::net::IpAddr;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A CA certificate (PEM, for the kubeconfig) and a server config using a certificate it signed.
pub struct Tls {
    pub ca_pem: String,
    /// The CA's private key (PEM), so a data directory can keep the CA across restarts.
    pub ca_key_pem: String,
    pub server_config: Arc<rustls::ServerConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Generate TLS material; with `ca_key_pem`, the CA keeps that key (and its name), so clients
/// that trust an earlier certificate of it keep working.
pub fn generate(
    ip: IpAddr,
    ca_key_pem: Option<&str>,
    external: Option<&ExternalCa>,
) -> Result<Tls, TlsError> {
    if let Some(ca) = external {
        return with_external_ca(ip, ca);
    }
    let ca_key = match ca_key_pem {
        Some(pem) => KeyPair::from_pem(pem)?,
        None => KeyPair::generate()?,
    };
    let ca_key_pem = ca_key.serialize_pem();
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "cks-devcluster CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![
        "localhost".to_string(),
        "kubernetes.default.svc".to_string(),
    ])?;
    params
        .distinguished_name
        .push(DnType::CommonName, "cks-devcluster");
    params.subject_alt_names.push(SanType::IpAddress(ip));
    if !ip.is_loopback() {
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::from([127, 0, 0, 1])));
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Tls {
        ca_pem: ca_cert.pem(),
        ca_key_pem,
        server_config: server_config(&cert, &key, None)?,
    })
}

/// A CA given from outside (a practice cluster's, read from its VM's cloud-init): PEM
/// certificate and key.
#[derive(Debug, Clone)]
pub struct ExternalCa {
    pub cert_pem: String,
    pub key_pem: String,
    /// Extra subject alternative names of the serving certificate (DNS names or IPs), like
    /// kubeadm's `apiServer.certSANs` and `controlPlaneEndpoint`.
    pub sans: Vec<String>,
}

fn serving_params(ip: IpAddr, sans: &[String]) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::new(vec![
        "localhost".to_string(),
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
        "kubernetes.default.svc".to_string(),
    ])?;
    params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    params.subject_alt_names.push(SanType::IpAddress(ip));
    for san in sans {
        match san.parse::<IpAddr>() {
            Ok(extra) => params.subject_alt_names.push(SanType::IpAddress(extra)),
            Err(_) => params
                .subject_alt_names
                .push(SanType::DnsName(san.as_str().try_into()?)),
        }
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    Ok(params)
}

/// Serve with a certificate signed by an external CA, and accept client certificates it
/// signed (kubeadm's admin.conf authenticates that way) besides the bearer token.
fn with_external_ca(ip: IpAddr, ca: &ExternalCa) -> Result<Tls, TlsError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)?;
    let key = KeyPair::generate()?;
    let cert = serving_params(ip, &ca.sans)?.signed_by(&key, &issuer)?;
    let ca_der = rustls::pki_types::pem::PemObject::from_pem_slice(ca.cert_pem.as_bytes())
        .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_der)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
    Ok(Tls {
        ca_pem: ca.cert_pem.clone(),
        ca_key_pem: ca.key_pem.clone(),
        server_config: server_config(&cert, &key, Some(verifier))?,
    })
}

fn server_config(
    cert: &rcgen::Certificate,
    key: &KeyPair,
    clients: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder =
        rustls::ServerConfig::builder_with_provider(provider).with_safe_default_protocol_versions()?;
    let builder = match clients {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(
        vec![CertificateDer::from(cert.der().to_vec())],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
