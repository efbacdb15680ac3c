//! `hookgate check` as a user meets it: the built binary, a config file, and the exact
//! `FILE:LINE:COL: message` lines on stderr.

use std::process::Command;

fn check(
    yaml: &str,
    env: &[(&str, &str)],
) -> (i32, String, String, std::path::PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.yaml");
    std::fs::write(&path, yaml).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hookgate"));
    cmd.arg("check")
        .arg("-c")
        .arg(&path)
        .env_remove("HOOKGATE_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
        path,
        dir,
    )
}

/// Asserts that stderr holds `FILE:LINE:COL: ...message...`.
fn has(stderr: &str, path: &std::path::Path, line: u32, col: u32, message: &str) {
    let prefix = format!("{}:{line}:{col}: ", path.display());
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with(&prefix) && l.contains(message)),
        "expected `{prefix}...{message}` in:\n{stderr}"
    );
}

const GOOD: &str = r#"server:
  listen: ["127.0.0.1:8080"]
routes:
  - name: github
    path: /hooks/github
    mode: sync
    verify:
      github:
        secret: ${GH_SECRET}
    targets:
      - name: ci
        url: http://127.0.0.1:9000/github
"#;

#[test]
fn valid_config_prints_one_summary_line() {
    let (code, out, err, _, _d) = check(GOOD, &[("GH_SECRET", "s")]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 1);
    assert!(out.contains("1 route(s), 1 target(s)"), "{out}");
}

#[test]
fn the_shipped_routes_yaml_is_valid() {
    let out = Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args([
            "check",
            "-c",
            concat!(env!("CARGO_MANIFEST_DIR"), "/routes.yaml"),
        ])
        .env_remove("GITHUB_WEBHOOK_SECRET")
        .env_remove("HOOKGATE_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn unset_variable_is_reported_where_it_is_used() {
    let (code, _, err, p, _d) = check(GOOD, &[]);
    assert_eq!(code, 1);
    has(&err, &p, 9, 17, "environment variable GH_SECRET is not set");
    // The secret's value never appears, even when it is set and something else is wrong.
    let bad = GOOD.replace("/hooks/github", "hooks/github");
    let (_, out, err, _, _d) = check(&bad, &[("GH_SECRET", "hunter2-secret")]);
    assert!(!err.contains("hunter2") && !out.contains("hunter2"));
}

#[test]
fn unknown_key_is_an_error_with_its_position() {
    let yaml = GOOD.replace("    mode: sync\n", "    mode: sync\n    verfy_typo: 1\n");
    let (code, _, err, p, _d) = check(&yaml, &[("GH_SECRET", "s")]);
    assert_eq!(code, 1);
    has(&err, &p, 7, 5, "unknown field `verfy_typo`");
}

#[test]
fn every_problem_is_reported_at_once() {
    let yaml = r#"server:
  listen: ["127.0.0.1:8080", "nowhere"]
  max_body: 3 furlongs
  header_timeout: 10
  tls: { cert: missing.crt, key: missing.key }
admin:
  listen: 0.0.0.0:9900
routes:
  - name: github
    path: /hooks/github
    mode: sync
    verify: { github: { secret: s } }
    targets:
      - { name: ci, url: "not a url" }
  - name: github
    path: /hooks/github
    mode: sync
    verify: { none: true }
    targets:
      - { name: t, url: "ftp://x/y" }
  - name: Upper
    path_prefix: /p/
    verify: { discord: { public_key: "zz" } }
    targets:
      - { name: a, url: "http://a" }
      - { name: a, url: "http://b", filter: ".x | (" }
"#;
    let (code, _, err, p, _d) = check(yaml, &[]);
    assert_eq!(code, 1);
    has(&err, &p, 2, 30, "`nowhere` is not a listen address");
    has(&err, &p, 3, 13, "unknown size unit `furlongs`");
    has(&err, &p, 4, 19, "needs a unit");
    has(&err, &p, 5, 16, "certificate file");
    has(&err, &p, 5, 34, "key file");
    has(&err, &p, 7, 11, "admin.token is required");
    has(&err, &p, 14, 26, "`not a url` is not a valid URL");
    has(&err, &p, 15, 11, "duplicate route name `github`");
    has(
        &err,
        &p,
        15,
        5,
        "another route already serves path /hooks/github",
    );
    has(
        &err,
        &p,
        20,
        25,
        "must be an absolute http:// or https:// URL",
    );
    has(&err, &p, 21, 11, "must match [a-z0-9_-]+");
    has(&err, &p, 23, 38, "discord public_key must be hex");
    has(&err, &p, 26, 17, "duplicate target name `a`");
    // One line per problem, nothing else.
    assert!(
        err.lines().all(|l| l.starts_with(&p.display().to_string())),
        "{err}"
    );
}

#[test]
fn yaml_syntax_error_has_a_position() {
    let (code, _, err, p, _d) = check("routes:\n  - name: [unclosed\n", &[]);
    assert_eq!(code, 1);
    assert!(err.starts_with(&format!("{}:", p.display())), "{err}");
    assert!(!err.contains(":0:"), "{err}");
}

#[test]
fn unauthenticated_route_warns_but_passes() {
    let yaml = GOOD.replace(
        "      github:\n        secret: ${GH_SECRET}\n",
        "      none: true\n",
    );
    let (code, _, err, _, _d) = check(&yaml, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning:") && err.contains("unauthenticated"),
        "{err}"
    );
}

#[test]
fn missing_config_file_is_exit_1() {
    let out = Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["check", "-c", "/nonexistent/routes.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));
}

#[test]
fn sign_prints_githubs_header() {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args([
            "sign",
            "--provider",
            "github",
            "--secret",
            "It's a Secret to Everybody",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Hello, World!")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "X-Hub-Signature-256: sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17\n"
    );
}

#[test]
fn verifier_keys_fail_closed() {
    let yaml = r#"routes:
  - name: a
    path: /a
    verify: { standard: { secret: "whsec_***" } }
    targets: [{ name: t, url: "http://x" }]
  - name: b
    path: /b
    verify: { sendgrid: { public_key: "bm90IGEga2V5" } }
    targets: [{ name: t, url: "http://x" }]
  - name: c
    path: /c
    verify: { github: { secret: "" } }
    targets: [{ name: t, url: "http://x" }]
  - name: d
    path: /d
    verify: { github: { secret: s, tolerance: 5m } }
    verify_token: vt
    targets: [{ name: t, url: "http://x" }]
  - name: e
    path: /e
    verify: { standard: { public_key: "whpk_AAAA" } }
    targets: [{ name: t, url: "http://x" }]
"#;
    let (code, _, err, p, _d) = check(yaml, &[]);
    assert_eq!(code, 1);
    has(&err, &p, 4, 35, "whsec_");
    has(&err, &p, 8, 39, "not an ECDSA P-256 public key");
    has(&err, &p, 12, 33, "secret is empty");
    has(&err, &p, 16, 47, "signs no timestamp");
    has(&err, &p, 17, 19, "only used by the meta verifier");
    has(&err, &p, 21, 39, "not an Ed25519 key");
}

#[test]
fn jq_errors_point_inside_the_yaml_string() {
    let yaml = r#"routes:
  - name: a
    path: /a
    verify: { none: true }
    targets:
      - name: t
        url: "http://x"
        filter: '.ref | nosuchfn'
        transform: "def loop: loop; loop"
      - name: u
        url: "http://x"
        transform: |
          {a: .a,
           b: ]}
"#;
    let (code, _, err, p, _d) = check(yaml, &[]);
    assert_eq!(code, 1);
    has(&err, &p, 8, 25, "undefined filter `nosuchfn`");
    has(&err, &p, 9, 25, "calls itself");
    has(&err, &p, 13, 15, "jq syntax error");
}

#[test]
fn unknown_keys_are_reported_with_every_other_problem() {
    let yaml = GOOD
        .replace("    mode: sync\n", "    mode: sync\n    verfy_typo: 1\n")
        .replace("/hooks/github", "hooks/github");
    let (code, _, err, p, _d) = check(&yaml, &[]);
    assert_eq!(code, 1);
    has(&err, &p, 7, 5, "unknown field `verfy_typo` in `routes.0`");
    has(
        &err,
        &p,
        10,
        17,
        "environment variable GH_SECRET is not set",
    );
    // And the path without its leading `/`: three problems, one run.
    assert_eq!(err.lines().count(), 3, "{err}");
}

#[test]
fn programs_that_can_run_without_end_are_warned_about() {
    let yaml = GOOD.replace(
        "        url: ",
        "        filter: 'last(range(.n)) > 0'\n        url: ",
    );
    let (code, _, err, _p, _d) = check(&yaml, &[("GH_SECRET", "s")]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("warning:"), "{err}");
    assert!(
        err.contains("jq `range` bound `.n` is not a number literal"),
        "{err}"
    );
}
