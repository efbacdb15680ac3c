//! `hookgate check --sample` golden tests: the shipped sample payloads run through the rules
//! in `tests/fixtures/rules.yaml`; the report must match `tests/fixtures/*.out` exactly.
//! After an intended change, regenerate with the commands in `tests/fixtures/README.md`.

use std::process::Command;

fn golden(sample: &str, route: &str, headers: &[&str]) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hookgate"));
    cmd.args([
        "check",
        "-c",
        &format!("{dir}/rules.yaml"),
        "--sample",
        &format!("{dir}/{sample}"),
        "--route",
        route,
    ]);
    for h in headers {
        cmd.args(["--header", h]);
    }
    cmd.env_remove("GITHUB_WEBHOOK_SECRET")
        .env_remove("STRIPE_WEBHOOK_SECRET")
        .env_remove("SLACK_SIGNING_SECRET");
    let out = cmd.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stem = sample.rsplit_once('.').map(|(s, _)| s).unwrap_or(sample);
    let want = std::fs::read_to_string(format!("{dir}/{stem}.out")).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), want, "{sample}");
}

#[test]
fn github_push_goes_to_ci_transformed_and_to_audit() {
    golden(
        "github-push.json",
        "github",
        &["X-GitHub-Event: push", "Content-Type: application/json"],
    );
}

#[test]
fn github_pull_request_goes_to_reviews() {
    golden(
        "github-pull_request.json",
        "github",
        &[
            "X-GitHub-Event: pull_request",
            "Content-Type: application/json",
        ],
    );
}

#[test]
fn stripe_payment_becomes_an_order_update() {
    golden(
        "stripe-payment_intent.succeeded.json",
        "stripe",
        &["Content-Type: application/json"],
    );
}

#[test]
fn slack_slash_command_is_a_form_post() {
    golden(
        "slack-slash-command.txt",
        "slack",
        &["Content-Type: application/x-www-form-urlencoded"],
    );
}

#[test]
fn sample_errors_exit_1() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let out = Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args([
            "check",
            "-c",
            &format!("{dir}/rules.yaml"),
            "--sample",
            &format!("{dir}/github-push.json"),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--route"));
}

/// `check --sample` runs under the gateway's own limits (a 1 KiB body allows 4 MiB of
/// output; a stuck filter times out as it would at run time) and never prints a credential
/// that a target's `headers.set` adds.
#[test]
fn samples_run_under_the_gateway_limits_and_hide_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("routes.yaml");
    std::fs::write(
        &config,
        r#"server: { listen: ["127.0.0.1:0"], max_body: 1KiB }
admin: { listen: "127.0.0.1:0" }
routes:
  - name: gh
    path: /gh
    mode: async
    verify: { github: { secret: "abc" } }
    targets:
      - name: big
        url: http://127.0.0.1:9/
        transform: '"x" * 5000000'
      - name: stuck
        url: http://127.0.0.1:9/
        filter: 'last(range(1e12)) > 0'
      - name: creds
        url: http://127.0.0.1:9/
        headers:
          set: { Authorization: "Bearer CANARY-one", X-Api-Key: "CANARY-two", X-Source: github }
"#,
    )
    .unwrap();
    let sample = dir.path().join("s.json");
    std::fs::write(&sample, br#"{"a": 1}"#).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["check", "-c"])
        .arg(&config)
        .arg("--sample")
        .arg(&sample)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("== big: dead letter: transform output is larger than 4194304 bytes"),
        "{text}"
    );
    assert!(
        text.contains("== stuck: dead letter: filter timed out after 250 ms"),
        "{text}"
    );
    assert!(text.contains("authorization: [redacted]"), "{text}");
    assert!(text.contains("x-api-key: [redacted]"), "{text}");
    assert!(text.contains("x-source: github"), "{text}");
    assert!(!text.contains("CANARY"), "{text}");
}
