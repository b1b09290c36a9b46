//! `wss://` for `tetherd`: the `--tls-cert` / `--tls-key` files, served
//! through rustls and re-read on SIGHUP.
//!
//! A reload swaps the certificate that new handshakes get; connections that
//! finished their handshake keep running untouched. A reload that fails (a
//! missing or half-written file, a key that does not match) is logged and
//! the previous certificate stays in use.
//!
//! ```text
//!  SIGHUP ─► read both files ─► CertifiedKey ─┐ (on error: log, keep the old one)
//!                                             ▼
//!  TcpStream ─► TlsAcceptor ─► Reloading::resolve ─► current certificate
//! ```

use std::{
    fmt, fs, io,
    path::{Path, PathBuf},
    sync::{Arc, PoisonError, RwLock},
};

use rustls::{
    crypto::CryptoProvider,
    pki_types::{
        CertificateDer, PrivateKeyDer,
        pem::{self, PemObject},
    },
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_rustls::TlsAcceptor;
use tracing::{error, info};

/// Builds the acceptor for `cert` and `key` (PEM files) and starts reloading
/// them on SIGHUP. Call inside the runtime. Errors name the file at fault.
pub(crate) fn acceptor(cert: PathBuf, key: PathBuf) -> io::Result<TlsAcceptor> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let files = Files { cert, key };
    let loaded = files
        .load(&provider)
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
    files.log_loaded(&loaded, "TLS certificate loaded");
    let resolver = Arc::new(Reloading {
        files,
        provider: provider.clone(),
        current: RwLock::new(Arc::new(loaded)),
    });
    // Registered before the listener is announced, so a SIGHUP from then on
    // reloads instead of terminating the process.
    let hangups = signal(SignalKind::hangup())?;
    tokio::spawn(reload_on_hangup(hangups, resolver.clone()));
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        // Invariant: the ring provider supports rustls's default versions.
        .expect("ring supports the default TLS versions")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

async fn reload_on_hangup(mut hangups: Signal, resolver: Arc<Reloading>) {
    while hangups.recv().await.is_some() {
        let reloading = resolver.clone();
        // Reading files blocks; keep it off the workers serving connections.
        let loaded = tokio::task::spawn_blocking(move || {
            reloading.files.load(&reloading.provider).map(Arc::new)
        })
        .await;
        match loaded {
            Ok(Ok(loaded)) => {
                resolver
                    .files
                    .log_loaded(&loaded, "TLS certificate reloaded");
                *resolver
                    .current
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = loaded;
            }
            Ok(Err(error)) => {
                error!(%error, "TLS certificate reload failed; still serving the previous certificate");
            }
            Err(error) => {
                error!(%error, "TLS certificate reload did not finish; still serving the previous certificate");
            }
        }
    }
}

/// The PEM files a certificate is loaded from.
#[derive(Debug)]
struct Files {
    cert: PathBuf,
    key: PathBuf,
}

impl Files {
    /// Reads the chain and the key and checks that they belong together.
    fn load(&self, provider: &CryptoProvider) -> Result<CertifiedKey, LoadError> {
        let cert_error = |reason: String| LoadError::new("--tls-cert", &self.cert, reason);
        let key_error = |reason: String| LoadError::new("--tls-key", &self.key, reason);
        let chain =
            fs::read(&self.cert).map_err(|error| cert_error(format!("cannot read: {error}")))?;
        let chain = CertificateDer::pem_slice_iter(&chain)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| cert_error(pem_reason(&error, "CERTIFICATE")))?;
        if chain.is_empty() {
            return Err(cert_error(pem_reason(
                &pem::Error::NoItemsFound,
                "CERTIFICATE",
            )));
        }
        let key =
            fs::read(&self.key).map_err(|error| key_error(format!("cannot read: {error}")))?;
        let key = PrivateKeyDer::from_pem_slice(&key).map_err(|error| {
            key_error(pem_reason(
                &error,
                "PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY",
            ))
        })?;
        CertifiedKey::from_der(chain, key, provider).map_err(|error| match error {
            rustls::Error::InconsistentKeys(_) => key_error(format!(
                "does not match the certificate in {}",
                self.cert.display()
            )),
            rustls::Error::InvalidCertificate(_) => {
                cert_error(format!("not a usable certificate: {error}"))
            }
            _ => key_error(format!("unusable private key: {error}")),
        })
    }

    fn log_loaded(&self, loaded: &CertifiedKey, message: &str) {
        let (subject, expires) = loaded.cert.first().map_or((None, None), |cert| {
            (x509::common_name(cert), x509::not_after(cert))
        });
        info!(
            cert = %self.cert.display(),
            key = %self.key.display(),
            subject = subject.as_deref().unwrap_or("-"),
            expires = expires.as_deref().unwrap_or("-"),
            "{message}"
        );
    }
}

/// Says what was wrong with a PEM file, for an operator.
fn pem_reason(error: &pem::Error, wanted: &str) -> String {
    match error {
        pem::Error::NoItemsFound => format!("no PEM {wanted} block found"),
        pem::Error::MissingSectionEnd { .. } => "a PEM block has no END line".to_owned(),
        pem::Error::Io(error) => format!("cannot read: {error}"),
        error => format!("not valid PEM: {error}"),
    }
}

/// The certificate for new handshakes; SIGHUP replaces it.
struct Reloading {
    files: Files,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

impl fmt::Debug for Reloading {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reloading")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

/// A certificate or key file that could not be used, and why.
#[derive(Debug)]
struct LoadError {
    flag: &'static str,
    file: PathBuf,
    reason: String,
}

impl LoadError {
    fn new(flag: &'static str, file: &Path, reason: String) -> Self {
        Self {
            flag,
            file: file.to_owned(),
            reason,
        }
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.flag, self.file.display(), self.reason)
    }
}

impl std::error::Error for LoadError {}

/// Just enough X.509 DER reading to log which certificate was loaded. Any
/// surprise gives `None`: these are log fields, not checks (rustls and webpki
/// validate the certificate).
mod x509 {
    /// DER tags.
    const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    const OID: u8 = 0x06;
    const UTC_TIME: u8 = 0x17;
    const GENERALIZED_TIME: u8 = 0x18;
    const VERSION: u8 = 0xa0;
    /// id-at-commonName, 2.5.4.3.
    const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

    /// The fields of TBSCertificate from `validity` on.
    fn from_validity(cert: &[u8]) -> Option<&[u8]> {
        let (tag, cert, _) = next(cert)?;
        let (tbs_tag, mut tbs, _) = next(cert)?;
        if tag != SEQUENCE || tbs_tag != SEQUENCE {
            return None;
        }
        if tbs.first() == Some(&VERSION) {
            tbs = next(tbs)?.2;
        }
        // serialNumber, signature, issuer.
        for _ in 0..3 {
            tbs = next(tbs)?.2;
        }
        Some(tbs)
    }

    /// `notAfter` as `YYYY-MM-DDThh:mm:ssZ`.
    pub(super) fn not_after(cert: &[u8]) -> Option<String> {
        let (tag, validity, _) = next(from_validity(cert)?)?;
        if tag != SEQUENCE {
            return None;
        }
        let (tag, time, _) = next(next(validity)?.2)?;
        let time = std::str::from_utf8(time).ok()?;
        let time = match tag {
            UTC_TIME => {
                // RFC 5280 §4.1.2.5.1: YY of 50 or more is 19YY.
                let century = if time.get(..2)? >= "50" { "19" } else { "20" };
                format!("{century}{time}")
            }
            GENERALIZED_TIME => time.to_owned(),
            _ => return None,
        };
        if time.len() != 15
            || !time.ends_with('Z')
            || !time[..14].bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        Some(format!(
            "{}-{}-{}T{}:{}:{}Z",
            &time[..4],
            &time[4..6],
            &time[6..8],
            &time[8..10],
            &time[10..12],
            &time[12..14]
        ))
    }

    /// The subject's first common name.
    pub(super) fn common_name(cert: &[u8]) -> Option<String> {
        let after_validity = next(from_validity(cert)?)?.2;
        let (tag, mut rdns, _) = next(after_validity)?;
        if tag != SEQUENCE {
            return None;
        }
        while !rdns.is_empty() {
            let (tag, mut rdn, rest) = next(rdns)?;
            rdns = rest;
            if tag != SET {
                return None;
            }
            while !rdn.is_empty() {
                let (_, attribute, rest) = next(rdn)?;
                rdn = rest;
                let (tag, oid, value) = next(attribute)?;
                if tag == OID && oid == COMMON_NAME {
                    let (_, name, _) = next(value)?;
                    return Some(String::from_utf8_lossy(name).into_owned());
                }
            }
        }
        None
    }

    /// Splits one DER item off `input`: its tag, its contents, the rest.
    fn next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 {
                return None;
            }
            let (bytes, after) = rest.split_at_checked(count)?;
            rest = after;
            bytes
                .iter()
                .fold(0, |len, &byte| (len << 8) | usize::from(byte))
        };
        let (contents, rest) = rest.split_at_checked(len)?;
        Some((tag, contents, rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_subject_and_expiry_for_the_log() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Tether");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "tether test");
        params.not_after = rcgen::date_time_ymd(2049, 12, 31);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.clone().self_signed(&key).unwrap();
        assert_eq!(
            x509::common_name(cert.der()).as_deref(),
            Some("tether test")
        );
        assert_eq!(
            x509::not_after(cert.der()).as_deref(),
            Some("2049-12-31T00:00:00Z")
        );
        params.not_after = rcgen::date_time_ymd(2051, 1, 2);
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            x509::not_after(cert.der()).as_deref(),
            Some("2051-01-02T00:00:00Z")
        );
        assert_eq!(x509::not_after(&cert.der()[..40]), None);
        assert_eq!(x509::common_name(b"\x30\x84\xff\xff\xff\xff"), None);
    }
}
