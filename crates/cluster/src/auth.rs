//! Authenticated gossip: a chitchat [`Transport`] whose UDP datagrams carry an
//! HMAC-SHA256 tag keyed by the cluster secret. Datagrams without a valid tag are
//! dropped and counted, so an agent without the secret can neither join nor
//! inject state.
//!
//! chitchat keeps its wire (de)serialisation private, so the wrapper lets chitchat's
//! own [`UdpSocket`]s encode and decode over loopback: an envelope is sent by an
//! inner socket to a local codec socket (bytes out), and verified bytes are sent
//! by a codec socket to an inner socket (envelope in). Only the public socket
//! faces the network. Replay of a captured datagram within a cluster is not
//! prevented (chitchat's versioned state makes replays harmless but not invisible).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport, UdpSocket};
use chitchat::ChitchatEnvelope;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::mpsc;
use tracing::{debug, warn};

type HmacSha256 = Hmac<Sha256>;

/// Bytes of the tag appended to every datagram.
pub const TAG_LEN: usize = 32;
/// Largest UDP payload.
const MAX_DATAGRAM: usize = 65_507;
/// How long a loopback codec hop may take before the datagram is given up.
const CODEC_TIMEOUT: Duration = Duration::from_secs(2);

/// A shared secret and the counter of rejected datagrams.
#[derive(Clone)]
pub struct GossipAuth {
    key: Arc<Vec<u8>>,
    rejected: Arc<AtomicU64>,
    on_reject: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for GossipAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GossipAuth(<secret>)")
    }
}

impl GossipAuth {
    /// Authentication keyed by `secret` (any non-empty string).
    pub fn new(secret: &str) -> Self {
        Self {
            key: Arc::new(derive(secret.as_bytes(), b"distributed-llm gossip v1")),
            rejected: Arc::new(AtomicU64::new(0)),
            on_reject: None,
        }
    }

    /// Also call `f` on every rejected datagram (e.g. to bump a metric).
    pub fn on_reject(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_reject = Some(Arc::new(f));
        self
    }

    /// Datagrams dropped so far because their tag was missing or wrong.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// `payload || tag`.
    pub fn seal(&self, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(payload.len() + TAG_LEN);
        out.extend_from_slice(payload);
        out.extend_from_slice(&self.tag(payload));
        out
    }

    /// The payload of a sealed datagram, or `None` (and counted) when the tag fails.
    pub fn open<'a>(&self, datagram: &'a [u8]) -> Option<&'a [u8]> {
        let ok = datagram.len() >= TAG_LEN && {
            let (payload, tag) = datagram.split_at(datagram.len() - TAG_LEN);
            let mut mac = self.mac();
            mac.update(payload);
            mac.verify_slice(tag).is_ok()
        };
        if ok {
            Some(&datagram[..datagram.len() - TAG_LEN])
        } else {
            self.rejected.fetch_add(1, Ordering::Relaxed);
            if let Some(f) = &self.on_reject {
                f();
            }
            None
        }
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.key).expect("HMAC accepts any key length")
    }

    fn tag(&self, payload: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = self.mac();
        mac.update(payload);
        mac.finalize().into_bytes().into()
    }
}

/// HMAC-SHA256(secret, context): a key or token bound to one use of the secret.
pub fn derive(secret: &[u8], context: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(context);
    mac.finalize().into_bytes().to_vec()
}

/// A chitchat transport authenticating every datagram with [`GossipAuth`].
pub struct AuthUdpTransport {
    pub auth: GossipAuth,
}

#[async_trait]
impl Transport for AuthUdpTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let public = Arc::new(
            tokio::net::UdpSocket::bind(listen_addr)
                .await
                .with_context(|| format!("failed to bind to {listen_addr}/UDP for gossip"))?,
        );
        let local_addr = public.local_addr()?;
        let lo: SocketAddr = (Ipv4Addr::LOCALHOST, 0).into();
        let encoder = UdpSocket::open(lo).await?;
        let encoder_addr = encoder.local_addr()?;
        let encoded = tokio::net::UdpSocket::bind(lo).await?;
        let (tx, rx) = mpsc::channel(64);
        let pump = tokio::spawn(recv_pump(public.clone(), self.auth.clone(), tx));
        Ok(Box::new(AuthSocket {
            auth: self.auth.clone(),
            public,
            local_addr,
            encoder: Box::new(encoder),
            encoder_addr,
            encoded,
            buf: vec![0; MAX_DATAGRAM + TAG_LEN],
            rx,
            pump,
        }))
    }
}

struct AuthSocket {
    auth: GossipAuth,
    public: Arc<tokio::net::UdpSocket>,
    local_addr: SocketAddr,
    encoder: Box<dyn Socket>,
    encoder_addr: SocketAddr,
    encoded: tokio::net::UdpSocket,
    buf: Vec<u8>,
    rx: mpsc::Receiver<RecvOutcome>,
    pump: tokio::task::JoinHandle<()>,
}

impl Drop for AuthSocket {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

#[async_trait]
impl Socket for AuthSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.local_addr)
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        let codec_addr = self.encoded.local_addr()?;
        let sent = self.encoder.send(codec_addr, envelope).await?;
        // Read our own bytes back; skip anything stale (another length or sender).
        let payload = loop {
            let got = tokio::time::timeout(CODEC_TIMEOUT, self.encoded.recv_from(&mut self.buf))
                .await
                .context("gossip encoder timed out")??;
            if got.1 == self.encoder_addr && got.0 == sent.num_bytes_sent {
                break &self.buf[..got.0];
            }
        };
        let datagram = self.auth.seal(payload);
        if datagram.len() > MAX_DATAGRAM {
            warn!(
                len = datagram.len(),
                "gossip datagram too large once signed; dropped"
            );
            return Ok(sent);
        }
        if let Err(e) = self.public.send_to(&datagram, to).await {
            // A send failure to one peer is not a broken transport.
            debug!(to = %to, error = %e, "gossip send failed");
        }
        Ok(SendOutcome {
            num_bytes_sent: datagram.len(),
        })
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        self.rx.recv().await.context("gossip receive task ended")
    }
}

/// Receives datagrams on the public socket, verifies them, and decodes the valid
/// ones through a loopback chitchat socket, one at a time.
async fn recv_pump(
    public: Arc<tokio::net::UdpSocket>,
    auth: GossipAuth,
    tx: mpsc::Sender<RecvOutcome>,
) {
    let lo: SocketAddr = (Ipv4Addr::LOCALHOST, 0).into();
    let (mut decoder, feeder) = match (
        UdpSocket::open(lo).await,
        tokio::net::UdpSocket::bind(lo).await,
    ) {
        (Ok(d), Ok(f)) => (d, f),
        (Err(e), _) => return warn!("gossip decoder: {e:#}"),
        (_, Err(e)) => return warn!("gossip decoder: {e}"),
    };
    let Ok(decoder_addr) = decoder.local_addr() else {
        return;
    };
    let mut buf = vec![0u8; MAX_DATAGRAM + TAG_LEN + 1];
    loop {
        let (n, from) = match public.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                debug!(error = %e, "gossip recv error");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Some(payload) = auth.open(&buf[..n]) else {
            debug!(from = %from, len = n, "gossip datagram failed authentication; dropped");
            continue;
        };
        let len = payload.len();
        if len == 0 {
            continue; // authentic but empty: nothing for chitchat
        }
        if feeder.send_to(payload, decoder_addr).await.is_err() {
            continue;
        }
        // chitchat drops undecodable payloads silently: wait for ours (same
        // length) or give up after the timeout.
        let deadline = tokio::time::Instant::now() + CODEC_TIMEOUT;
        while let Ok(Ok(out)) = tokio::time::timeout_at(deadline, decoder.recv()).await {
            if out.num_bytes_received == len {
                let out = RecvOutcome {
                    from_addr: from,
                    envelope: out.envelope,
                    num_bytes_received: n,
                };
                if tx.send(out).await.is_err() {
                    return;
                }
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_then_open_round_trips() {
        let a = GossipAuth::new("s3cret");
        let d = a.seal(b"hello");
        assert_eq!(a.open(&d), Some(&b"hello"[..]));
        assert_eq!(a.rejected(), 0);
    }

    #[test]
    fn wrong_secret_tampering_and_short_datagrams_are_rejected() {
        let a = GossipAuth::new("s3cret");
        let b = GossipAuth::new("other");
        let d = a.seal(b"hello");
        assert!(b.open(&d).is_none());
        let mut t = d.clone();
        t[0] ^= 1;
        assert!(a.open(&t).is_none());
        assert!(a.open(b"short").is_none());
        assert!(a.open(&[]).is_none());
        assert_eq!(a.rejected(), 3);
        assert_eq!(b.rejected(), 1);
        let seen = Arc::new(AtomicU64::new(0));
        let s2 = seen.clone();
        let c = GossipAuth::new("x").on_reject(move || {
            s2.fetch_add(1, Ordering::Relaxed);
        });
        assert!(c.open(b"garbage-garbage-garbage-garbage-garbage").is_none());
        assert_eq!(seen.load(Ordering::Relaxed), 1);
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_datagrams_never_panic_and_are_rejected(d in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let a = GossipAuth::new("k");
            prop_assert!(a.open(&d).is_none());
            prop_assert_eq!(a.rejected(), 1);
        }

        #[test]
        fn sealed_payloads_round_trip_and_any_bit_flip_fails(
            p in proptest::collection::vec(any::<u8>(), 0..1024),
            flip in any::<usize>(),
        ) {
            let a = GossipAuth::new("k");
            let d = a.seal(&p);
            prop_assert_eq!(a.open(&d), Some(&p[..]));
            let mut t = d.clone();
            let i = flip % t.len();
            t[i] ^= 1 << (flip % 8);
            prop_assert!(a.open(&t).is_none());
        }
    }
}
