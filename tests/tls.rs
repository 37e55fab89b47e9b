//! TLS (issue #11): a cluster whose client API and peer listener speak HTTPS, with
//! mutual TLS between peers, the certificates made by a CA generated here. Real
//! processes; the harness trusts only that CA.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Cluster, Options};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
};
use serde_json::{json, Value};

/// A CA and one certificate for 127.0.0.1 it signed, written as PEM files.
struct Pki {
    ca_pem: String,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    /// `cert` + `key`, as a client identity.
    identity_pem: String,
}

fn pki(dir: &Path, name: &str) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("{name} test CA"));
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let write = |file: &str, text: &str| {
        let path = dir.join(format!("{name}-{file}"));
        std::fs::write(&path, text).unwrap();
        path
    };
    Pki {
        ca_pem: ca.pem(),
        ca: write("ca.pem", &ca.pem()),
        cert: write("cert.pem", &cert.pem()),
        key: write("key.pem", &key.serialize_pem()),
        identity_pem: format!("{}\n{}", cert.pem(), key.serialize_pem()),
    }
}

/// A client trusting only `ca_pem`, presenting `identity` if given.
fn client(ca_pem: &str, identity: Option<&str>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(10));
    if let Some(identity) = identity {
        builder = builder.identity(reqwest::Identity::from_pem(identity.as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_serves_clients_and_peers_over_tls_with_mutual_peer_auth() {
    let _serial = common::serial().await;
    let certs = tempfile::tempdir().unwrap();
    let ours = pki(certs.path(), "ours");
    let rogue = pki(certs.path(), "rogue");
    let tls = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\npeer_client_auth = true\n",
        ours.cert.display(),
        ours.key.display(),
        ours.ca.display()
    );
    // Electing a leader and replicating already needs the peers' mutual TLS.
    let cluster = Cluster::start(
        3,
        Options {
            extra_toml: tls,
            tls_ca_pem: Some(ours.ca_pem.clone().into_bytes()),
            ..Options::default()
        },
    )
    .await;
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    assert!(cluster.url(follower).starts_with("https://"));
    // A write through a follower is forwarded to the leader over HTTPS.
    let (status, body) = common::put(
        &cluster.http,
        &cluster.url(follower),
        "over-tls",
        json!({"value": "secret"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, read) = common::get(&cluster.http, &cluster.url(leader), "over-tls").await;
    assert_eq!((status, &read["value"]), (200, &json!("secret")), "{read}");

    // The CLI speaks HTTPS with --ca: a write through the follower, read back
    // from the leader, the status; without --ca, or with another CA, it fails.
    // `conclave ARGS --endpoint localhost:PORT-of-node [--ca CA]`: its exit code
    // and stdout.
    let run = |args: &[&str], node: u64, ca: Option<&Path>| {
        let at = format!("localhost:{}", cluster.node(node).port);
        let os = |a: &'static str| std::ffi::OsStr::new(a);
        let mut all: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
        all.extend([os("--endpoint"), std::ffi::OsStr::new(&at)]);
        if let Some(ca) = ca {
            all.extend([os("--ca"), ca.as_os_str()]);
        }
        let output = common::cli_output(&all, Some(common::admin_token()));
        let text = String::from_utf8_lossy(&output.stdout).to_string()
            + &String::from_utf8_lossy(&output.stderr);
        (output.status.code(), text)
    };
    let ca = Some(ours.ca.as_path());
    let (code, out) = run(&["kv", "put", "cli-over-tls", "yes"], follower, ca);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = run(&["kv", "get", "cli-over-tls", "--json"], leader, ca);
    assert_eq!(code, Some(0), "{out}");
    let read: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(read["value"], json!("yes"), "{out}");
    let (code, out) = run(&["status"], follower, ca);
    assert!(
        code == Some(0) && out.contains(&format!("leader {leader} ")),
        "{out}"
    );
    // The node took the connection and dropped the plain request unanswered: what
    // the CLI cannot tell from a lost answer (exit 4, indeterminate).
    let (code, out) = run(&["kv", "get", "cli-over-tls"], leader, None);
    assert_eq!(code, Some(4), "plain HTTP to a TLS node: {out}");
    let (code, out) = run(
        &["kv", "get", "cli-over-tls"],
        leader,
        Some(rogue.ca.as_path()),
    );
    assert_eq!(code, Some(3), "a CA that did not sign the node: {out}");

    // Plain HTTP to a TLS listener gets no answer.
    let plain = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{}/health", cluster.node(follower).port);
    assert!(plain.get(url).send().await.is_err());
    // A client that does not trust our CA refuses the node's certificate.
    let health = format!("{}/health", cluster.url(follower));
    assert!(client(&rogue.ca_pem, None)
        .get(&health)
        .send()
        .await
        .is_err());
    assert_eq!(
        client(&ours.ca_pem, None)
            .get(&health)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // The peer listener wants a client certificate signed by our CA.
    let vote = format!("{}/raft/vote", cluster.node(follower).raft_url());
    let rpc = |http: reqwest::Client| {
        http.post(vote.clone())
            .header("x-conclave-secret", common::SECRET)
            .header("x-conclave-target", follower.to_string())
            .body(vec![0xff, 0xff])
            .send()
    };
    assert!(
        rpc(client(&ours.ca_pem, None)).await.is_err(),
        "no client certificate"
    );
    let strange = client(&ours.ca_pem, Some(&rogue.identity_pem));
    assert!(rpc(strange).await.is_err(), "a certificate of another CA");
    // Ours is let in, and meets the usual checks (here: no cluster id, so refused).
    let admitted = rpc(client(&ours.ca_pem, Some(&ours.identity_pem)))
        .await
        .expect("a peer certificate of our CA is accepted");
    assert!(admitted.status().is_client_error(), "{}", admitted.status());
}
