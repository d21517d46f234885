//! One terminal: the browser's WebSocket bridged to an SSH shell with a PTY.
//!
//! Output (VM → browser) and input (browser → VM) run side by side so neither direction can
//! stall the other, and each waits for its own peer: a VM printing faster than the browser
//! reads waits on the SSH window (russh's small per-channel buffer, then TCP), and a browser
//! pasting faster than the VM reads waits on the WebSocket. Besides the two directions the
//! terminal watches the session (closed when it ends), the idle timer and the gateway's
//! shutdown; whichever comes first ends it with a `closed` control message and close code.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use cks_api::practice_cluster::PracticeCluster;
use cks_kubevirt::naming::VmId;
use cks_ssh::HostKeyCheck;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use russh::ChannelMsg;
use russh::client::{Handle, Msg};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::Instrument;

use super::{Claims, CloseLabels, CloseReason, live_target, session_over};
use crate::routes::Shared;

/// Messages russh buffers per channel before it stops reading the connection: with 32 KiB
/// packets, at most 256 KiB of a flood waits in the gateway per terminal.
const SSH_BUFFERED_MESSAGES: usize = 8;
/// Largest WebSocket message accepted from the browser (a paste larger than this must be
/// sent in pieces).
pub const MAX_CLIENT_MESSAGE: usize = 256 * 1024;
/// Read and write buffer of each terminal's WebSocket (grows for a larger message when needed).
pub const SOCKET_BUFFER: usize = 4096;
/// WebSocket pings keep proxies from closing a quiet terminal.
const PING_EVERY: Duration = Duration::from_secs(30);
/// How long the closing message may take to reach a browser that does not read.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for the session's cluster to show in the cache when a terminal opens.
const OPEN_CACHE_WAIT: Duration = Duration::from_secs(5);
/// Longest time from the socket opening to a shell (Secrets, SSH handshake, channel, PTY).
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// PTY size until the browser sends its own.
const DEFAULT_SIZE: (u32, u32) = (80, 24);

type Sink = Arc<Mutex<SplitSink<WebSocket, Message>>>;

/// A control message from the browser.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Control {
    Resize { cols: u32, rows: u32 },
    Ping,
}

fn text(value: &serde_json::Value) -> Message {
    Message::Text(Utf8Bytes::from(value.to_string()))
}

/// Sends the `closed` control message and the close frame, without waiting long for a
/// browser that does not read.
async fn close(sink: &Sink, reason: CloseReason, message: &str) {
    let send = async {
        let mut sink = sink.lock().await;
        if reason != CloseReason::ClientClosed {
            let _ = sink
                .send(text(
                    &json!({"type": "closed", "reason": reason.as_str(), "message": message}),
                ))
                .await;
        }
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code: reason.code(),
                reason: Utf8Bytes::from(reason.as_str()),
            })))
            .await;
    };
    let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, send).await;
}

/// Ends an SSH connection when dropped, whichever way the terminal ended (dropping a russh
/// handle alone leaves the connection and the shell running).
struct Connected(Option<Handle<HostKeyCheck>>);

impl Drop for Connected {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move {
                let bye = handle.disconnect(russh::Disconnect::ByApplication, "terminal closed", "");
                let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, bye).await;
            });
        }
    }
}

/// Serves one terminal WebSocket whose URL carried `token`.
pub async fn serve(socket: WebSocket, state: Shared, token: String) {
    let (sink, stream) = socket.split();
    let sink: Sink = Arc::new(Mutex::new(sink));
    let (reason, message) = run(&sink, stream, &state, &token).await;
    state
        .terminals
        .closed
        .get_or_create(&CloseLabels {
            reason: reason.as_str(),
        })
        .inc();
    close(&sink, reason, &message).await;
}

async fn run(
    sink: &Sink,
    stream: SplitStream<WebSocket>,
    state: &Shared,
    token: &str,
) -> (CloseReason, String) {
    let now = jiff::Timestamp::now().as_second();
    let claims = match state.terminals.signer.verify(token, now) {
        Ok(c) => c,
        Err(e) => {
            return (
                CloseReason::Expired,
                format!("{e}; open the terminal again from the lab page."),
            );
        }
    };
    // Just after the claim the two caches may not agree yet: give them a moment.
    let found = state
        .caches
        .wait_for(OPEN_CACHE_WAIT, |caches| live_target(caches, &claims))
        .await;
    let Some((session, cluster)) = found else {
        return (
            CloseReason::SessionEnded,
            "The session has ended; its terminals are closed.".to_owned(),
        );
    };
    let uid = session.metadata.uid.clone().unwrap_or_default();
    let limit = state.settings.terminals_per_session;
    let Some(_slot) = state.terminals.acquire(&uid, limit) else {
        return (
            CloseReason::Limit,
            format!("This session already has {limit} terminals open; close one first."),
        );
    };
    let log = tracing::info_span!("terminal", session = %claims.session, target = %claims.target, id = %claims.terminal_id);
    serve_shell(sink, stream, state, &claims, &cluster)
        .instrument(log)
        .await
}

async fn serve_shell(
    sink: &Sink,
    stream: SplitStream<WebSocket>,
    state: &Shared,
    claims: &Claims,
    cluster: &PracticeCluster,
) -> (CloseReason, String) {
    let mut connected = Connected(None);
    let opening = open_shell(state, cluster, &claims.target, &mut connected);
    let opened = tokio::time::timeout(OPEN_TIMEOUT, opening)
        .await
        .unwrap_or_else(|_| Err(format!("no shell within {}s", OPEN_TIMEOUT.as_secs())));
    let channel = match opened {
        Ok(channel) => channel,
        Err(cause) => {
            tracing::warn!(%cause, "terminal could not reach its VM");
            return (
                CloseReason::Unreachable,
                format!(
                    "The terminal could not reach {}; try again in a moment.",
                    claims.target
                ),
            );
        }
    };
    tracing::info!("terminal opened");
    let ready = json!({"type": "ready", "target": claims.target, "terminalId": claims.terminal_id});
    if sink.lock().await.send(text(&ready)).await.is_err() {
        return (CloseReason::ClientClosed, String::new());
    }
    let reason = pump(sink, stream, channel, state, claims).await;
    drop(connected);
    tracing::info!(reason = reason.as_str(), "terminal closed");
    let message = match reason {
        CloseReason::SessionEnded => "The session has ended; its terminals are closed.".to_owned(),
        CloseReason::Idle => format!(
            "Closed after {} minutes without input; open it again to go on.",
            state.settings.terminal_idle.as_secs() / 60
        ),
        CloseReason::ShellExited => "The shell exited.".to_owned(),
        CloseReason::Shutdown => "The gateway is restarting; open the terminal again.".to_owned(),
        CloseReason::Unreachable => "The connection to the VM was lost.".to_owned(),
        _ => String::new(),
    };
    (reason, message)
}

/// An SSH session channel with a PTY and a login shell on `target` of `cluster`.
async fn open_shell(
    state: &Shared,
    cluster: &PracticeCluster,
    target: &str,
    connected: &mut Connected,
) -> Result<russh::Channel<Msg>, String> {
    let access = cks_ssh::access::load(&state.client, &state.terminals.ssh, cluster)
        .await
        .map_err(|e| e.to_string())?;
    let vm = VmId::from_target(target).ok_or_else(|| format!("unknown target {target:?}"))?;
    let endpoint = access
        .targets
        .get(vm)
        .ok_or_else(|| format!("{target} has no address yet"))?;
    let config = russh::client::Config {
        channel_buffer_size: SSH_BUFFERED_MESSAGES,
        keepalive_interval: Some(PING_EVERY),
        nodelay: true,
        ..Default::default()
    };
    let connection = cks_ssh::connect_with(&access.config, endpoint, config)
        .await
        .map_err(|e| e.to_string())?;
    let handle = connected.0.insert(connection.handle);
    let channel = handle.channel_open_session().await.map_err(|e| e.to_string())?;
    let (cols, rows) = DEFAULT_SIZE;
    channel
        .request_pty(false, "xterm-256color", cols, rows, 0, 0, &[])
        .await
        .map_err(|e| e.to_string())?;
    channel.request_shell(false).await.map_err(|e| e.to_string())?;
    Ok(channel)
}

/// Moves bytes both ways until one of the ends described in the module docs.
async fn pump(
    sink: &Sink,
    mut stream: SplitStream<WebSocket>,
    channel: russh::Channel<Msg>,
    state: &Shared,
    claims: &Claims,
) -> CloseReason {
    let (mut from_vm, to_vm) = channel.split();
    let started = Instant::now();
    // Milliseconds after `started` of the last keystroke or resize.
    let last_input = AtomicU64::new(0);

    let output = async {
        let mut exited = false;
        let mut ping = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
        loop {
            tokio::select! {
                msg = from_vm.wait() => match msg {
                    Some(ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. }) => {
                        let frame = Message::Binary(Bytes::copy_from_slice(&data));
                        if sink.lock().await.send(frame).await.is_err() {
                            return CloseReason::ClientClosed;
                        }
                    }
                    // The exit status may come before the last output: read on until EOF.
                    Some(ChannelMsg::ExitStatus { .. } | ChannelMsg::ExitSignal { .. }) => exited = true,
                    Some(ChannelMsg::Eof | ChannelMsg::Close) => return CloseReason::ShellExited,
                    // The connection went away without the shell ending.
                    None if !exited => return CloseReason::Unreachable,
                    None => return CloseReason::ShellExited,
                    Some(_) => {}
                },
                _ = ping.tick() => {
                    if sink.lock().await.send(Message::Ping(Bytes::new())).await.is_err() {
                        return CloseReason::ClientClosed;
                    }
                }
            }
        }
    };

    let input = async {
        while let Some(msg) = stream.next().await {
            let Ok(msg) = msg else { break };
            match msg {
                Message::Binary(data) => {
                    last_input.store(elapsed_ms(started), Ordering::Relaxed);
                    if to_vm.data_bytes(data).await.is_err() {
                        return CloseReason::Unreachable;
                    }
                }
                Message::Text(t) => match serde_json::from_str::<Control>(t.as_str()) {
                    Ok(Control::Resize { cols, rows }) => {
                        last_input.store(elapsed_ms(started), Ordering::Relaxed);
                        let (cols, rows) = (cols.clamp(1, 1000), rows.clamp(1, 500));
                        if to_vm.window_change(cols, rows, 0, 0).await.is_err() {
                            return CloseReason::Unreachable;
                        }
                    }
                    Ok(Control::Ping) => {
                        let pong = text(&json!({"type": "pong"}));
                        if sink.lock().await.send(pong).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "ignoring a control message that is not understood")
                    }
                },
                Message::Close(_) => break,
                Message::Ping(_) | Message::Pong(_) => {}
            }
        }
        CloseReason::ClientClosed
    };

    let session_ended = async {
        let mut changes = state.caches.subscribe();
        loop {
            changes.mark_unchanged();
            if session_over(&state.caches, claims) {
                return;
            }
            if changes.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };

    let idle = state.settings.terminal_idle;
    let idled_out = async {
        loop {
            let deadline = started + Duration::from_millis(last_input.load(Ordering::Relaxed)) + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    };

    let mut stopping = state.stopping.clone();
    let reason = tokio::select! {
        r = output => r,
        r = input => r,
        () = session_ended => CloseReason::SessionEnded,
        () = idled_out => CloseReason::Idle,
        _ = stopping.wait_for(|s| *s) => CloseReason::Shutdown,
    };
    // Closing the channel ends the shell (SIGHUP on the VM).
    let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, to_vm.close()).await;
    reason
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}
