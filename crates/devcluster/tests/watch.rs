//! Watch semantics: resume from a resourceVersion, initial events, bookmarks, timeouts, 410 Gone,
//! bounded memory for slow watchers, and kube-runtime's watcher across reconnects.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": {"app": "w"}}, "data": {"k": "v"}}))
        .unwrap()
}

async fn next_event(
    stream: &mut (impl futures::Stream<Item = kube::Result<WatchEvent<ConfigMap>>> + Unpin),
) -> WatchEvent<ConfigMap> {
    tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("event in time")
        .expect("stream open")
        .unwrap()
}

fn describe(e: &WatchEvent<ConfigMap>) -> String {
    match e {
        WatchEvent::Added(o) => format!("ADDED {}", o.metadata.name.clone().unwrap()),
        WatchEvent::Modified(o) => format!("MODIFIED {}", o.metadata.name.clone().unwrap()),
        WatchEvent::Deleted(o) => format!("DELETED {}", o.metadata.name.clone().unwrap()),
        WatchEvent::Bookmark(b) => format!("BOOKMARK {}", b.metadata.resource_version),
        WatchEvent::Error(e) => format!("ERROR {}", e.code),
    }
}

#[tokio::test]
async fn watch_from_resource_version_replays_later_changes() {
    let cluster = common::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().await.unwrap());
    api.create(&PostParams::default(), &cm("before")).await.unwrap();
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    api.create(&PostParams::default(), &cm("a")).await.unwrap();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "2"}})),
    )
    .await
    .unwrap();
    api.delete("a", &DeleteParams::default()).await.unwrap();
    let mut stream = api.watch(&WatchParams::default(), &rv).await.unwrap().boxed();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(describe(&next_event(&mut stream).await));
    }
    assert_eq!(got, vec!["ADDED a", "MODIFIED a", "DELETED a"]);
    // And live changes after that.
    api.create(&PostParams::default(), &cm("b")).await.unwrap();
    assert_eq!(describe(&next_event(&mut stream).await), "ADDED b");
}

#[tokio::test]
async fn watch_without_resource_version_starts_with_current_objects() {
    let cluster = common::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().await.unwrap());
    api.create(&PostParams::default(), &cm("x")).await.unwrap();
    let mut stream = api.watch(&WatchParams::default(), "0").await.unwrap().boxed();
    assert_eq!(describe(&next_event(&mut stream).await), "ADDED x");
    api.create(&PostParams::default(), &cm("y")).await.unwrap();
    assert_eq!(describe(&next_event(&mut stream).await), "ADDED y");
}

#[tokio::test]
async fn label_selected_watch_sees_objects_leave_the_selection() {
    let cluster = common::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().await.unwrap());
    api.create(&PostParams::default(), &cm("x")).await.unwrap();
    let rv = api.get("x").await.unwrap().metadata.resource_version.unwrap();
    let mut stream = api
        .watch(&WatchParams::default().labels("app=w"), &rv)
        .await
        .unwrap()
        .boxed();
    api.patch(
        "x",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "other"}}})),
    )
    .await
    .unwrap();
    assert_eq!(describe(&next_event(&mut stream).await), "DELETED x");
}

#[tokio::test]
async fn bookmarks_are_sent_when_allowed() {
    let cluster = common::start_with(cks_devcluster::Options {
        bookmark_interval: Duration::from_millis(100),
        ..Default::default()
    })
    .await;
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().await.unwrap());
    api.create(&PostParams::default(), &cm("x")).await.unwrap();
    let rv = api.get("x").await.unwrap().metadata.resource_version.unwrap();
    let mut stream = api
        .watch(
            &WatchParams {
                bookmarks: true,
                ..Default::default()
            },
            &rv,
        )
        .await
        .unwrap()
        .boxed();
    match next_event(&mut stream).await {
        WatchEvent::Bookmark(b) => {
            assert!(b.metadata.resource_version.parse::<u64>().unwrap() >= rv.parse::<u64>().unwrap())
        }
        other => panic!("expected a bookmark, got {}", describe(&other)),
    }
}

#[tokio::test]
async fn watch_ends_after_timeout_seconds() {
    let cluster = common::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().await.unwrap());
    let mut stream = api
        .watch(&WatchParams::default().timeout(1), "0")
        .await
        .unwrap()
        .boxed();
    let end = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("stream ends");
    assert!(end.is_none(), "the server closed the watch");
}

#[tokio::test]
async fn too_old_resource_version_is_a_410_error_event() {
    let cluster = common::start_with(cks_devcluster::Options {
        history: 16,
        ..Default::default()
    })
    .await;
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().await.unwrap());
    for i in 0..40 {
        api.create(&PostParams::default(), &cm(&format!("c{i}")))
            .await
            .unwrap();
    }
    let mut stream = api.watch(&WatchParams::default(), "2").await.unwrap().boxed();
    match next_event(&mut stream).await {
        WatchEvent::Error(e) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected 410, got {}", describe(&other)),
    }
}

#[tokio::test]
async fn a_watcher_that_stops_reading_is_closed_with_410_instead_of_buffering() {
    let cluster = common::start_with(cks_devcluster::Options {
        watch_buffer: 16,
        ..Default::default()
    })
    .await;
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().await.unwrap());
    let mut stream = api.watch(&WatchParams::default(), "0").await.unwrap().boxed();
    // Large objects fill the socket buffers quickly, so the server-side queue backs up while
    // this test does not read the stream.
    let big = "x".repeat(128 * 1024);
    let total = 250;
    for i in 0..total {
        let mut c = cm(&format!("big-{i}"));
        c.data = Some([("k".to_string(), big.clone())].into());
        api.create(&PostParams::default(), &c).await.unwrap();
    }
    let mut added = 0;
    let mut last = None;
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("in time")
    {
        match ev.unwrap() {
            WatchEvent::Added(_) => added += 1,
            other => last = Some(other),
        }
    }
    match last {
        Some(WatchEvent::Error(e)) => assert_eq!(e.code, 410),
        other => panic!(
            "expected the watch to end with 410, got {:?}",
            other.as_ref().map(describe)
        ),
    }
    assert!(
        added < total,
        "the watcher was cut off before receiving everything"
    );
}

#[tokio::test]
async fn kube_runtime_watcher_resumes_across_server_side_timeouts() {
    let cluster = common::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().await.unwrap());
    let stream = watcher(api.clone(), watcher::Config::default().timeout(1)).applied_objects();
    let mut stream = stream.boxed();
    let writer = {
        let api = api.clone();
        tokio::spawn(async move {
            for i in 0..6 {
                api.create(&PostParams::default(), &cm(&format!("r{i}")))
                    .await
                    .unwrap();
                // Spread writes over several server-side watch timeouts.
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
        })
    };
    let mut seen = BTreeSet::new();
    while seen.len() < 6 {
        let obj = tokio::time::timeout(Duration::from_secs(20), stream.try_next())
            .await
            .expect("in time")
            .unwrap()
            .unwrap();
        seen.insert(obj.metadata.name.unwrap());
    }
    writer.await.unwrap();
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        (0..6).map(|i| format!("r{i}")).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn metadata_watcher_streams_partial_objects() {
    let cluster = common::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().await.unwrap());
    api.create(&PostParams::default(), &cm("m")).await.unwrap();
    let meta = api.get_metadata("m").await.unwrap();
    assert_eq!(meta.metadata.name.as_deref(), Some("m"));
    let list = api.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    let meta_api: Api<kube::core::PartialObjectMeta<ConfigMap>> =
        Api::default_namespaced(cluster.client().await.unwrap());
    let mut stream = watcher(meta_api, watcher::Config::default())
        .applied_objects()
        .boxed();
    let first = tokio::time::timeout(Duration::from_secs(20), stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.metadata.name.as_deref(), Some("m"));
    assert_eq!(first.types.unwrap().kind, "PartialObjectMetadata");
}

#[tokio::test]
async fn table_watches_wrap_each_event_in_a_table() {
    let cluster = common::start().await;
    let client = cluster.client().await.unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    api.create(&PostParams::default(), &cm("t")).await.unwrap();
    let req = http::Request::get("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=0")
        .header(
            "accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )
        .body(Vec::new())
        .unwrap();
    let mut events = client
        .request_events::<serde_json::Value>(req)
        .await
        .unwrap()
        .boxed();
    let first = tokio::time::timeout(Duration::from_secs(20), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match first {
        WatchEvent::Added(table) => {
            assert_eq!(table["kind"], "Table");
            assert_eq!(table["rows"][0]["cells"][0], "t");
        }
        other => panic!("expected ADDED, got {other:?}"),
    }
}

#[tokio::test]
async fn hundreds_of_concurrent_watchers_all_see_a_change() {
    let cluster = common::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().await.unwrap());
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut streams = Vec::new();
    for _ in 0..300 {
        streams.push(api.watch(&WatchParams::default(), &rv).await.unwrap().boxed());
    }
    api.create(&PostParams::default(), &cm("broadcast"))
        .await
        .unwrap();
    let all = futures::future::join_all(
        streams
            .iter_mut()
            .map(|s| async move { describe(&next_event(s).await) }),
    )
    .await;
    assert!(
        all.iter().all(|e| e == "ADDED broadcast"),
        "{:?}",
        all.iter().find(|e| *e != "ADDED broadcast")
    );
}

#[tokio::test]
async fn kube_runtime_streaming_list_gets_initial_events_and_the_end_bookmark() {
    let cluster = common::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().await.unwrap());
    for name in ["s1", "s2"] {
        api.create(&PostParams::default(), &cm(name)).await.unwrap();
    }
    let mut stream = watcher(api.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut names = BTreeSet::new();
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(20), stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match ev {
            watcher::Event::InitApply(o) => {
                names.insert(o.metadata.name.unwrap());
            }
            // InitDone only follows the initial-events-end bookmark.
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(names.into_iter().collect::<Vec<_>>(), vec!["s1", "s2"]);
    api.create(&PostParams::default(), &cm("s3")).await.unwrap();
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(20), stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let watcher::Event::Apply(o) = ev {
            assert_eq!(o.metadata.name.as_deref(), Some("s3"));
            break;
        }
    }
}
