//! A dead target's backlog waits on disk, not in memory. Alone in its own test process, so
//! the resident-memory measurement sees only this gateway.

mod common;

use common::*;

const SECRET: &str = "s3cret";

fn yaml(targets: &str) -> String {
    format!(
        r#"server: {{ listen: ["127.0.0.1:0"], shutdown_grace: 5s }}
admin: {{ listen: "127.0.0.1:0" }}
storage: {{ path: data }}
routes:
  - name: gh
    path: /hooks/github
    verify: {{ github: {{ secret: "{SECRET}" }} }}
    targets:
{targets}"#
    )
}

fn target(name: &str, url: &str, extra: &str) -> String {
    format!(
        "      - name: {name}\n        url: {url}\n        timeout: 1s\n        retry: {{ initial: 50ms, max_delay: 300ms, max_attempts: 4 }}\n{extra}"
    )
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_of_a_dead_target_waits_on_disk() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let t = target("down", &format!("http://{closed}/x"), "")
        .replace("max_attempts: 4", "max_attempts: 1000")
        .replace("timeout: 1s", "timeout: 1s\n        concurrency: 4");
    let gw = start_gateway(&yaml(&t), |_| {}).await;
    let before = rss_kib();
    let body = vec![b'x'; 4096];
    let sig = github_sig(SECRET, &body);
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let mut c = H1::over(tcp).await;
    for i in 0..1000 {
        let req = post(
            "/hooks/github",
            &[
                ("x-hub-signature-256", &sig),
                ("x-github-delivery", &format!("b-{i}")),
            ],
            &body,
        );
        assert_eq!(c.send(req).await.unwrap().status, 202);
    }
    let (_, routes) = admin_get(gw.admin, "/api/v1/routes").await;
    let down = &routes["routes"][0]["targets"][0];
    assert_eq!(down["pending"], 1000, "{down}");
    // 4 MiB of bodies went to disk; the process holds no copy of the backlog.
    let grown = rss_kib().saturating_sub(before);
    assert!(grown < 32 * 1024, "RSS grew by {grown} KiB");
    gw.gw.drain().await;
}
