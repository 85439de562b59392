//! TLS for the SQL Server simulator: the server certificate (a test CA and a certificate for
//! the simulator's names generated with rcgen at start, or a PEM chain and key given to it), and
//! the TDS 7.x handshake, which travels inside PRELOGIN (0x12) packets; once it is done, TLS
//! records flow directly on the TCP stream. TLS 1.2 only, as SQL Server offers it before TDS 8.0.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use anyhow::Context as _;
use secrecy::{ExposeSecret, SecretString};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{ServerConfig, crypto::aws_lc_rs, version::TLS12};

use super::wire::PRELOGIN;

/// Size of the PRELOGIN packets carrying the server's handshake messages.
const PACKET_SIZE: usize = 4096;

/// A server certificate and key in PEM, for `MssqlSimOptions::certificate`.
#[derive(Clone)]
pub struct MssqlSimCertificate {
    /// The server certificate first, then any intermediates.
    pub chain_pem: String,
    /// The certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_pem: SecretString,
}

impl std::fmt::Debug for MssqlSimCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MssqlSimCertificate")
            .field("chain_pem", &self.chain_pem.len())
            .field("key_pem", &"[redacted]")
            .finish()
    }
}

/// The simulator's TLS side: the acceptor and, for a generated certificate, its CA.
pub struct ServerTls {
    acceptor: TlsAcceptor,
    ca_pem: Option<String>,
    /// `ca.pem` in a directory that lives as long as the simulator.
    ca_file: Option<(tempfile::TempDir, PathBuf)>,
}

impl ServerTls {
    /// A new test CA and a server certificate it signs for `names` (DNS names or IP addresses).
    pub fn generate(names: &[String]) -> anyhow::Result<Self> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let ca_key = KeyPair::generate().context("cannot generate the test CA key")?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // A name of its own: another simulator's CA is then an unknown issuer, not a bad signature.
        ca.distinguished_name.push(
            DnType::CommonName,
            format!(
                "hubsync SQL Server simulator test CA {:016x}",
                rand::random::<u64>()
            ),
        );
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).context("cannot sign the test CA")?;
        let issuer = Issuer::new(ca, ca_key);

        let key = KeyPair::generate().context("cannot generate the server key")?;
        let mut server = CertificateParams::new(names.to_vec())
            .context("invalid name for the simulator's certificate")?;
        server.distinguished_name.push(
            DnType::CommonName,
            names.first().map_or("localhost", String::as_str),
        );
        server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server
            .signed_by(&key, &issuer)
            .context("cannot sign the server certificate")?;

        let chain = vec![server_cert.der().clone(), ca_cert.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let ca_pem = ca_cert.pem();
        let dir = tempfile::Builder::new()
            .prefix("hubsync-mssql-sim-ca")
            .tempdir()
            .context("cannot create a directory for the test CA")?;
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, &ca_pem)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Self {
            acceptor: acceptor(chain, key)?,
            ca_pem: Some(ca_pem),
            ca_file: Some((dir, path)),
        })
    }

    /// The given certificate chain and key (no CA is known to the simulator).
    pub fn from_pem(certificate: &MssqlSimCertificate) -> anyhow::Result<Self> {
        let chain = CertificateDer::pem_slice_iter(certificate.chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .context("the server certificate is not valid PEM")?;
        anyhow::ensure!(
            !chain.is_empty(),
            "the server certificate file holds no certificate"
        );
        let key = PrivateKeyDer::from_pem_slice(certificate.key_pem.expose_secret().as_bytes())
            .map_err(|_| anyhow::anyhow!("the server key is not a PEM private key"))?;
        Ok(Self {
            acceptor: acceptor(chain, key)?,
            ca_pem: None,
            ca_file: None,
        })
    }

    /// The generated CA's certificate, PEM.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// A file holding [`Self::ca_pem`].
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_ref().map(|(_, path)| path.as_path())
    }

    /// Runs the TLS handshake inside PRELOGIN packets; the returned stream carries TLS records
    /// directly on TCP.
    pub async fn accept(&self, tcp: TcpStream) -> io::Result<TlsSession> {
        let mut stream = self.acceptor.accept(PreloginFraming::new(tcp)).await?;
        stream.get_mut().0.handshake_done();
        Ok(stream)
    }
}

/// A TLS session of the simulator.
pub type TlsSession = tokio_rustls::server::TlsStream<PreloginFraming<TcpStream>>;

/// Ends TLS without a close_notify (as SQL Server does after a login-only encryption): the TCP
/// stream continues in plaintext.
pub fn into_plaintext(session: TlsSession) -> TcpStream {
    session.into_inner().0.into_inner()
}

fn acceptor(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> anyhow::Result<TlsAcceptor> {
    let config = ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_protocol_versions(&[&TLS12])
        .context("TLS 1.2 is not available")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the server certificate and key do not fit together")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// During the handshake, strips the PRELOGIN packet headers from what the client sends and
/// wraps what the server sends into PRELOGIN packets; afterwards, passes bytes through.
pub struct PreloginFraming<S> {
    inner: S,
    handshaking: bool,
    header: [u8; 8],
    header_read: usize,
    /// Payload bytes left in the packet being read.
    remaining: usize,
    /// Handshake bytes written since the last flush.
    pending: Vec<u8>,
    /// Framed packets not yet written.
    out: Vec<u8>,
    packet_id: u8,
}

impl<S> PreloginFraming<S> {
    fn new(inner: S) -> Self {
        Self {
            inner,
            handshaking: true,
            header: [0; 8],
            header_read: 0,
            remaining: 0,
            pending: Vec::new(),
            out: Vec::new(),
            packet_id: 1,
        }
    }

    fn handshake_done(&mut self) {
        self.handshaking = false;
    }

    fn into_inner(self) -> S {
        self.inner
    }

    /// Moves the pending handshake bytes into PRELOGIN packets.
    fn frame_pending(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        let chunks: Vec<&[u8]> = pending.chunks(PACKET_SIZE - 8).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let last = i + 1 == chunks.len();
            self.out.push(PRELOGIN);
            self.out.push(u8::from(last));
            self.out
                .extend_from_slice(&((chunk.len() + 8) as u16).to_be_bytes());
            self.out.extend_from_slice(&[0, 0, self.packet_id, 0]);
            self.packet_id = self.packet_id.wrapping_add(1);
            self.out.extend_from_slice(chunk);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for PreloginFraming<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.handshaking {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        while this.remaining == 0 {
            while this.header_read < this.header.len() {
                let mut rb = ReadBuf::new(&mut this.header[this.header_read..]);
                ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
                let n = rb.filled().len();
                if n == 0 {
                    return if this.header_read == 0 {
                        Poll::Ready(Ok(()))
                    } else {
                        Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()))
                    };
                }
                this.header_read += n;
            }
            this.header_read = 0;
            if this.header[0] != PRELOGIN {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "expected a PRELOGIN packet carrying the TLS handshake, got packet type {:#x}",
                        this.header[0]
                    ),
                )));
            }
            let length = usize::from(u16::from_be_bytes([this.header[2], this.header[3]]));
            this.remaining = length.checked_sub(8).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "TDS packet shorter than its header",
                )
            })?;
        }
        let want = this.remaining.min(buf.remaining());
        let mut rb = ReadBuf::new(buf.initialize_unfilled_to(want));
        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
        let n = rb.filled().len();
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
        }
        buf.advance(n);
        this.remaining -= n;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> PreloginFraming<S> {
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PreloginFraming<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.handshaking {
            this.pending.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.pending.is_empty() {
            this.frame_pending();
        }
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn handshake_bytes_travel_in_prelogin_packets_then_pass_through() {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let mut framing = PreloginFraming::new(server);
        let mut client = client;
        // Two client packets, the second split across reads.
        let mut packets = vec![PRELOGIN, 1, 0, 11, 0, 0, 1, 0, b'a', b'b', b'c'];
        packets.extend_from_slice(&[PRELOGIN, 1, 0, 10, 0, 0, 2, 0, b'd', b'e']);
        client.write_all(&packets).await.unwrap();
        let mut got = [0u8; 5];
        framing.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"abcde");

        let big = vec![7u8; 5000];
        framing.write_all(&big).await.unwrap();
        framing.flush().await.unwrap();
        let mut header = [0u8; 8];
        client.read_exact(&mut header).await.unwrap();
        assert_eq!((header[0], header[1]), (PRELOGIN, 0));
        assert_eq!(
            usize::from(u16::from_be_bytes([header[2], header[3]])),
            4096
        );
        let mut body = vec![0u8; 4088];
        client.read_exact(&mut body).await.unwrap();
        client.read_exact(&mut header).await.unwrap();
        assert_eq!((header[0], header[1]), (PRELOGIN, 1));
        assert_eq!(
            usize::from(u16::from_be_bytes([header[2], header[3]])),
            5000 - 4088 + 8
        );
        let mut rest = vec![0u8; 5000 - 4088];
        client.read_exact(&mut rest).await.unwrap();

        framing.handshake_done();
        framing.write_all(b"raw").await.unwrap();
        framing.flush().await.unwrap();
        let mut raw = [0u8; 3];
        client.read_exact(&mut raw).await.unwrap();
        assert_eq!(&raw, b"raw");
    }

    #[tokio::test]
    async fn a_login_packet_during_the_handshake_is_refused() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut framing = PreloginFraming::new(server);
        client
            .write_all(&[0x10, 1, 0, 9, 0, 0, 1, 0, 0])
            .await
            .unwrap();
        let mut buf = [0u8; 4];
        let err = framing.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn generated_certificates_load() {
        let tls = ServerTls::generate(&["localhost".into(), "127.0.0.1".into()]).unwrap();
        let pem = tls.ca_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(
            std::fs::read_to_string(tls.ca_file().unwrap()).unwrap(),
            pem
        );
    }
}
