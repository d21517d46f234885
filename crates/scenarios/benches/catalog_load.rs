//! Catalog load benchmark: generates a catalog of 500 scenarios × 4 tasks in a temp dir,
//! loads it several times, and prints the load time and the process's peak memory
//! (VmHWM from /proc/self/status, Linux only).
//!
//! Run with `cargo bench -p cks-scenarios --bench catalog_load`. Set `CKS_BENCH_SCENARIOS`
//! to change the number of scenarios.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use cks_scenarios::Catalog;

const TASKS: usize = 4;
const RUNS: usize = 5;

fn task_md(s: usize, t: usize) -> String {
    format!(
        r#"# Task {t} of scenario {s}

## Description

Configure Pod Security Admission in namespace `team-{s}` and prove that it works.
This paragraph stands in for the few paragraphs of real guidance a task carries.

## Background

Pod Security Admission enforces the Pod Security Standards per namespace through labels.
`enforce` rejects violating pods, `warn` and `audit` only report them.

## Objectives

- Create namespace `team-{s}` with the label `pod-security.kubernetes.io/enforce=restricted`
- Run a compliant pod in it
- Show that a privileged pod is rejected

## Step-by-Step Guide

1. Create the namespace: `kubectl create namespace team-{s}`
2. Label it: `kubectl label ns team-{s} pod-security.kubernetes.io/enforce=restricted`
3. Try a privileged pod and read the error message.

## Hints

<details>
<summary>Which label?</summary>

`pod-security.kubernetes.io/enforce` with the level as its value.
</details>

<details>
<summary>Why was my compliant pod rejected?</summary>

Restricted requires `runAsNonRoot`, dropping ALL capabilities and a seccomp profile.
</details>

## Solution

```bash
kubectl create namespace team-{s}
kubectl label ns team-{s} pod-security.kubernetes.io/enforce=restricted
```

## Validation Criteria

- The namespace exists with the enforce label set to restricted
- A privileged pod is rejected
"#
    )
}

fn validation_yaml(s: usize) -> String {
    format!(
        r#"validation:
  - id: namespace-exists
    type: resource_exists
    resource:
      kind: Namespace
      name: team-{s}
    errorMessage: "Namespace team-{s} not found"
  - id: enforce-label
    type: resource_property
    resource:
      kind: Namespace
      name: team-{s}
    property: .metadata.labels.pod-security\.kubernetes\.io/enforce
    condition: equals
    value: restricted
    errorMessage: "enforce label not set to restricted"
  - id: privileged-rejected
    type: script
    script:
      script: |
        #!/bin/bash
        kubectl run p --image=nginx -n team-{s} --privileged --dry-run=server 2>&1 | grep -q violates
      target: control-plane
      successCode: 0
    timeout: 30
    errorMessage: "a privileged pod was admitted"
  - id: apiserver-ready
    type: command
    command:
      command: "kubectl get --raw /readyz"
      target: control-plane
    condition: output_equals
    value: ok
  - id: audit-policy
    type: file_content
    file: {{path: /etc/kubernetes/audit-policy.yaml, target: control-plane}}
    condition: matches_regex
    value: "level:\\s+(Metadata|RequestResponse)"
"#
    )
}

fn generate(root: &Path, scenarios: usize) -> std::io::Result<()> {
    fs::write(
        root.join("categories.yaml"),
        "categories:\n  - id: minimize-microservice-vulnerabilities\n    name: Minimize Microservice Vulnerabilities\n",
    )?;
    for s in 0..scenarios {
        let id = format!("scenario-{s:04}");
        let dir = root.join(&id);
        fs::create_dir_all(dir.join("tasks"))?;
        fs::create_dir_all(dir.join("validation"))?;
        fs::create_dir_all(dir.join("setup"))?;
        fs::write(
            dir.join("metadata.yaml"),
            format!(
                "id: {id}\ntitle: Generated scenario {s}\ndescription: >-\n  A generated scenario for the load benchmark.\n\
                 version: \"1.0.0\"\ndifficulty: intermediate\ntimeEstimate: 30m\ntopics: [pod-security, admission]\n\
                 category: minimize-microservice-vulnerabilities\nrequirements:\n  kubernetesVersion: \"1.33\"\n  \
                 nodes: {{controlPlane: 1, workers: 1}}\n  resources: {{cpu: \"2\", memory: 4Gi}}\n"
            ),
        )?;
        for t in 1..=TASKS {
            fs::write(dir.join(format!("tasks/{t:02}-task.md")), task_md(s, t))?;
            fs::write(
                dir.join(format!("validation/{t:02}-validation.yaml")),
                validation_yaml(s),
            )?;
        }
        fs::write(
            dir.join("setup/init.yaml"),
            format!(
                "steps:\n  - id: namespace\n    type: kubectl_apply\n    timeout: 60\n    retryCount: 3\n    manifest: |\n      \
                 apiVersion: v1\n      kind: Namespace\n      metadata:\n        name: team-{s}\n  - id: break\n    type: script\n    \
                 target: worker\n    script: |\n      systemctl stop kubelet\n"
            ),
        )?;
    }
    Ok(())
}

/// A field of /proc/self/status in KiB (Linux); `None` elsewhere.
fn proc_status_kib(field: &str) -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "n/a".to_owned(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

fn main() {
    let scenarios: usize = std::env::var("CKS_BENCH_SCENARIOS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let dir = tempfile::tempdir().expect("temp dir");
    generate(dir.path(), scenarios).expect("generate catalog");
    let rss_before = proc_status_kib("VmRSS");
    let hwm_before = proc_status_kib("VmHWM");

    let mut times: Vec<Duration> = Vec::with_capacity(RUNS);
    let mut kept: Option<Catalog> = None;
    for _ in 0..RUNS {
        // Drop the previous catalog first so the peak reflects one catalog in memory.
        drop(kept.take());
        let start = Instant::now();
        let catalog = Catalog::load(dir.path()).expect("load catalog");
        times.push(start.elapsed());
        assert!(catalog.is_valid(), "generated catalog has errors");
        assert_eq!(catalog.len(), scenarios);
        kept = Some(catalog);
    }
    let catalog = kept.expect("at least one run");
    let rules: usize = catalog.list().flat_map(|s| &s.tasks).map(|t| t.rules.len()).sum();
    times.sort();
    let rss_after = proc_status_kib("VmRSS");
    let hwm_after = proc_status_kib("VmHWM");

    println!("catalog_load: {scenarios} scenarios x {TASKS} tasks ({rules} rules), {RUNS} runs");
    println!(
        "  load time: min {:.1} ms, median {:.1} ms, max {:.1} ms",
        times[0].as_secs_f64() * 1e3,
        times[times.len() / 2].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3
    );
    println!(
        "  memory: peak (VmHWM) {} (before loading {}), resident with catalog loaded {} (before {})",
        mib(hwm_after),
        mib(hwm_before),
        mib(rss_after),
        mib(rss_before)
    );
}
