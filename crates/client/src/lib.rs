//! The client of the host cluster's API server that cks-operator and cks-gateway use: kube's
//! client with a bound on the requests it has in flight.
//!
//! kube's client speaks HTTP/1.1, one request per connection at a time, and opens a
//! connection for every request it cannot put on an idle one. A burst of a thousand Sessions
//! had the operator's allocator, reconciles and event posts open some 680 TLS connections at
//! once: a handshake each on both sides, and buffers kept in the idle pool afterwards; a
//! class creating its Sessions through the gateway at once would do the same there. With the
//! bound, requests beyond it wait their turn in the process and reuse the connections already
//! open.
//!
//! Watches are exempt (they last as long as the process's caches, and would hold places for
//! good), and so are Lease requests: leader election must never wait behind a burst of
//! writes, or a busy leader would lose its lease.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::{Request, Response};
use kube::client::ClientBuilder;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service};

/// A client of `config` with at most `max_requests` requests in flight besides watches and
/// Lease requests.
pub fn client(config: kube::Config, max_requests: usize) -> kube::Result<kube::Client> {
    Ok(ClientBuilder::try_from(config)?
        .with_layer(&RequestLimit::new(max_requests))
        .build())
}

/// A [`Layer`] that bounds the requests in flight through it (see the module doc).
#[derive(Clone, Debug)]
pub struct RequestLimit {
    permits: Arc<Semaphore>,
}

impl RequestLimit {
    /// At most `max_requests` (at least 1) limited requests at once.
    pub fn new(max_requests: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_requests.max(1))),
        }
    }
}

impl<S> Layer<S> for RequestLimit {
    type Service = Limited<S>;

    fn layer(&self, inner: S) -> Limited<S> {
        Limited {
            inner,
            permits: self.permits.clone(),
        }
    }
}

/// The service of [`RequestLimit`].
#[derive(Clone, Debug)]
pub struct Limited<S> {
    inner: S,
    permits: Arc<Semaphore>,
}

/// True for requests that do not count against the limit: watches and Lease requests.
pub fn exempt<B>(request: &Request<B>) -> bool {
    let uri = request.uri();
    let watch = uri
        .query()
        .is_some_and(|q| q.split('&').any(|pair| pair == "watch=true" || pair == "watch=1"));
    watch || uri.path().starts_with("/apis/coordination.k8s.io/")
}

impl<S, B, RB> Service<Request<B>> for Limited<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = Response<PermitBody<RB>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let permits = (!exempt(&request)).then(|| self.permits.clone());
        // The inner future does nothing until polled: the request is sent once a place is free.
        let response = self.inner.call(request);
        Box::pin(async move {
            let permit = match permits {
                // The semaphore is never closed.
                Some(permits) => permits.acquire_owned().await.ok(),
                None => None,
            };
            let response = response.await?;
            Ok(response.map(|body| PermitBody { body, permit }))
        })
    }
}

/// A response body that keeps its request's place until it has been read to the end (the
/// connection is busy until then).
#[derive(Debug)]
pub struct PermitBody<B> {
    body: B,
    permit: Option<OwnedSemaphorePermit>,
}

impl<B> http_body::Body for PermitBody<B>
where
    B: http_body::Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None | Some(Err(_))) = frame {
            self.permit = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::{BodyExt, Full};

    use super::*;

    fn request(uri: &str) -> Request<()> {
        Request::get(uri).body(()).unwrap()
    }

    #[test]
    fn watches_and_leases_are_exempt() {
        assert!(exempt(&request(
            "/apis/cks.io/v1alpha1/namespaces/cks/sessions?watch=true&resourceVersion=5"
        )));
        assert!(exempt(&request("/api/v1/pods?allowWatchBookmarks=true&watch=1")));
        assert!(exempt(&request(
            "/apis/coordination.k8s.io/v1/namespaces/cks/leases/cks-operator"
        )));
        assert!(!exempt(&request(
            "/apis/cks.io/v1alpha1/namespaces/cks/sessions/s-1"
        )));
        assert!(!exempt(&request("/api/v1/pods?watch=false")));
        assert!(!exempt(&request("/api/v1/pods?labelSelector=watch%3Dtrue")));
    }

    /// A service whose responses arrive only when the test says, counting the requests it
    /// has received.
    #[derive(Clone)]
    struct Gate {
        received: Arc<AtomicUsize>,
        open: Arc<tokio::sync::Notify>,
    }

    impl Service<Request<()>> for Gate {
        type Response = Response<Full<&'static [u8]>>;
        type Error = Infallible;
        type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request<()>) -> Self::Future {
            let (received, open) = (self.received.clone(), self.open.clone());
            Box::pin(async move {
                received.fetch_add(1, Ordering::SeqCst);
                open.notified().await;
                Ok(Response::new(Full::new(&b"done"[..])))
            })
        }
    }

    #[tokio::test]
    async fn requests_beyond_the_limit_wait_until_a_body_is_read() {
        let gate = Gate {
            received: Arc::default(),
            open: Arc::default(),
        };
        let limit = RequestLimit::new(2);
        let mut service = limit.layer(gate.clone());
        let first = tokio::spawn(service.call(request("/api/v1/pods/a")));
        let second = tokio::spawn(service.call(request("/api/v1/pods/b")));
        let third = tokio::spawn(service.call(request("/api/v1/pods/c")));
        let watch = tokio::spawn(service.call(request("/api/v1/pods?watch=true")));
        let settled = || async {
            for _ in 0..50 {
                tokio::task::yield_now().await;
            }
        };
        settled().await;
        assert_eq!(
            gate.received.load(Ordering::SeqCst),
            3,
            "two limited requests and the watch are sent, the third waits"
        );
        // Answer everything sent so far; the third is still waiting for a place.
        gate.open.notify_waiters();
        let first = first.await.unwrap().unwrap();
        let _second = second.await.unwrap().unwrap();
        watch.await.unwrap().unwrap();
        settled().await;
        assert_eq!(
            gate.received.load(Ordering::SeqCst),
            3,
            "a response whose body is unread keeps its place"
        );
        let body = first.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"done");
        settled().await;
        assert_eq!(gate.received.load(Ordering::SeqCst), 4, "the third is sent");
        gate.open.notify_waiters();
        third.await.unwrap().unwrap();
    }
}
