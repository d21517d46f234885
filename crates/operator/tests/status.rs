//! The one status writer against the development control plane: a guarded write on a stale
//! read writes nothing, a field the manager leaves out is removed, and a Session's task list
//! (the ValidationRun controller's) and the rest of its status (the Session controller's)
//! never overwrite each other.

mod common;

use cks_api::session::{SessionPhase, SessionStatus, TaskState, TaskStatus};
use cks_api::validation_run::{ValidationRunPhase, ValidationRunStatus};
use cks_api::{Session, ValidationRun};
use cks_operator::status::{self, Guard, managers};
use cks_operator::validation_run::apply_session_tasks;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use common::NS;
use common::vrun_fixtures::create_run;

fn running(message: Option<&str>) -> ValidationRunStatus {
    ValidationRunStatus {
        phase: ValidationRunPhase::Running,
        message: message.map(str::to_owned),
        ..ValidationRunStatus::default()
    }
}

#[tokio::test]
async fn a_guarded_write_on_a_stale_read_writes_nothing() {
    let (_server, client) = common::start().await;
    create_run(&client, "r", "s", "").await;
    let runs: Api<ValidationRun> = Api::namespaced(client.clone(), NS);
    let read = runs.get("r").await.unwrap();

    let written = status::apply(
        &runs,
        &read,
        managers::VALIDATION,
        &running(Some("first")),
        Guard::ResourceVersion,
    )
    .await
    .unwrap()
    .expect("a fresh read is written");
    assert_eq!(written.status.unwrap().message.as_deref(), Some("first"));

    // `read` is stale now: the guarded write is refused and changes nothing.
    let refused = status::apply(
        &runs,
        &read,
        managers::VALIDATION,
        &running(Some("stale")),
        Guard::ResourceVersion,
    )
    .await
    .unwrap();
    assert!(refused.is_none(), "a stale resourceVersion is not written");
    let now = runs.get("r").await.unwrap();
    assert_eq!(now.status.unwrap().message.as_deref(), Some("first"));

    // Unguarded, the same stale read is written.
    let forced = status::apply(
        &runs,
        &read,
        managers::VALIDATION,
        &running(Some("unguarded")),
        Guard::None,
    )
    .await
    .unwrap()
    .expect("an unguarded write is always written");
    assert_eq!(forced.status.unwrap().message.as_deref(), Some("unguarded"));
}

#[tokio::test]
async fn a_field_the_manager_leaves_out_is_removed() {
    let (_server, client) = common::start().await;
    create_run(&client, "r", "s", "").await;
    let runs: Api<ValidationRun> = Api::namespaced(client.clone(), NS);
    let read = runs.get("r").await.unwrap();
    let read = status::apply(
        &runs,
        &read,
        managers::VALIDATION,
        &running(Some("m")),
        Guard::ResourceVersion,
    )
    .await
    .unwrap()
    .unwrap();
    let written = status::apply(
        &runs,
        &read,
        managers::VALIDATION,
        &running(None),
        Guard::ResourceVersion,
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        written.status.unwrap().message,
        None,
        "the whole status is what was applied"
    );
}

#[tokio::test]
async fn session_tasks_and_the_rest_of_the_session_status_do_not_overwrite_each_other() {
    let (_server, client) = common::start().await;
    let sessions: Api<Session> = Api::namespaced(client.clone(), NS);
    let session: Session = serde_json::from_value(json!({
        "apiVersion": "cks.io/v1alpha1", "kind": "Session",
        "metadata": {"name": "s", "namespace": NS},
        "spec": {"scenario": "x", "user": "u", "pool": "pool", "durationMinutes": 60},
    }))
    .unwrap();
    let created = sessions.create(&PostParams::default(), &session).await.unwrap();
    // The Session controller's part: everything but `tasks`, with its own manager.
    let own = |phase, cluster: Option<&str>| SessionStatus {
        phase,
        cluster: cluster.map(str::to_owned),
        ..SessionStatus::default()
    };
    let read = status::apply(
        &sessions,
        &created,
        managers::SESSION,
        &own(SessionPhase::Ready, Some("c")),
        Guard::ResourceVersion,
    )
    .await
    .unwrap()
    .unwrap();

    let task = |state, attempts| TaskStatus {
        id: "task-1".into(),
        state,
        attempts,
        last_run: None,
        last_run_time: None,
    };
    // The initial entries (the Session controller, with the task list's manager), then a run.
    let read = apply_session_tasks(&sessions, &read, &[task(TaskState::Pending, 0)])
        .await
        .unwrap()
        .unwrap();
    let written = apply_session_tasks(&sessions, &read, &[task(TaskState::Passed, 1)])
        .await
        .unwrap()
        .expect("written on a fresh read");
    let status = written.status.clone().unwrap();
    assert_eq!(status.tasks, [task(TaskState::Passed, 1)]);
    assert_eq!(
        (status.phase, status.cluster.as_deref()),
        (SessionPhase::Ready, Some("c")),
        "the rest of the status is left alone"
    );

    // A task write decided on a stale Session is refused.
    let stale = apply_session_tasks(&sessions, &read, &[task(TaskState::Failed, 2)])
        .await
        .unwrap();
    assert!(stale.is_none());

    // The Session controller's next write, without `tasks`, leaves the task list alone and
    // removes what it no longer sends itself.
    let status = status::apply(
        &sessions,
        &written,
        managers::SESSION,
        &own(SessionPhase::Expired, None),
        Guard::ResourceVersion,
    )
    .await
    .unwrap()
    .unwrap()
    .status
    .unwrap();
    assert_eq!((status.phase, status.cluster), (SessionPhase::Expired, None));
    assert_eq!(status.tasks, [task(TaskState::Passed, 1)]);

    // So does a merge patch of the rest (how the Session controller writes today).
    sessions
        .patch_status(
            "s",
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"phase": "Ended"}})),
        )
        .await
        .unwrap();
    let status = sessions.get("s").await.unwrap().status.unwrap();
    assert_eq!(status.phase, SessionPhase::Ended);
    assert_eq!(status.tasks, [task(TaskState::Passed, 1)]);
}
