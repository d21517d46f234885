//! The SSH [`Transport`] through the KubeVirt `portforward` subresource of a VMI: a WebSocket
//! over the host cluster's API server (subprotocol `plain.kubevirt.io`) whose binary frames
//! carry the raw bytes of one TCP connection to the VMI's port, as `virtctl port-forward` and
//! `virtctl ssh` use it. The operator then needs no route to the VMs' network, only RBAC `get`
//! on `virtualmachineinstances/portforward` in `subresources.kubevirt.io`.
//!
//! kube-rs's own WebSocket support (`Client::connect`) only offers the `channel.k8s.io`
//! subprotocols of pod exec and attach, so the upgrade is requested here through
//! [`kube::Client::send`] (same authentication and TLS) and the RFC 6455 client framing done by
//! [`WsStream`], which is small: binary data frames, ping, pong and close.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use base64::Engine as _;
use bytes::{Buf, BytesMut};
use futures::future::BoxFuture;
use http::{HeaderValue, Request, StatusCode, header};
use hyper_util::client::legacy::Client as LegacyClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use ring::rand::{SecureRandom, SystemRandom};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::client::{Endpoint, SshStream, Transport};

/// The WebSocket subprotocol of KubeVirt's console, VNC and port-forward streams.
pub const SUBPROTOCOL: &str = "plain.kubevirt.io";

/// Magic value of the `Sec-WebSocket-Accept` digest (RFC 6455, section 1.3).
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// Close code of a normal closure.
const CLOSE_NORMAL: u16 = 1000;
/// Most payload bytes put in one outgoing frame; an SSH packet (at most 35 000 bytes) fits.
const MAX_FRAME_PAYLOAD: usize = 64 * 1024;
/// Bytes asked of the underlying connection per read.
const READ_CHUNK: usize = 32 * 1024;

/// SSH to VMs through the KubeVirt `portforward` subresource of their VMIs, over the host
/// cluster's API server.
#[derive(Clone)]
pub struct PortForward {
    client: kube::Client,
    namespace: String,
}

impl fmt::Debug for PortForward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PortForward")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl PortForward {
    /// Tunnels to the VMIs of `namespace` on the cluster `client` talks to (the host cluster
    /// running KubeVirt, not the practice cluster).
    ///
    /// kube-rs clients leave Nagle's algorithm on, which costs SSH about one delayed ACK
    /// (40 ms) per command: prefer [`PortForward::from_config`].
    pub fn new(client: kube::Client, namespace: impl Into<String>) -> Self {
        Self {
            client,
            namespace: namespace.into(),
        }
    }

    /// Like [`PortForward::new`], on a client of its own built from `config` whose connections
    /// set `TCP_NODELAY`. SSH writes small packets back to back (an exec request, then EOF);
    /// with Nagle's algorithm the second waits for the server's delayed ACK, measured at 40 ms
    /// per command. The client honours the config's server URL, TLS settings, credentials and
    /// extra headers; with a proxy configured it falls back to kube-rs's own client.
    pub fn from_config(config: &kube::Config, namespace: impl Into<String>) -> Result<Self, kube::Error> {
        Ok(Self::new(nodelay_client(config)?, namespace))
    }

    /// The subresource path for TCP to `port` of VMI `vmi`.
    fn path(&self, vmi: &str, port: u16) -> String {
        format!(
            "/apis/subresources.kubevirt.io/v1/namespaces/{}/virtualmachineinstances/{vmi}/portforward/{port}/tcp",
            self.namespace
        )
    }

    /// Opens the tunnel to `endpoint.port` of the VMI named `endpoint.vm`.
    async fn open(&self, endpoint: &Endpoint) -> io::Result<WsStream<TokioIo<hyper::upgrade::Upgraded>>> {
        let what = format!(
            "KubeVirt port-forward to VirtualMachineInstance {}/{} port {}",
            self.namespace, endpoint.vm, endpoint.port
        );
        let fail = |kind: io::ErrorKind, cause: String| io::Error::new(kind, format!("{what}: {cause}"));
        for name in [&self.namespace, &endpoint.vm] {
            if !is_dns_name(name) {
                return Err(fail(
                    io::ErrorKind::InvalidInput,
                    format!("{name:?} is not a valid object name"),
                ));
            }
        }
        let rng = SystemRandom::new();
        let mut nonce = [0u8; 16];
        rng.fill(&mut nonce)
            .map_err(|_| fail(io::ErrorKind::Other, "no randomness for the WebSocket key".into()))?;
        let key = base64::engine::general_purpose::STANDARD.encode(nonce);
        let request = Request::get(self.path(&endpoint.vm, endpoint.port))
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_VERSION, "13")
            .header(header::SEC_WEBSOCKET_KEY, &key)
            .header(header::SEC_WEBSOCKET_PROTOCOL, SUBPROTOCOL)
            .body(kube::client::Body::empty())
            .map_err(|e| fail(io::ErrorKind::InvalidInput, e.to_string()))?;
        let response = self
            .client
            .send(request)
            .await
            .map_err(|e| fail(io::ErrorKind::ConnectionRefused, e.to_string()))?;
        let status = response.status();
        if status != StatusCode::SWITCHING_PROTOCOLS {
            let body = response.into_body().collect_bytes().await.unwrap_or_default();
            let (kind, cause) = refusal(status, &body);
            return Err(fail(kind, cause));
        }
        check_upgrade(response.headers(), &key).map_err(|cause| fail(io::ErrorKind::InvalidData, cause))?;
        let upgraded = hyper::upgrade::on(response)
            .await
            .map_err(|e| fail(io::ErrorKind::ConnectionAborted, e.to_string()))?;
        Ok(WsStream::new(TokioIo::new(upgraded), rng))
    }
}

impl Transport for PortForward {
    fn connect<'a>(&'a self, endpoint: &'a Endpoint) -> BoxFuture<'a, io::Result<Box<dyn SshStream>>> {
        Box::pin(async move {
            let stream = self.open(endpoint).await?;
            Ok(Box::new(stream) as Box<dyn SshStream>)
        })
    }
}

/// A client for `config` whose TCP connections set `TCP_NODELAY` (kube-rs offers no setting
/// for it), with kube-rs's base-URL, authentication and header layers.
fn nodelay_client(config: &kube::Config) -> Result<kube::Client, kube::Error> {
    use kube::client::ConfigExt;

    if config.proxy_url.is_some() {
        return kube::Client::try_from(config.clone());
    }
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(config.connect_timeout);
    let https = config.rustls_https_connector_with_connector(http)?;
    let client: LegacyClient<_, kube::client::Body> =
        LegacyClient::builder(TokioExecutor::new()).build(https);
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(tower::BoxError::from)
        .service(client);
    Ok(kube::Client::new(service, config.default_namespace.clone()))
}

/// Whether `name` can be put into a URL path as it is: names of namespaces and VMIs are
/// DNS-1123 subdomains.
fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// The error kind and cause of a refused upgrade, from the status and the API server's
/// `Status` body (its `message` names the object and the reason).
fn refusal(status: StatusCode, body: &[u8]) -> (io::ErrorKind, String) {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
    let kind = match status {
        StatusCode::NOT_FOUND => io::ErrorKind::NotFound,
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => io::ErrorKind::PermissionDenied,
        _ => io::ErrorKind::ConnectionRefused,
    };
    let hint = if status == StatusCode::FORBIDDEN {
        " (the caller needs `get` on virtualmachineinstances/portforward in subresources.kubevirt.io)"
    } else {
        ""
    };
    let cause = if message.is_empty() {
        format!("the API server answered {status}{hint}")
    } else {
        format!("the API server answered {status}: {message}{hint}")
    };
    (kind, cause)
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455, section 4.2.2).
fn accept_key(key: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{key}{ACCEPT_GUID}").as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// Checks a `101 Switching Protocols` answer: a WebSocket upgrade for our key, in the
/// subprotocol we asked for.
fn check_upgrade(headers: &http::HeaderMap, key: &str) -> Result<(), String> {
    let is = |name: header::HeaderName, want: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(want)))
    };
    if !is(header::UPGRADE, "websocket") || !is(header::CONNECTION, "upgrade") {
        return Err("the upgrade answer is not a WebSocket upgrade".into());
    }
    let accept = headers.get(header::SEC_WEBSOCKET_ACCEPT);
    if accept != HeaderValue::from_str(&accept_key(key)).ok().as_ref() {
        return Err("the upgrade answer has a wrong Sec-WebSocket-Accept".into());
    }
    match headers.get(header::SEC_WEBSOCKET_PROTOCOL) {
        Some(p) if p != SUBPROTOCOL => Err(format!(
            "the server chose WebSocket subprotocol {p:?} instead of {SUBPROTOCOL}"
        )),
        _ => Ok(()),
    }
}

/// A frame header as read from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FrameHeader {
    fin: bool,
    opcode: u8,
    payload_len: u64,
    /// Bytes of the header itself.
    len: usize,
}

fn protocol_error(what: impl Into<String>) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("port-forward WebSocket: {}", what.into()),
    )
}

/// Parses the header at the start of `buf`; `None` until all of it has arrived. Frames a
/// client must never receive (masked, with extension bits, unknown opcodes, oversized or
/// fragmented control frames) are errors.
fn parse_header(buf: &[u8]) -> io::Result<Option<FrameHeader>> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
    if b0 & 0x70 != 0 {
        return Err(protocol_error(
            "frame uses extension bits no extension was agreed for",
        ));
    }
    if b1 & 0x80 != 0 {
        return Err(protocol_error("the server sent a masked frame"));
    }
    if !matches!(
        opcode,
        OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
    ) {
        return Err(protocol_error(format!("unknown opcode {opcode:#x}")));
    }
    let (payload_len, len) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut n = [0u8; 8];
                n.copy_from_slice(b);
                let n = u64::from_be_bytes(n);
                if n >> 63 != 0 {
                    return Err(protocol_error("frame length out of range"));
                }
                (n, 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if opcode >= OP_CLOSE && (payload_len > 125 || !fin) {
        return Err(protocol_error("oversized or fragmented control frame"));
    }
    Ok(Some(FrameHeader {
        fin,
        opcode,
        payload_len,
        len,
    }))
}

/// What the read side expects next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadState {
    /// A frame header.
    Header,
    /// This many more payload bytes of a data frame.
    Data(u64),
    /// The server closed the WebSocket (normally): end of stream.
    Closed,
}

/// A WebSocket client connection carrying a byte stream in binary frames, as `AsyncRead` and
/// `AsyncWrite`. Reads end (EOF) when the server sends a normal close or the connection ends
/// between frames; an abnormal close, a connection cut mid-frame and protocol violations are
/// errors. Writes are sent as one masked binary frame each; shutdown sends a close frame.
pub struct WsStream<S> {
    io: S,
    rng: SystemRandom,
    /// Bytes read from `io` and not yet consumed.
    rbuf: BytesMut,
    read: ReadState,
    /// Framed bytes not yet written to `io`.
    wbuf: BytesMut,
    /// A close frame is queued or sent; nothing more may be written.
    close_sent: bool,
}

impl<S> fmt::Debug for WsStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsStream")
            .field("read", &self.read)
            .field("buffered_in", &self.rbuf.len())
            .field("buffered_out", &self.wbuf.len())
            .field("close_sent", &self.close_sent)
            .finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsStream<S> {
    /// Wraps an upgraded connection (the handshake is done); `rng` makes the frame masks.
    pub fn new(io: S, rng: SystemRandom) -> Self {
        Self {
            io,
            rng,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            read: ReadState::Header,
            wbuf: BytesMut::new(),
            close_sent: false,
        }
    }

    /// Appends one masked frame to the write buffer.
    fn queue_frame(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        let mut mask = [0u8; 4];
        self.rng
            .fill(&mut mask)
            .map_err(|_| io::Error::other("port-forward WebSocket: no randomness for a frame mask"))?;
        self.wbuf.reserve(payload.len() + 14);
        self.wbuf.extend_from_slice(&[0x80 | opcode]);
        match payload.len() {
            n @ 0..=125 => self.wbuf.extend_from_slice(&[0x80 | n as u8]),
            n @ 126..=0xffff => {
                self.wbuf.extend_from_slice(&[0x80 | 126]);
                self.wbuf.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                self.wbuf.extend_from_slice(&[0x80 | 127]);
                self.wbuf.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        self.wbuf.extend_from_slice(&mask);
        let start = self.wbuf.len();
        self.wbuf.extend_from_slice(payload);
        for (i, b) in self.wbuf[start..].iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
        Ok(())
    }

    /// Writes out the write buffer.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.wbuf.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.wbuf))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.wbuf.advance(n);
        }
        Poll::Ready(Ok(()))
    }

    /// Reads more bytes into the read buffer; `Ok(false)` when the connection has ended.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        let filled = self.rbuf.len();
        self.rbuf.resize(filled + READ_CHUNK, 0);
        let mut buf = ReadBuf::new(&mut self.rbuf[filled..]);
        let polled = Pin::new(&mut self.io).poll_read(cx, &mut buf);
        let n = buf.filled().len();
        self.rbuf.truncate(filled + n);
        ready!(polled)?;
        Poll::Ready(Ok(n > 0))
    }

    /// Handles a complete control frame. Returns whether it ended the stream.
    fn control(&mut self, opcode: u8, payload: &[u8]) -> io::Result<bool> {
        match opcode {
            // Answering only while little is queued keeps a ping flood from growing the buffer;
            // a pong may answer just the latest ping (RFC 6455, section 5.5.3).
            OP_PING if self.wbuf.len() < MAX_FRAME_PAYLOAD && !self.close_sent => {
                self.queue_frame(OP_PONG, payload)?;
                Ok(false)
            }
            OP_CLOSE => {
                self.read = ReadState::Closed;
                if !self.close_sent {
                    self.close_sent = true;
                    // Echo the status code, as endpoints acknowledging a close do.
                    self.queue_frame(OP_CLOSE, payload.get(..2).unwrap_or_default())?;
                }
                let code = payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
                match code {
                    None | Some(CLOSE_NORMAL) => Ok(true),
                    Some(code) => Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        format!(
                            "port-forward WebSocket closed by the server with code {code}: {}",
                            String::from_utf8_lossy(&payload[2..])
                        ),
                    )),
                }
            }
            _ => Ok(false),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Pongs and a close reply go out while reading; a write error shows on the next write.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            tracing::debug!(error = %e, "port-forward WebSocket: sending a control frame");
        }
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            match this.read {
                ReadState::Closed => return Poll::Ready(Ok(())),
                ReadState::Data(0) => {
                    this.read = ReadState::Header;
                    continue;
                }
                ReadState::Data(left) if !this.rbuf.is_empty() => {
                    let n = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(this.rbuf.len())
                        .min(buf.remaining());
                    buf.put_slice(&this.rbuf[..n]);
                    this.rbuf.advance(n);
                    this.read = ReadState::Data(left - n as u64);
                    return Poll::Ready(Ok(()));
                }
                ReadState::Data(_) => {}
                ReadState::Header => {
                    if let Some(h) = parse_header(&this.rbuf)? {
                        match h.opcode {
                            OP_TEXT => {
                                return Poll::Ready(Err(protocol_error("the server sent a text frame")));
                            }
                            OP_CONTINUATION | OP_BINARY => {
                                this.rbuf.advance(h.len);
                                this.read = ReadState::Data(h.payload_len);
                                continue;
                            }
                            _ => {
                                // Control payloads are at most 125 bytes: wait for all of it.
                                let end = h.len + h.payload_len as usize;
                                if this.rbuf.len() >= end {
                                    let frame = this.rbuf.split_to(end);
                                    let ended = this.control(h.opcode, &frame[h.len..]);
                                    if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
                                        tracing::debug!(error = %e, "port-forward WebSocket: sending a control frame");
                                    }
                                    if ended? {
                                        return Poll::Ready(Ok(()));
                                    }
                                    continue;
                                }
                            }
                        }
                    }
                }
            }
            if !ready!(this.poll_fill(cx))? {
                if this.read == ReadState::Header && this.rbuf.is_empty() {
                    // Ended between frames without a close frame (virt-api drops the socket
                    // when it cannot reach the VM): an end of stream all the same.
                    this.read = ReadState::Closed;
                    return Poll::Ready(Ok(()));
                }
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "port-forward WebSocket ended in the middle of a frame",
                )));
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.close_sent {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "port-forward WebSocket is closed",
            )));
        }
        // Earlier frames first: keeps the order and buffers at most one frame.
        ready!(this.poll_drain(cx))?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = buf.len().min(MAX_FRAME_PAYLOAD);
        this.queue_frame(OP_BINARY, &buf[..n])?;
        // Sent right away, since some writers (russh's version line) do not flush; what the
        // connection does not take now goes out with the next write or flush.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_sent {
            this.close_sent = true;
            this.queue_frame(OP_CLOSE, &CLOSE_NORMAL.to_be_bytes())?;
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;

    /// An unmasked frame, as a server sends it.
    fn server_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n @ 0..=125 => f.push(n as u8),
            n @ 126..=0xffff => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        f
    }

    /// Reads one client frame from the server's end: opcode and unmasked payload.
    async fn client_frame(server: &mut DuplexStream) -> (u8, Vec<u8>) {
        let mut head = [0u8; 2];
        server.read_exact(&mut head).await.unwrap();
        assert_eq!(head[0] & 0x80, 0x80, "client frames are final");
        assert_eq!(head[1] & 0x80, 0x80, "client frames are masked");
        let len = match head[1] & 0x7f {
            126 => u64::from(server.read_u16().await.unwrap()),
            127 => server.read_u64().await.unwrap(),
            n => u64::from(n),
        };
        let mut mask = [0u8; 4];
        server.read_exact(&mut mask).await.unwrap();
        let mut payload = vec![0u8; len as usize];
        server.read_exact(&mut payload).await.unwrap();
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
        (head[0] & 0x0f, payload)
    }

    fn pair() -> (WsStream<DuplexStream>, DuplexStream) {
        let (client, server) = tokio::io::duplex(256 * 1024);
        (WsStream::new(client, SystemRandom::new()), server)
    }

    #[test]
    fn the_accept_key_is_the_one_of_rfc_6455() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn upgrade_answers_are_checked() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let mut h = http::HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(
            header::SEC_WEBSOCKET_ACCEPT,
            HeaderValue::from_static("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        );
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(SUBPROTOCOL),
        );
        assert_eq!(check_upgrade(&h, key), Ok(()));
        assert!(check_upgrade(&h, "b3RoZXIga2V5IG9mIDE2IGI=").is_err());
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("v4.channel.k8s.io"),
        );
        assert!(check_upgrade(&h, key).unwrap_err().contains("v4.channel.k8s.io"));
    }

    #[test]
    fn refusals_name_the_reason_and_the_missing_permission() {
        let body = br#"{"kind":"Status","message":"virtualmachineinstances.kubevirt.io \"lab-cp\" not found","code":404}"#;
        let (kind, cause) = refusal(StatusCode::NOT_FOUND, body);
        assert_eq!(kind, io::ErrorKind::NotFound);
        assert_eq!(
            cause,
            r#"the API server answered 404 Not Found: virtualmachineinstances.kubevirt.io "lab-cp" not found"#
        );
        let (kind, cause) = refusal(StatusCode::FORBIDDEN, b"forbidden");
        assert_eq!(kind, io::ErrorKind::PermissionDenied);
        assert!(cause.contains("virtualmachineinstances/portforward"), "{cause}");
    }

    #[test]
    fn only_dns_names_go_into_the_path() {
        assert!(is_dns_name("lab-x7k2p-cp"));
        assert!(!is_dns_name("../secrets"));
        assert!(!is_dns_name("Lab"));
        assert!(!is_dns_name(""));
    }

    #[test]
    fn headers_of_every_length_form_parse_and_bad_frames_are_refused() {
        assert_eq!(parse_header(&[0x82]).unwrap(), None);
        let h = parse_header(&server_frame(true, OP_BINARY, &[7; 300]))
            .unwrap()
            .unwrap();
        assert_eq!((h.fin, h.opcode, h.payload_len, h.len), (true, OP_BINARY, 300, 4));
        let h = parse_header(&server_frame(false, OP_BINARY, &vec![0; 70_000]))
            .unwrap()
            .unwrap();
        assert_eq!((h.fin, h.payload_len, h.len), (false, 70_000, 10));
        assert_eq!(parse_header(&[0x82, 127, 0, 0]).unwrap(), None);
        for bad in [
            vec![0x82, 0x81, 0, 0, 0, 0, 0], // masked by the server
            vec![0xC2, 0x00],                // RSV1 without an extension
            vec![0x83, 0x00],                // reserved opcode
            vec![0x09, 0x00],                // fragmented ping
            vec![0x89, 126, 0, 200],         // oversized ping
        ] {
            let e = parse_header(&bad).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn fragmented_binary_frames_read_as_one_stream_and_pings_are_answered() {
        let (mut ws, mut server) = pair();
        let mut wire = server_frame(false, OP_BINARY, b"SSH-2.0-");
        wire.extend(server_frame(true, OP_PING, b"are you there"));
        wire.extend(server_frame(true, OP_CONTINUATION, b""));
        wire.extend(server_frame(true, OP_CONTINUATION, b"sim\r\n"));
        wire.extend(server_frame(true, OP_BINARY, &[b'x'; 100_000]));
        wire.extend(server_frame(true, OP_CLOSE, &CLOSE_NORMAL.to_be_bytes()));
        server.write_all(&wire).await.unwrap();
        let mut got = Vec::new();
        ws.read_to_end(&mut got).await.unwrap();
        assert_eq!(&got[..13], b"SSH-2.0-sim\r\n");
        assert_eq!(got.len(), 13 + 100_000);
        assert_eq!(
            client_frame(&mut server).await,
            (OP_PONG, b"are you there".to_vec())
        );
        assert_eq!(
            client_frame(&mut server).await,
            (OP_CLOSE, CLOSE_NORMAL.to_be_bytes().to_vec())
        );
        let e = ws.write_all(b"late").await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
    }

    #[tokio::test]
    async fn writes_become_masked_binary_frames_and_shutdown_closes() {
        let (mut ws, mut server) = pair();
        let big: Vec<u8> = (0..150_000u32).map(|i| (i % 251) as u8).collect();
        ws.write_all(b"hello").await.unwrap();
        ws.write_all(&big).await.unwrap();
        ws.shutdown().await.unwrap();
        assert_eq!(client_frame(&mut server).await, (OP_BINARY, b"hello".to_vec()));
        let mut echoed = Vec::new();
        while echoed.len() < big.len() {
            let (op, payload) = client_frame(&mut server).await;
            assert_eq!(op, OP_BINARY);
            assert!(payload.len() <= MAX_FRAME_PAYLOAD);
            echoed.extend(payload);
        }
        assert_eq!(echoed, big);
        assert_eq!(
            client_frame(&mut server).await,
            (OP_CLOSE, CLOSE_NORMAL.to_be_bytes().to_vec())
        );
    }

    #[tokio::test]
    async fn endings_map_to_eof_or_errors() {
        // Connection ends between frames: end of stream.
        let (mut ws, mut server) = pair();
        server
            .write_all(&server_frame(true, OP_BINARY, b"bye"))
            .await
            .unwrap();
        drop(server);
        let mut got = Vec::new();
        ws.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"bye");

        // Connection ends inside a frame.
        let (mut ws, mut server) = pair();
        server
            .write_all(&server_frame(true, OP_BINARY, b"truncated")[..6])
            .await
            .unwrap();
        drop(server);
        let e = ws.read_to_end(&mut Vec::new()).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);

        // An abnormal close carries its code and reason.
        let (mut ws, mut server) = pair();
        let mut payload = 1011u16.to_be_bytes().to_vec();
        payload.extend_from_slice(b"dial failed");
        server
            .write_all(&server_frame(true, OP_CLOSE, &payload))
            .await
            .unwrap();
        let e = ws.read_to_end(&mut Vec::new()).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted);
        assert!(e.to_string().contains("code 1011: dial failed"), "{e}");

        // Text frames have no place in a byte stream.
        let (mut ws, mut server) = pair();
        server
            .write_all(&server_frame(true, OP_TEXT, b"{}"))
            .await
            .unwrap();
        let e = ws.read_to_end(&mut Vec::new()).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }
}
