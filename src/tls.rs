//! TLS for both listeners and for what a node dials (peers' `/raft/*`, the leader's
//! client API when forwarding), from PEM files named in `[tls]`.
//!
//! One identity per node (`cert`, `key`) serves the client API and the peer
//! listener; `ca` is what this node trusts when it dials another node (only those
//! roots: never the system's). With `peer_client_auth`, the peer listener also
//! demands a client certificate signed by `ca` (mutual TLS), and this node presents
//! its own when it dials. The cluster secret is still required on every RPC.
//!
//! Owns loading and building the rustls configs; must not depend on the client API,
//! Raft or storage.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// `[tls]` as written. All paths are PEM files.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// This node's certificate chain (leaf first), for both listeners.
    pub cert: Option<PathBuf>,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// The CA certificate(s) this node trusts when it dials another node.
    pub ca: Option<PathBuf>,
    /// Mutual TLS between peers: the peer listener requires a client certificate
    /// signed by `ca`, and this node presents its own when it dials.
    #[serde(default)]
    pub peer_client_auth: bool,
}

/// A node's loaded TLS material and the configs built from it.
pub struct NodeTls {
    /// The client API listener's config (no client certificate asked).
    pub client_listener: Arc<rustls::ServerConfig>,
    /// The peer listener's config (a client certificate required with
    /// `peer_client_auth`).
    pub peer_listener: Arc<rustls::ServerConfig>,
    /// `ca`'s PEM text: the roots of what this node dials.
    ca_pem: Vec<u8>,
    /// `cert` + `key` PEM text, presented when dialing with `peer_client_auth`.
    identity_pem: Option<Vec<u8>>,
    pub peer_client_auth: bool,
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeTls")
            .field("peer_client_auth", &self.peer_client_auth)
            .finish_non_exhaustive()
    }
}

fn read(what: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("[tls] {what} {}: {e}", path.display()))
}

fn certificates(what: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(what, path)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("[tls] {what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "[tls] {what} {}: no PEM certificate in it",
            path.display()
        ));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read("key", path)?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| format!("[tls] key {}: {e}", path.display()))?
        .ok_or_else(|| format!("[tls] key {}: no PEM private key in it", path.display()))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl NodeTls {
    /// Loads `settings`; `None` when TLS is off (no `cert`). Every problem is a clear
    /// message naming the field and the file.
    pub fn load(settings: &TlsSettings) -> Result<Option<NodeTls>, String> {
        let (cert, key, ca) = match (&settings.cert, &settings.key, &settings.ca) {
            (None, None, None) if !settings.peer_client_auth => return Ok(None),
            (Some(cert), Some(key), Some(ca)) => (cert, key, ca),
            _ => {
                return Err("[tls] needs cert, key and ca together (ca: what this node \
                     trusts when it dials another node)"
                    .into())
            }
        };
        let chain = certificates("cert", cert)?;
        let roots_pem = read("ca", ca)?;
        let mut roots = rustls::RootCertStore::empty();
        for root in certificates("ca", ca)? {
            roots
                .add(root)
                .map_err(|e| format!("[tls] ca {}: {e}", ca.display()))?;
        }
        let server = |client_roots: Option<rustls::RootCertStore>| {
            let builder = rustls::ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("[tls]: {e}"))?;
            let builder = match client_roots {
                Some(roots) => {
                    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                        Arc::new(roots),
                        provider(),
                    )
                    .build()
                    .map_err(|e| format!("[tls] ca {}: {e}", ca.display()))?;
                    builder.with_client_cert_verifier(verifier)
                }
                None => builder.with_no_client_auth(),
            };
            let mut config = builder
                .with_single_cert(chain.clone(), private_key(key)?)
                .map_err(|e| format!("[tls] cert {} and key: {e}", cert.display()))?;
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok::<_, String>(Arc::new(config))
        };
        let identity_pem = if settings.peer_client_auth {
            let mut pem = read("cert", cert)?;
            pem.push(b'\n');
            pem.extend(read("key", key)?);
            Some(pem)
        } else {
            None
        };
        Ok(Some(NodeTls {
            client_listener: server(None)?,
            peer_listener: server(settings.peer_client_auth.then_some(roots))?,
            ca_pem: roots_pem,
            identity_pem,
            peer_client_auth: settings.peer_client_auth,
        }))
    }

    /// Makes `builder` (the client this node dials peers and the leader with) trust
    /// only `ca` and, with `peer_client_auth`, present this node's certificate.
    pub fn client(
        &self,
        builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::ClientBuilder, reqwest::Error> {
        let mut builder = builder.use_rustls_tls().tls_built_in_root_certs(false);
        for root in reqwest::Certificate::from_pem_bundle(&self.ca_pem)? {
            builder = builder.add_root_certificate(root);
        }
        if let Some(pem) = &self.identity_pem {
            builder = builder.identity(reqwest::Identity::from_pem(pem)?);
        }
        Ok(builder)
    }
}

/// The URL scheme of a node's listeners.
pub fn scheme(tls: Option<&NodeTls>) -> &'static str {
    if tls.is_some() {
        "https"
    } else {
        "http"
    }
}
