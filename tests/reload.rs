//! Live reconfiguration against a running gateway: admin API, file change, SIGHUP;
//! invalid files change nothing; requests in flight finish under the old config; queued
//! deliveries of a removed target become dead letters, of a changed target use the new one.

mod common;

use common::*;
use std::time::{Duration, Instant};

fn yaml(routes: &str) -> String {
    format!(
        "server: {{ listen: [\"127.0.0.1:0\"] }}\nadmin: {{ listen: \"127.0.0.1:0\" }}\nstorage: {{ path: data }}\nroutes:\n{routes}"
    )
}

fn route(name: &str, mode: &str, targets: &str) -> String {
    format!("  - {{ name: {name}, path: /{name}, mode: {mode}, verify: {{ bearer: {{ secret: \"t0k-secret\" }} }}, targets: [{targets}] }}\n")
}

fn req(path: &str) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    post(path, &[("authorization", "Bearer t0k-secret")], b"{}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_through_the_admin_api_and_rollback_on_error() {
    let rx = TestReceiver::start().await;
    let t = format!("{{ name: t, url: \"{}\" }}", rx.url("/x"));
    let gw = start_gateway(&yaml(&route("a", "sync", &t)), |_| {}).await;
    assert_eq!(plain(gw.addr, req("/a")).await.status, 200);
    let (_, before) = admin_get(gw.admin, "/api/v1/config").await;

    write_config(gw.dir.path(), &yaml(&route("b", "sync", &t)));
    let (st, v) = admin_post(gw.admin, "/api/v1/reload", "").await;
    assert_eq!(st, 200, "{v}");
    assert!(
        v["result"] == "reloaded" || v["result"] == "unchanged",
        "{v}"
    );
    assert_eq!(plain(gw.addr, req("/b")).await.status, 200);
    assert_eq!(plain(gw.addr, req("/a")).await.status, 404);
    let (_, after) = admin_get(gw.admin, "/api/v1/config").await;
    assert_ne!(before["version"]["hash"], after["version"]["hash"]);
    assert_eq!(after["content"]["routes"][0]["name"], "b");
    assert!(
        !after.to_string().contains("t0k-secret"),
        "secret in /api/v1/config"
    );

    // An invalid file: 400 with FILE:LINE:COL, and the running config stays.
    write_config(
        gw.dir.path(),
        &format!("{}    bogus: 1\n", yaml(&route("c", "sync", &t))),
    );
    let (st, v) = admin_post(gw.admin, "/api/v1/reload", "").await;
    assert_eq!(st, 400);
    let err = v["error"].as_str().unwrap();
    assert!(err.contains("routes.yaml:6:5: "), "{err}");
    assert_eq!(plain(gw.addr, req("/b")).await.status, 200);
    assert_eq!(plain(gw.addr, req("/c")).await.status, 404);
    let m = plain(
        gw.admin,
        http::Request::get("/metrics")
            .body(Default::default())
            .unwrap(),
    )
    .await;
    assert!(metrics_text(&m.body).contains(r#"hookgate_reloads_total{result="error"}"#));
    gw.gw.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_file_is_picked_up_by_itself() {
    let rx = TestReceiver::start().await;
    let t = format!("{{ name: t, url: \"{}\" }}", rx.url("/x"));
    let gw = start_gateway(&yaml(&route("a", "sync", &t)), |_| {}).await;
    // Replace the file by rename, as editors and ConfigMaps do.
    let tmp = gw.dir.path().join(".routes.yaml.tmp");
    std::fs::write(
        &tmp,
        yaml(&format!(
            "{}{}",
            route("a", "sync", &t),
            route("fresh", "sync", &t)
        )),
    )
    .unwrap();
    std::fs::rename(&tmp, gw.dir.path().join("routes.yaml")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while plain(gw.addr, req("/fresh")).await.status != 200 {
        assert!(Instant::now() < deadline, "file change never applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.gw.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_finish_under_the_old_config() {
    let rx = TestReceiver::start().await;
    rx.delay_ms.store(800, std::sync::atomic::Ordering::SeqCst);
    let t = format!("{{ name: t, url: \"{}\" }}", rx.url("/x"));
    let gw = start_gateway(&yaml(&route("slow", "sync", &t)), |_| {}).await;
    let addr = gw.addr;
    let inflight = tokio::spawn(async move { plain(addr, req("/slow")).await });
    rx.wait_for(1, 5).await;
    write_config(gw.dir.path(), &yaml(&route("other", "sync", &t)));
    let (st, _) = admin_post(gw.admin, "/api/v1/reload", "").await;
    assert_eq!(st, 200);
    assert_eq!(plain(gw.addr, req("/slow")).await.status, 404);
    assert_eq!(inflight.await.unwrap().status, 200);
    gw.gw.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_deliveries_follow_the_new_config() {
    let old_rx = TestReceiver::start().await;
    old_rx
        .status
        .store(503, std::sync::atomic::Ordering::SeqCst);
    let new_rx = TestReceiver::start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let targets = format!(
        "{{ name: moves, url: \"{}\", retry: {{ initial: 50ms, max_delay: 100ms }} }}, {{ name: goes, url: \"http://{closed}/\" }}",
        old_rx.url("/old")
    );
    let gw = start_gateway(&yaml(&route("q", "async", &targets)), |_| {}).await;
    for _ in 0..3 {
        assert_eq!(plain(gw.addr, req("/q")).await.status, 202);
    }
    old_rx.wait_for(3, 10).await;
    // `moves` now points elsewhere; `goes` is removed.
    let moved = format!(
        "{{ name: moves, url: \"{}\", retry: {{ initial: 50ms, max_delay: 100ms }} }}",
        new_rx.url("/new")
    );
    write_config(gw.dir.path(), &yaml(&route("q", "async", &moved)));
    let (st, v) = admin_post(gw.admin, "/api/v1/reload", "").await;
    assert_eq!(st, 200, "{v}");
    new_rx.wait_for(3, 10).await;
    let (_, dead) = admin_get(gw.admin, "/api/v1/dead-letters?target=q/goes").await;
    assert_eq!(dead["dead_letters"].as_array().unwrap().len(), 3, "{dead}");
    gw.gw.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_running_binary() {
    use std::process::{Command, Stdio};
    let rx = TestReceiver::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let t = format!("{{ name: t, url: \"{}\" }}", rx.url("/x"));
    let conf = |r: &str| {
        format!("server: {{ listen: [\"127.0.0.1:{port}\"] }}\nadmin: {{ listen: \"127.0.0.1:{admin}\" }}\nroutes:\n{r}")
    };
    let path = write_config(dir.path(), &conf(&route("a", "sync", &t)));
    let mut child = Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["run", "-c"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Written in place (no rename) and announced with SIGHUP.
    std::fs::write(&path, conf(&route("hup", "sync", &t))).unwrap();
    Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while plain(addr, req("/hup")).await.status != 200 {
        assert!(Instant::now() < deadline, "SIGHUP reload never applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP must not stop the process"
    );
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_continuous_traffic_lose_nothing() {
    let rx = TestReceiver::start().await;
    let conf = |version: u32| {
        yaml(&format!(
            "  - {{ name: live, path: /live, mode: sync, verify: {{ bearer: {{ secret: \"t0k-secret\" }} }}, targets: [{{ name: t, url: \"{}\", headers: {{ set: {{ X-Version: \"{version}\" }} }} }}] }}\n",
            rx.url("/x")
        ))
    };
    let gw = start_gateway(&conf(0), |_| {}).await;
    let addr = gw.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0, 0);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let a = plain(addr, req("/live")).await;
                if a.status == 200 {
                    ok += 1;
                } else {
                    failed += 1;
                }
            }
            (ok, failed)
        })
    };
    for v in 1..=6 {
        write_config(gw.dir.path(), &conf(v));
        let (st, r) = admin_post(gw.admin, "/api/v1/reload", "").await;
        assert_eq!(st, 200, "{r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, failed) = traffic.await.unwrap();
    assert_eq!(failed, 0, "{failed} requests failed during reloads");
    assert!(ok > 10, "only {ok} requests went through");
    // Nothing lost: the target saw every request; the last ones carry the newest rule.
    assert_eq!(rx.count(), ok);
    assert_eq!(plain(addr, req("/live")).await.status, 200);
    assert_eq!(rx.last().headers["x-version"], "6");
    gw.gw.drain().await;
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_style_symlink_swap_is_picked_up() {
    use std::os::unix::fs::symlink;
    let rx = TestReceiver::start().await;
    let t = format!("{{ name: t, url: \"{}\" }}", rx.url("/x"));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Kubernetes' layout: routes.yaml -> ..data/routes.yaml, ..data -> ..v1 (a folder).
    std::fs::create_dir(d.join("..v1")).unwrap();
    std::fs::write(d.join("..v1/routes.yaml"), yaml(&route("a", "sync", &t))).unwrap();
    symlink("..v1", d.join("..data")).unwrap();
    symlink("..data/routes.yaml", d.join("routes.yaml")).unwrap();
    let loaded = hookgate::config::load(&d.join("routes.yaml")).unwrap();
    let gw = hookgate::app::Gateway::start(loaded.config).await.unwrap();
    let addr = gw.public_addrs[0];
    assert_eq!(plain(addr, req("/a")).await.status, 200);
    // The update: a new folder, a new ..data link beside it, renamed over the old one.
    std::fs::create_dir(d.join("..v2")).unwrap();
    std::fs::write(
        d.join("..v2/routes.yaml"),
        yaml(&route("swapped", "sync", &t)),
    )
    .unwrap();
    symlink("..v2", d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while plain(addr, req("/swapped")).await.status != 200 {
        assert!(Instant::now() < deadline, "symlink swap never applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.drain().await;
}
