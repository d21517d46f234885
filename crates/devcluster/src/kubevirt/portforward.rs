//! `virtualmachineinstances/{name}/portforward/{port}`: a WebSocket (subprotocol
//! `plain.kubevirt.io`, binary frames) carrying one TCP stream to the VMI's IP and port, as
//! virt-api serves it. The WebSocket framing (RFC 6455) is small enough to do here.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use base64::Engine;
use http::{StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::Shared;
use crate::error::{ApiError, ApiResult};

/// The subprotocol virt-api speaks on portforward sockets.
pub const SUBPROTOCOL: &str = "plain.kubevirt.io";
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{key}{WS_GUID}").as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

pub(crate) async fn serve(
    shared: &Arc<Shared>,
    mut req: Request,
    ns: &str,
    name: &str,
    port: u16,
) -> ApiResult<Response> {
    let ip = {
        let st = shared.lock();
        let rt = st
            .registry
            .get("kubevirt.io", "v1", "virtualmachineinstances")
            .ok_or_else(|| ApiError::path_not_found("virtualmachineinstances"))?;
        let vmi = st.get(&rt, Some(ns), name)?;
        if vmi["status"]["phase"] != "Running" {
            return Err(ApiError::bad_request(format!(
                "Unable to connect to VM because phase is {} instead of Running",
                vmi["status"]["phase"].as_str().unwrap_or("Pending")
            )));
        }
        vmi["status"]["interfaces"][0]["ipAddress"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| {
                ApiError::bad_request(format!("VirtualMachineInstance {name:?} has no IP address"))
            })?
    };
    let header_str = |h: &str| {
        req.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let key = header_str("sec-websocket-key");
    let protocols = header_str("sec-websocket-protocol");
    if key.is_empty() || !header_str("upgrade").eq_ignore_ascii_case("websocket") {
        return Err(ApiError::bad_request("portforward needs a WebSocket upgrade"));
    }
    if !protocols.split(',').any(|p| p.trim() == SUBPROTOCOL) {
        return Err(ApiError::bad_request(format!(
            "the WebSocket subprotocol must be {SUBPROTOCOL}"
        )));
    }
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let ws = TokioIo::new(upgraded);
        // Like virt-api, dial after the upgrade; a refused connection closes the socket.
        match tokio::net::TcpStream::connect((ip.as_str(), port)).await {
            Ok(tcp) => {
                let _ = tcp.set_nodelay(true);
                pump(ws, tcp).await
            }
            Err(e) => tracing::debug!(%ip, port, error = %e, "portforward dial"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header("sec-websocket-accept", accept_key(&key))
        .header("sec-websocket-protocol", SUBPROTOCOL)
        .body(Body::empty())
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// One WebSocket frame read from a client: opcode and unmasked payload.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    r.read_exact(&mut head).await?;
    let opcode = head[0] & 0x0f;
    let masked = head[1] & 0x80 != 0;
    let len = match head[1] & 0x7f {
        126 => u64::from(r.read_u16().await?),
        127 => r.read_u64().await?,
        n => u64::from(n),
    };
    let mut mask = [0u8; 4];
    if masked {
        r.read_exact(&mut mask).await?;
    }
    let len = usize::try_from(len).map_err(|_| std::io::Error::other("frame too large"))?;
    if len > 16 << 20 {
        return Err(std::io::Error::other("frame too large"));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    Ok((opcode, payload))
}

/// Write one final frame; clients mask (`mask` set), servers do not.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    opcode: u8,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) -> std::io::Result<()> {
    let mut frame = vec![0x80 | opcode];
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => frame.push(m | u8::try_from(n).unwrap_or(0)),
        n if n <= usize::from(u16::MAX) => {
            frame.push(m | 126);
            frame.extend_from_slice(&u16::try_from(n).unwrap_or(u16::MAX).to_be_bytes());
        }
        n => {
            frame.push(m | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => frame.extend_from_slice(payload),
    }
    w.write_all(&frame).await?;
    w.flush().await
}

/// Copy bytes between the WebSocket (binary frames) and the TCP stream until either side ends.
async fn pump<S: AsyncRead + AsyncWrite + Unpin>(ws: S, tcp: tokio::net::TcpStream) {
    let (mut ws_r, ws_w) = tokio::io::split(ws);
    let (mut tcp_r, mut tcp_w) = tcp.into_split();
    let ws_w = Arc::new(tokio::sync::Mutex::new(ws_w));
    let to_vm = {
        let ws_w = ws_w.clone();
        async move {
            while let Ok((opcode, payload)) = read_frame(&mut ws_r).await {
                match opcode {
                    0x0..=0x2 if tcp_w.write_all(&payload).await.is_err() => return,
                    0x0..=0x2 => {}
                    0x8 => {
                        let _ = write_frame(&mut *ws_w.lock().await, 0x8, &payload, None).await;
                        return;
                    }
                    0x9 => {
                        let _ = write_frame(&mut *ws_w.lock().await, 0xA, &payload, None).await;
                    }
                    _ => {}
                }
            }
        }
    };
    let from_vm = async move {
        let mut buf = vec![0u8; 32 * 1024];
        while let Ok(n @ 1..) = tcp_r.read(&mut buf).await {
            if write_frame(&mut *ws_w.lock().await, 0x2, &buf[..n], None)
                .await
                .is_err()
            {
                return;
            }
        }
        let _ = write_frame(&mut *ws_w.lock().await, 0x8, &1000u16.to_be_bytes(), None).await;
    };
    tokio::select! {
        () = to_vm => {}
        () = from_vm => {}
    }
}
