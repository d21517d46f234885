//! HTTP layer: TLS accept loop, authentication, discovery, and the REST mapping of
//! `/api/v1/...` and `/apis/{group}/{version}/...` paths onto [`State`] operations, including
//! streaming watches.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State as AxState};
use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode, header};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinSet;

use crate::Shared;
use crate::error::{ApiError, ApiResult};
use crate::patch::PatchType;
use crate::registry::ResourceType;
use crate::selector::{FieldSelector, LabelSelector};
use crate::state::{Change, DeleteOpts, EventType, ListOpts, Propagation, WriteOpts, present};
use crate::table;

/// Accept TLS connections and serve them until shutdown; open connections are closed then.
pub async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, shared: Arc<Shared>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let app = Router::new().fallback(handle).with_state(shared.clone());
    let mut shutdown = shared.shutdown.clone();
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                // As Go servers do by default: small responses and watch events go out at
                // once instead of waiting on the client's delayed ACK.
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let app = app.clone();
                conns.spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else { return };
                    // rustls verified any certificate presented against the configured CA.
                    let client_cert = stream.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty());
                    let app = app.layer(axum::Extension(ClientCert(client_cert)));
                    let svc = TowerToHyperService::new(app);
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.abort_all();
    while conns.join_next().await.is_some() {}
}

/// Whether the connection presented a client certificate signed by the server's CA.
#[derive(Debug, Clone, Copy)]
struct ClientCert(bool);

fn json_response(code: StatusCode, v: &Value) -> Response {
    (code, [(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

async fn handle(AxState(shared): AxState<Arc<Shared>>, req: Request) -> Response {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let public = matches!(path.as_str(), "/healthz" | "/readyz" | "/livez" | "/version")
        || path.starts_with("/healthz/")
        || path.starts_with("/readyz/")
        || path.starts_with("/livez/");
    let mut audited = None;
    if !public {
        let Some(user) = caller(&shared, &req) else {
            return ApiError::unauthorized().into_response();
        };
        let enforce = shared.opts.enforce_rbac && user != crate::audit::ADMIN_USER;
        if shared.audit.is_some() || enforce {
            let decoded: Vec<String> = path
                .trim_start_matches('/')
                .split('/')
                .map(decode_segment)
                .collect();
            let segs: Vec<&str> = decoded.iter().map(String::as_str).collect();
            let attrs = crate::audit::attributes(user, req.method(), &segs, &query(&req));
            if enforce {
                let apply = req
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with("application/apply-patch"));
                let verdict = crate::rbac::authorize(&shared.lock(), &attrs, apply);
                if let Err(message) = verdict {
                    let response = ApiError::forbidden(message).into_response();
                    if let Some(audit) = &shared.audit {
                        audit.record(&attrs, response.status().as_u16());
                    }
                    return response;
                }
            }
            audited = Some(attrs);
        }
    }
    let method = req.method().clone();
    let result = route(&shared, req, &path).await;
    let response = match result {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    if let (Some(audit), Some(attrs)) = (&shared.audit, audited) {
        audit.record(&attrs, response.status().as_u16());
    }
    tracing::debug!(%method, %path, status = response.status().as_u16(), "request");
    response
}

/// The authenticated user: the server's token and client certificates are `admin`, the extra
/// tokens of `Options::identities` their own users; `None` when unauthenticated.
fn caller<'a>(shared: &'a Shared, req: &Request) -> Option<&'a str> {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match bearer {
        Some(t) if t == shared.token => Some(crate::audit::ADMIN_USER),
        Some(t) if shared.opts.identities.contains_key(t) => {
            shared.opts.identities.get(t).map(String::as_str)
        }
        _ if req.extensions().get::<ClientCert>().is_some_and(|c| c.0) => Some(crate::audit::ADMIN_USER),
        _ => None,
    }
}

fn query(req: &Request) -> HashMap<String, String> {
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(req.uri())
        .map(|q| q.0.into_iter().collect())
        .unwrap_or_default()
}

/// Percent-decode one path segment (clients may escape characters such as `:` in names).
fn decode_segment(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_string())
}

async fn route(shared: &Arc<Shared>, req: Request, path: &str) -> ApiResult<Response> {
    match path {
        "/healthz" | "/readyz" | "/livez" => {
            return Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], "ok").into_response());
        }
        "/version" => return Ok(json_response(StatusCode::OK, &version())),
        "/api" => {
            return Ok(json_response(
                StatusCode::OK,
                &json!({"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": req.uri().authority().map(|a| a.to_string()).unwrap_or_default()}]}),
            ));
        }
        "/apis" => {
            let st = shared.lock();
            let groups: Vec<Value> = st
                .registry
                .groups()
                .iter()
                .filter(|(g, _)| !g.is_empty())
                .map(|(g, vs)| group_json(g, vs))
                .collect();
            return Ok(json_response(
                StatusCode::OK,
                &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
            ));
        }
        _ => {}
    }
    if path.starts_with("/openapi/") {
        let st = shared.lock();
        return crate::openapi::serve(&st.registry, path, req.headers());
    }
    if path.starts_with("/healthz/") || path.starts_with("/readyz/") || path.starts_with("/livez/") {
        return Ok((StatusCode::OK, "ok").into_response());
    }
    let decoded: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(decode_segment)
        .collect();
    let segs: Vec<&str> = decoded.iter().map(String::as_str).collect();
    if shared.opts.kubevirt.is_some()
        && let ["apis", "subresources.kubevirt.io", rest @ ..] = segs.as_slice()
    {
        return crate::kubevirt::route(shared, req, rest).await;
    }
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g] => {
            let st = shared.lock();
            let vs = st
                .registry
                .groups()
                .get(*g)
                .cloned()
                .ok_or_else(|| ApiError::path_not_found(path))?;
            return Ok(json_response(StatusCode::OK, &group_json(g, &vs)));
        }
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(ApiError::path_not_found(path)),
    };
    if rest.is_empty() {
        let st = shared.lock();
        let resources = st.registry.resources(group, version);
        if resources.is_empty() {
            return Err(ApiError::path_not_found(path));
        }
        let list: Vec<Value> = resources.iter().flat_map(|rt| rt.discovery()).collect();
        let gv = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        return Ok(json_response(
            StatusCode::OK,
            &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list}),
        ));
    }
    let (legacy_watch, rest) = match rest {
        ["watch", r @ ..] => (true, r),
        r => (false, r),
    };
    // Namespaced paths start with namespaces/{ns}/{plural}; namespaces/{name}/status is the
    // Namespace's own subresource.
    let (ns, plural, name, sub) = match rest {
        ["namespaces", ns, plural, tail @ ..]
            if group.is_empty() && (*plural == "status" || *plural == "finalize") && tail.is_empty() =>
        {
            (None, "namespaces", Some(*ns), Some(*plural))
        }
        ["namespaces", ns, plural] => (Some(*ns), *plural, None, None),
        ["namespaces", ns, plural, name] => (Some(*ns), *plural, Some(*name), None),
        ["namespaces", ns, plural, name, sub] => (Some(*ns), *plural, Some(*name), Some(*sub)),
        [plural] => (None, *plural, None, None),
        [plural, name] => (None, *plural, Some(*name), None),
        [plural, name, sub] => (None, *plural, Some(*name), Some(*sub)),
        _ => return Err(ApiError::path_not_found(path)),
    };
    let rt = shared
        .lock()
        .registry
        .get(group, version, plural)
        .ok_or_else(|| ApiError::path_not_found(path))?;
    if ns.is_some() && !rt.namespaced {
        return Err(ApiError::path_not_found(path));
    }
    let status = match sub {
        None => false,
        Some("status") if rt.status_subresource => true,
        Some("finalize") if rt.plural == "namespaces" => false,
        Some(_) => return Err(ApiError::path_not_found(path)),
    };
    let q = query(&req);
    let dry_run = q.get("dryRun").is_some_and(|d| d == "All");
    let write = WriteOpts {
        dry_run,
        strict: q.get("fieldValidation").is_some_and(|v| v == "Strict"),
    };
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let include = q
        .get("includeObject")
        .cloned()
        .unwrap_or_else(|| "Metadata".into());
    let render = Render::from_accept(&accept, include);
    let method = req.method().clone();
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let body = axum::body::to_bytes(req.into_body(), 64 << 20)
        .await
        .map_err(|e| ApiError::bad_request(format!("reading body: {e}")))?;

    let is_watch = legacy_watch || q.get("watch").is_some_and(|w| w == "true" || w == "1");
    match (method, name) {
        (Method::GET, _) if is_watch => {
            let mut opts = list_opts(&q)?;
            if let Some(n) = name {
                opts.fields = FieldSelector::parse(&format!("metadata.name={n}"))?;
            }
            watch(shared, rt, ns.map(str::to_string), opts, &q, render)
        }
        (Method::GET, None) => {
            let opts = list_opts(&q)?;
            let list = shared.lock().list(&rt, ns, &opts)?;
            match &render {
                Render::Table(include) => {
                    let t = table::table(&rt, &list.items, list.metadata.clone(), include);
                    return Ok(json_response(StatusCode::OK, &t));
                }
                Render::Metadata => {
                    let items: Vec<Value> = list.items.iter().map(|o| partial(o)).collect();
                    let l = json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                        "metadata": list.metadata, "items": items});
                    return Ok(json_response(StatusCode::OK, &l));
                }
                Render::Object => {}
            }
            Ok((
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                list.to_json(),
            )
                .into_response())
        }
        (Method::GET, Some(n)) => {
            let obj = shared.lock().get(&rt, ns, n)?;
            Ok(json_response(StatusCode::OK, &render.one(&rt, &obj)))
        }
        (Method::POST, None) => {
            let obj = parse_body(&content_type, &body)?;
            let (created, gc) = {
                let mut st = shared.lock();
                let r = st.create(&rt, ns, obj, write)?;
                (r, st.gc_needed)
            };
            shared.after_write(gc);
            Ok(json_response(StatusCode::CREATED, &created))
        }
        (Method::PUT, Some(n)) => {
            let obj = parse_body(&content_type, &body)?;
            let (updated, gc) = {
                let mut st = shared.lock();
                let r = st.update(&rt, ns, n, obj, status, write)?;
                (r, st.gc_needed)
            };
            shared.after_write(gc);
            Ok(json_response(StatusCode::OK, &updated))
        }
        (Method::PATCH, Some(n)) => {
            let ptype = PatchType::from_content_type(&content_type)?;
            let patch = if ptype == PatchType::Apply {
                parse_yaml(&body)?
            } else {
                parse_json(&body)?
            };
            let manager = q.get("fieldManager").map(String::as_str);
            let (patched, gc, created) = {
                let mut st = shared.lock();
                let before = st.rv();
                let existed = st.get(&rt, ns, n).is_ok();
                let force = q.get("force").is_some_and(|f| f == "true");
                let r = st.patch(&rt, ns, n, ptype, patch, status, manager, force, write)?;
                (r, st.gc_needed, !existed && st.rv() > before)
            };
            shared.after_write(gc);
            Ok(json_response(
                if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                },
                &patched,
            ))
        }
        (Method::DELETE, Some(n)) => {
            let opts = delete_opts(&q, &body, dry_run)?;
            let (result, gone) = {
                let mut st = shared.lock();
                st.delete(&rt, ns, n, &opts)?
            };
            shared.after_write(true);
            if gone {
                let uid = result["metadata"]["uid"].clone();
                return Ok(json_response(
                    StatusCode::OK,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                        "details": {"name": n, "group": rt.group, "kind": rt.plural, "uid": uid}}),
                ));
            }
            Ok(json_response(StatusCode::OK, &result))
        }
        (Method::DELETE, None) => {
            let lopts = list_opts(&q)?;
            let dopts = delete_opts(&q, &body, dry_run)?;
            let list = shared.lock().delete_collection(&rt, ns, &lopts, &dopts)?;
            shared.after_write(true);
            Ok(json_response(StatusCode::OK, &list))
        }
        (m, _) => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({m})"
        ))),
    }
}

fn version() -> Value {
    json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-cks-devcluster", "gitCommit": "", "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z", "goVersion": "rust", "compiler": "rustc", "platform": "linux/amd64"})
}

fn group_json(g: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": g, "versions": vs, "preferredVersion": vs.first().cloned().unwrap_or(Value::Null)})
}

/// Decode a request body by its content type: JSON, YAML, or protobuf for a few built-ins.
fn parse_body(content_type: &str, body: &Bytes) -> ApiResult<Value> {
    let base = content_type.split(';').next().unwrap_or_default().trim();
    match base {
        "" | "application/json" | "*/*" => parse_json(body),
        "application/yaml" => parse_yaml(body),
        "application/vnd.kubernetes.protobuf" => crate::protobuf::decode(body)
            .map_err(|e| ApiError::unsupported_media_type(format!("protobuf request body: {e}"))),
        other => Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format ({other}) - accepted media types include: \
             application/json, application/yaml"
        ))),
    }
}

fn parse_json(body: &Bytes) -> ApiResult<Value> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
}

fn parse_yaml(body: &Bytes) -> ApiResult<Value> {
    if let Ok(v) = serde_json::from_slice(body) {
        return Ok(v);
    }
    let text =
        std::str::from_utf8(body).map_err(|e| ApiError::bad_request(format!("body is not UTF-8: {e}")))?;
    serde_saphyr::from_str(text)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid YAML: {e}")))
}

fn list_opts(q: &HashMap<String, String>) -> ApiResult<ListOpts> {
    Ok(ListOpts {
        labels: q
            .get("labelSelector")
            .map(|s| LabelSelector::parse(s))
            .transpose()?
            .unwrap_or_default(),
        fields: q
            .get("fieldSelector")
            .map(|s| FieldSelector::parse(s))
            .transpose()?
            .unwrap_or_default(),
        limit: q.get("limit").and_then(|l| l.parse().ok()),
        continue_token: q.get("continue").cloned(),
    })
}

fn delete_opts(q: &HashMap<String, String>, body: &Bytes, dry_run: bool) -> ApiResult<DeleteOpts> {
    let b: Value = if body.is_empty() {
        Value::Null
    } else {
        parse_json(body)?
    };
    let policy = b["propagationPolicy"]
        .as_str()
        .map(str::to_string)
        .or_else(|| q.get("propagationPolicy").cloned());
    let orphan = b["orphanDependents"]
        .as_bool()
        .or_else(|| q.get("orphanDependents").map(|o| o == "true"));
    let propagation = match (policy, orphan) {
        (Some(p), _) => Some(Propagation::parse(&p)?),
        (None, Some(true)) => Some(Propagation::Orphan),
        _ => None,
    };
    let b_dry = b["dryRun"]
        .as_array()
        .is_some_and(|d| d.iter().any(|x| x == "All"));
    Ok(DeleteOpts {
        propagation,
        precondition_rv: b["preconditions"]["resourceVersion"].as_str().map(str::to_string),
        precondition_uid: b["preconditions"]["uid"].as_str().map(str::to_string),
        dry_run: dry_run || b_dry,
    })
}

struct WatchSpec {
    rt: Arc<ResourceType>,
    ns: Option<String>,
    opts: ListOpts,
    render: Render,
}

/// How a response presents objects, chosen by the `Accept` header.
#[derive(Debug, Clone)]
enum Render {
    Object,
    /// A `meta.k8s.io/v1` Table, with the `includeObject` policy.
    Table(String),
    /// `PartialObjectMetadata`, as kube-rs's metadata API and metadata watcher ask for.
    Metadata,
}

impl Render {
    fn from_accept(accept: &str, include: String) -> Self {
        let first = accept.split(',').next().unwrap_or_default();
        if table::wants_table(accept) {
            Self::Table(include)
        } else if first.contains("as=PartialObjectMetadata") {
            Self::Metadata
        } else {
            Self::Object
        }
    }

    /// One object rendered for a get or a watch event.
    fn one(&self, rt: &ResourceType, obj: &Arc<Value>) -> Value {
        match self {
            Self::Object => (**obj).clone(),
            Self::Table(include) => {
                let meta = json!({"resourceVersion": obj["metadata"]["resourceVersion"]});
                table::table(rt, std::slice::from_ref(obj), meta, include)
            }
            Self::Metadata => partial(obj),
        }
    }
}

fn partial(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]})
}

impl WatchSpec {
    fn in_scope(&self, obj: &Value) -> bool {
        match &self.ns {
            Some(ns) => obj["metadata"]["namespace"].as_str() == Some(ns.as_str()),
            None => true,
        }
    }

    /// The event a change produces for this watch, if any.
    fn event_for(&self, c: &Change) -> Option<(EventType, Arc<Value>)> {
        if c.storage != self.rt.storage || !self.in_scope(&c.object) {
            return None;
        }
        let shown = present(&self.rt, &c.object);
        let now = self.opts.matches(&shown);
        let before = c
            .old
            .as_ref()
            .is_some_and(|o| self.opts.matches(&present(&self.rt, o)));
        let kind = match c.kind {
            EventType::Added if now => EventType::Added,
            EventType::Modified if now && before => EventType::Modified,
            EventType::Modified if now => EventType::Added,
            EventType::Modified if before => EventType::Deleted,
            EventType::Deleted if now || before => EventType::Deleted,
            _ => return None,
        };
        Some((kind, shown))
    }

    fn line(&self, kind: &str, obj: &Arc<Value>) -> Bytes {
        let object = match &self.render {
            // Serialize the shared object directly rather than cloning it into a wrapper.
            Render::Object => obj.to_string(),
            other => other.one(&self.rt, obj).to_string(),
        };
        Bytes::from(format!("{{\"type\":\"{kind}\",\"object\":{object}}}\n"))
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let mut s = json!({"type": "BOOKMARK", "object": {"kind": self.rt.kind, "apiVersion": self.rt.api_version(), "metadata": meta}})
            .to_string();
        s.push('\n');
        Bytes::from(s)
    }
}

fn gone_line(message: &str) -> Bytes {
    let status = ApiError::gone(message).to_status();
    let mut s = json!({"type": "ERROR", "object": status}).to_string();
    s.push('\n');
    Bytes::from(s)
}

fn watch(
    shared: &Arc<Shared>,
    rt: Arc<ResourceType>,
    ns: Option<String>,
    opts: ListOpts,
    q: &HashMap<String, String>,
    render: Render,
) -> ApiResult<Response> {
    let send_initial = q.get("sendInitialEvents").map(|s| s == "true");
    let from = match (q.get("resourceVersion").map(String::as_str), send_initial) {
        (_, Some(true)) | (None | Some("") | Some("0"), _) => None,
        (Some(rv), _) => Some(
            rv.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?,
        ),
    };
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(shared.opts.default_watch_timeout);
    let spec = WatchSpec { rt, ns, opts, render };
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(16);
    // Listing and subscribing under one lock: no change falls between the two.
    let subscribed = {
        let st = shared.lock();
        let start_rv = st.rv();
        match from {
            None => {
                let all = ListOpts {
                    limit: None,
                    continue_token: None,
                    ..spec.opts.clone()
                };
                st.list(&spec.rt, spec.ns.as_deref(), &all).and_then(|list| {
                    let (_, rx) = st.subscribe(&spec.rt.storage, start_rv)?;
                    Ok((
                        Start {
                            objects: list.items,
                            replay: Vec::new(),
                            rv: start_rv,
                        },
                        rx,
                    ))
                })
            }
            Some(rv) => st.subscribe(&spec.rt.storage, rv).map(|(replay, rx)| {
                (
                    Start {
                        objects: Vec::new(),
                        replay,
                        rv: start_rv,
                    },
                    rx,
                )
            }),
        }
    };
    let shared = shared.clone();
    tokio::spawn(async move {
        let (initial, changes) = match subscribed {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.send(Ok(gone_line(&e.message))).await;
                return;
            }
        };
        run_watch(
            shared,
            spec,
            initial,
            changes,
            tx,
            bookmarks,
            timeout,
            send_initial == Some(true),
        )
        .await;
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::TRANSFER_ENCODING, "chunked")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()))
}

/// Where a watch starts: current objects (sent as ADDED) or history to replay, and the
/// resourceVersion both are complete up to.
struct Start {
    objects: Vec<Arc<Value>>,
    replay: Vec<Arc<Change>>,
    rv: u64,
}

#[allow(clippy::too_many_arguments)]
async fn run_watch(
    shared: Arc<Shared>,
    spec: WatchSpec,
    initial: Start,
    mut changes: broadcast::Receiver<Arc<Change>>,
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
    bookmarks: bool,
    timeout: Duration,
    initial_end: bool,
) {
    let mut last_rv = initial.rv;
    for obj in &initial.objects {
        if tx
            .send(Ok(spec.line(EventType::Added.as_str(), obj)))
            .await
            .is_err()
        {
            return;
        }
    }
    for c in &initial.replay {
        if let Some((kind, obj)) = spec.event_for(c)
            && tx.send(Ok(spec.line(kind.as_str(), &obj))).await.is_err()
        {
            return;
        }
    }
    if initial_end && tx.send(Ok(spec.bookmark(last_rv, true))).await.is_err() {
        return;
    }
    let mut shutdown = shared.shutdown.clone();
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(shared.opts.bookmark_interval);
    tick.tick().await;
    let current_rv = shared.lock().current_rv.clone();
    loop {
        tokio::select! {
            change = changes.recv() => match change {
                Ok(c) => {
                    if c.rv <= last_rv {
                        continue;
                    }
                    last_rv = c.rv;
                    if let Some((kind, obj)) = spec.event_for(&c)
                        && tx.send(Ok(spec.line(kind.as_str(), &obj))).await.is_err() {
                            return;
                        }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    // A watcher that fell this far behind is closed rather than buffered without bound.
                    let _ = tx.send(Ok(gone_line(&format!("watch fell behind by {n} events; too old resource version")))).await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = tick.tick(), if bookmarks => {
                // Everything up to `seen` is already queued on the channel: drain it first, so
                // the bookmark never claims a version whose event was not sent.
                let seen = current_rv.load(Ordering::Acquire);
                loop {
                    match changes.try_recv() {
                        Ok(c) => {
                            if c.rv <= last_rv { continue; }
                            last_rv = c.rv;
                            if let Some((kind, obj)) = spec.event_for(&c)
                                && tx.send(Ok(spec.line(kind.as_str(), &obj))).await.is_err() {
                                    return;
                                }
                        }
                        Err(broadcast::error::TryRecvError::Empty) => break,
                        Err(broadcast::error::TryRecvError::Lagged(_)) => {
                            let _ = tx.send(Ok(gone_line("watch fell behind; too old resource version"))).await;
                            return;
                        }
                        Err(broadcast::error::TryRecvError::Closed) => return,
                    }
                }
                last_rv = last_rv.max(seen);
                if tx.send(Ok(spec.bookmark(last_rv, false))).await.is_err() {
                    return;
                }
            }
            _ = &mut deadline => return,
            _ = shutdown.changed() => return,
            _ = tx.closed() => return,
        }
    }
}
