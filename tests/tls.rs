//! TLS termination: certificate swap without dropping connections, SNI folders.

mod common;

use common::*;
use std::time::{Duration, Instant};

fn yaml(tls: &str, target: &str) -> String {
    format!(
        r#"server:
  listen: ["127.0.0.1:0"]
  tls: {tls}
admin: {{ listen: "127.0.0.1:0" }}
routes:
  - name: open
    path: /in
    mode: sync
    verify: {{ none: true }}
    targets: [{{ name: t, url: "{target}" }}]
"#
    )
}

async fn peer_cert(
    addr: std::net::SocketAddr,
    trusted: &[rustls_pki_types::CertificateDer<'static>],
    sni: &str,
) -> Vec<u8> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let cfg = client_tls(trusted, &[b"http/1.1"]);
    let s = tokio_rustls::TlsConnector::from(cfg)
        .connect(
            rustls_pki_types::ServerName::try_from(sni.to_owned()).unwrap(),
            tcp,
        )
        .await
        .unwrap();
    s.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_swap_reaches_new_connections_and_spares_open_ones() {
    let rx = TestReceiver::start().await;
    let mut first = None;
    let gw = start_gateway(&yaml("{ cert: gw.crt, key: gw.key }", &rx.url("/")), |d| {
        first = Some(write_cert(d, "gw"))
    })
    .await;
    let first = first.unwrap();

    // An open keep-alive connection on the first certificate.
    let tls = client_tls(std::slice::from_ref(&first), &[b"http/1.1"]);
    let mut old = H1::over(tls_connect(gw.addr, tls).await).await;
    assert_eq!(old.send(post("/in", &[], b"1")).await.unwrap().status, 200);

    // Renewal: a new pair written in place. A half-written or mismatched pair is ignored.
    std::fs::write(gw.dir.path().join("gw.key"), "not a key").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let second = write_cert(tmp.path(), "new");
    std::fs::copy(tmp.path().join("new.crt"), gw.dir.path().join("gw.crt")).unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let both = [first.clone(), second.clone()];
    assert_eq!(
        peer_cert(gw.addr, &both, "localhost").await,
        first.to_vec(),
        "a broken pair must not be used"
    );

    std::fs::copy(tmp.path().join("new.key"), gw.dir.path().join("gw.key")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if peer_cert(gw.addr, &both, "localhost").await == second.to_vec() {
            break;
        }
        assert!(Instant::now() < deadline, "new certificate never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The connection opened before the swap still works.
    assert_eq!(old.send(post("/in", &[], b"2")).await.unwrap().status, 200);
    assert_eq!(rx.count(), 2);
    gw.gw.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_folder_is_chosen_by_sni() {
    let rx = TestReceiver::start().await;
    let mut certs = Vec::new();
    let gw = start_gateway(&yaml("{ certs: tls/ }", &rx.url("/")), |d| {
        let dir = d.join("tls");
        std::fs::create_dir(&dir).unwrap();
        for name in ["a.example", "b.example", "default"] {
            let g =
                rcgen::generate_simple_self_signed(vec![name.to_owned(), "localhost".to_owned()])
                    .unwrap();
            std::fs::write(dir.join(format!("{name}.crt")), g.cert.pem()).unwrap();
            std::fs::write(
                dir.join(format!("{name}.key")),
                g.signing_key.serialize_pem(),
            )
            .unwrap();
            certs.push(g.cert.der().clone());
        }
    })
    .await;
    assert_eq!(
        peer_cert(gw.addr, &certs, "a.example").await,
        certs[0].to_vec()
    );
    assert_eq!(
        peer_cert(gw.addr, &certs, "b.example").await,
        certs[1].to_vec()
    );
    assert_eq!(
        peer_cert(gw.addr, &certs, "localhost").await,
        certs[2].to_vec()
    );
    gw.gw.drain().await;
}
