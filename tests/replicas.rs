//! Scale-out: three gateway processes on one PostgreSQL. Webhooks are spread across them and
//! one replica is killed with SIGKILL mid-stream: every acknowledged event is still delivered
//! (its leases expire and the survivors take over), and duplicates stay bounded by the leases
//! that were in flight. Runs when `HOOKGATE_TEST_DATABASE_URL` is set (`.ci/run` sets it).

mod common;

use common::*;
use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_one_killed_nothing_lost() {
    let Some(url) = std::env::var("HOOKGATE_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        eprintln!("HOOKGATE_TEST_DATABASE_URL is not set: the multi-replica test is skipped");
        return;
    };
    let schema = format!("hg_replicas_{}_{}", std::process::id(), fastrand::u32(..));
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    let db = format!("{url}{sep}options=-c%20search_path%3D{schema}");

    let rx = TestReceiver::start().await;
    rx.delay_ms.store(20, std::sync::atomic::Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let mut procs: Vec<(Child, u16, u16)> = Vec::new();
    for i in 0..3 {
        let (port, admin) = (free_port(), free_port());
        let cfg = dir.path().join(format!("r{i}.yaml"));
        std::fs::write(
            &cfg,
            format!(
                r#"server: {{ listen: ["127.0.0.1:{port}"] }}
admin: {{ listen: "127.0.0.1:{admin}" }}
storage: {{ backend: postgres, postgres: {{ url: "{db}", pool: 8 }} }}
routes:
  - name: gh
    path: /gh
    verify: {{ bearer: {{ secret: s }} }}
    targets:
      - {{ name: sink, url: "{u}", timeout: 1s, concurrency: 16, retry: {{ initial: 50ms, max_delay: 500ms }} }}
"#,
                u = rx.url("/sink")
            ),
        )
        .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .args(["run", "-c"])
            .arg(&cfg)
            .env("HOOKGATE_REPLICA", format!("r{i}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        procs.push((child, port, admin));
    }
    for (_, _, admin) in &procs {
        wait_ready(*admin).await;
    }

    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let ports: Vec<u16> = procs.iter().map(|p| p.1).collect();
    let sender = |from: usize, n: usize, ports: Vec<u16>| {
        let acked = acked.clone();
        tokio::spawn(async move {
            for i in from..from + n {
                let port = ports[i % ports.len()];
                let Ok(s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
                    continue;
                };
                let mut c = H1::over(s).await;
                let body = format!("{{\"n\":{i}}}");
                if let Ok(a) = c
                    .send(post(
                        "/gh",
                        &[("authorization", "Bearer s")],
                        body.as_bytes(),
                    ))
                    .await
                {
                    if a.status == 202 {
                        let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
                        acked
                            .lock()
                            .unwrap()
                            .push(v["id"].as_str().unwrap().to_owned());
                    }
                }
            }
        })
    };
    let load: Vec<_> = (0..4)
        .map(|k| sender(k * 1000, 150, ports.clone()))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < 200 {
        assert!(Instant::now() < deadline, "load never got going");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // SIGKILL one replica mid-stream, deliveries in flight included.
    procs[0].0.kill().unwrap();
    procs[0].0.wait().unwrap();
    for l in load {
        l.await.unwrap();
    }
    let acked: HashSet<String> = acked.lock().unwrap().iter().cloned().collect();
    assert!(acked.len() >= 400, "only {} acknowledged", acked.len());

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got: Vec<String> = rx
            .all()
            .iter()
            .map(|r| r.headers["hookgate-event-id"].to_str().unwrap().to_owned())
            .collect();
        let seen: HashSet<&String> = got.iter().collect();
        let missing = acked.iter().filter(|id| !seen.contains(id)).count();
        if missing == 0 {
            let dup = got.len() - seen.len();
            eprintln!(
                "acknowledged {}, delivered {} requests, {dup} duplicates",
                acked.len(),
                got.len()
            );
            // Only leases held by the killed replica can repeat: at most the fleet's concurrency.
            assert!(dup <= 16, "{dup} duplicates");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} acknowledged events never delivered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Any replica shows the fleet's shared state: the queue drains to zero, events that were
    // committed but never acknowledged (the kill) included.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, v) = admin_get(
            format!("127.0.0.1:{}", procs[1].2).parse().unwrap(),
            "/api/v1/routes",
        )
        .await;
        let t = &v["routes"][0]["targets"][0];
        if t["pending"] == 0 {
            assert!(
                t["delivered"].as_u64().unwrap() >= acked.len() as u64,
                "{v}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "queue never drained: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (mut c, _, _) in procs.into_iter().skip(1) {
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        assert_eq!(c.wait().unwrap().code(), Some(0));
    }
    let _ = client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_away_means_503_then_recovers_by_itself() {
    let Some(url) = std::env::var("HOOKGATE_TEST_DATABASE_URL")
        .ok()
        .filter(|u| u.contains("127.0.0.1:5432"))
    else {
        return;
    };
    let schema = format!("hg_away_{}_{}", std::process::id(), fastrand::u32(..));
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();
    // The gateway talks to a port where, at first, nothing listens.
    let port = free_port();
    let sep = if url.contains('?') { '&' } else { '?' };
    let db = format!(
        "{}{sep}options=-c%20search_path%3D{schema}",
        url.replace("127.0.0.1:5432", &format!("127.0.0.1:{port}"))
    );
    let rx = TestReceiver::start().await;
    let yaml = format!(
        "server: {{ listen: [\"127.0.0.1:0\"] }}\nadmin: {{ listen: \"127.0.0.1:0\" }}\nstorage: {{ backend: postgres, postgres: {{ url: \"{db}\" }} }}\nroutes:\n  - {{ name: gh, path: /gh, verify: {{ bearer: {{ secret: s }} }}, targets: [{{ name: t, url: \"{}\" }}] }}\n",
        rx.url("/t")
    );
    let gw = start_gateway(&yaml, |_| {}).await;
    let readyz = |a: std::net::SocketAddr| async move {
        plain(
            a,
            http::Request::get("/readyz")
                .header("host", "x")
                .body(Default::default())
                .unwrap(),
        )
        .await
        .status
    };
    assert_eq!(readyz(gw.admin).await, 503);
    let a = plain(
        gw.addr,
        post("/gh", &[("authorization", "Bearer s")], b"{}"),
    )
    .await;
    assert_eq!(a.status, 503, "never a 2xx without a commit");
    assert_eq!(a.headers["retry-after"], "5");

    // The database comes back (a forwarding proxy appears on that port).
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut out) = tokio::net::TcpStream::connect("127.0.0.1:5432").await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                }
            });
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while readyz(gw.admin).await != 200 {
        assert!(Instant::now() < deadline, "never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let a = plain(
        gw.addr,
        post("/gh", &[("authorization", "Bearer s")], b"{}"),
    )
    .await;
    assert_eq!(a.status, 202);
    rx.wait_for(1, 10).await;
    gw.gw.drain().await;
    let _ = client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_applies_the_schema_once() {
    let Some(url) = std::env::var("HOOKGATE_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        return;
    };
    let schema = format!("hg_migrate_{}_{}", std::process::id(), fastrand::u32(..));
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    let db = format!("{url}{sep}options=-c%20search_path%3D{schema}");
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &format!("storage: {{ backend: postgres, postgres: {{ url: \"{db}\" }} }}\nroutes: []\n"),
    );
    let run = || {
        let out = Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .args(["migrate", "-c"])
            .arg(&cfg)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = run();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("applied migrations [1, 2, 3, 4]"), "{out}");
    let (code, out) = run();
    assert_eq!((code, out.trim()), (Some(0), "schema is up to date"));
    let _ = client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await;
}
