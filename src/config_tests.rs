//! Unit tests of `config`: defaults, derived addresses, refusals.

use super::*;

#[test]
fn single_node_defaults_resolve() {
    let node = Config::single_node(7000).resolve(7000).unwrap();
    assert_eq!(node.listen_addr.to_string(), "127.0.0.1:7000");
    assert_eq!(node.initial_members.len(), 1);
    assert_eq!(node.initial_members[&1].addr, "127.0.0.1:7000");
    assert_eq!(node.data_dir, PathBuf::from("conclave-data"));
    assert_eq!(node.raft.heartbeat_interval, 100);
}

#[test]
fn cluster_file_derives_addresses_from_the_base_port() {
    let config: Config = toml::from_str(
        "node_id = 2\ncluster_secret = \"0123456789abcdef\"\ninitial_members = [1, 2, 3]\n[member_addrs]\n3 = \"10.0.0.3:9\"\n",
    )
    .unwrap();
    let node = config.resolve(8000).unwrap();
    assert_eq!(node.listen_addr.to_string(), "127.0.0.1:8002");
    assert_eq!(node.initial_members[&1].addr, "127.0.0.1:8001");
    assert_eq!(node.initial_members[&2].addr, "127.0.0.1:8002");
    assert_eq!(node.initial_members[&3].addr, "10.0.0.3:9");
    // Peer listeners: the client port + 1000 unless given.
    assert_eq!(node.raft_listen_addr.to_string(), "127.0.0.1:9002");
    assert_eq!(node.initial_members[&1].raft_addr, "127.0.0.1:9001");
    assert_eq!(node.initial_members[&2].raft_addr, "127.0.0.1:9002");
    assert_eq!(node.initial_members[&3].raft_addr, "10.0.0.3:1009");
}

#[test]
fn explicit_peer_addresses_win_and_must_differ_from_the_client_one() {
    let config: Config = toml::from_str(
        "node_id = 1\ncluster_secret = \"0123456789abcdef\"\ninitial_members = [1, 2]\n\
         raft_listen_addr = \"127.0.0.1:5001\"\n[member_raft_addrs]\n2 = \"10.0.0.2:5002\"\n",
    )
    .unwrap();
    let node = config.resolve(7000).unwrap();
    assert_eq!(node.initial_members[&1].raft_addr, "127.0.0.1:5001");
    assert_eq!(node.initial_members[&2].raft_addr, "10.0.0.2:5002");
    let same: Config = toml::from_str(
        "initial_members = [1]\nlisten_addr = \"127.0.0.1:7000\"\nraft_listen_addr = \"127.0.0.1:7000\"\n",
    )
    .unwrap();
    let error = same.resolve(7000).unwrap_err().to_string();
    assert!(error.contains("must differ"), "{error}");
}

#[test]
fn a_non_loopback_node_without_keys_refuses_to_run_open() {
    let open: Config =
        toml::from_str("initial_members = [1]\nlisten_addr = \"0.0.0.0:7000\"\n").unwrap();
    let error = open.clone().resolve(7000).unwrap_err().to_string();
    assert!(error.contains("not loopback"), "{error}");
    let mut forced = open;
    forced.auth.insecure_open = true;
    assert!(forced.resolve(7000).unwrap().auth.is_open());
    let required: Config =
        toml::from_str("initial_members = [1]\n[auth]\nrequired = true\n").unwrap();
    let error = required.resolve(7000).unwrap_err().to_string();
    assert!(error.contains("required"), "{error}");
}

#[test]
fn bad_configs_are_refused_with_a_reason() {
    let cases = [
        ("node_id = 0", "node_id"),
        ("initial_members = [1, 2]", "cluster_secret is required"),
        ("initial_members = [2, 3]", "must include this node"),
        ("initial_members = []", "cluster_secret is required"),
        ("cluster_secret = \"short\"", "at least 16"),
        (
            "initial_members = [1]\n[raft]\nelection_timeout_min_ms = 50",
            "raft",
        ),
        (
            "initial_members = [1]\n[limits]\nmax_body_bytes = 0",
            "max_body_bytes",
        ),
        (
            "initial_members = [1]\nlisten_addr = \"nowhere\"",
            "listen_addr",
        ),
    ];
    for (text, expected) in cases {
        let error = toml::from_str::<Config>(text)
            .unwrap()
            .resolve(7000)
            .unwrap_err();
        assert!(error.to_string().contains(expected), "{text}: {error}");
    }
    assert!(toml::from_str::<Config>("unknown_field = 1").is_err());
}

#[test]
fn the_clock_offset_endpoint_is_off_unless_the_debug_switch_is_set() {
    let off = Config::single_node(7000).resolve(7000).unwrap();
    assert!(!off.clock_offset_endpoint);
    let on =
        toml::from_str::<Config>("initial_members = [1]\n[debug]\nclock_offset_endpoint = true\n")
            .unwrap()
            .resolve(7000);
    if cfg!(feature = "test-switches") {
        assert!(on.unwrap().clock_offset_endpoint);
    } else {
        assert!(on.unwrap_err().to_string().contains("test-switches"));
    }
}

#[test]
fn a_build_without_test_switches_refuses_every_debug_switch() {
    for text in [
        "initial_members = [1]\n[debug]\ninject_bug = \"stale-reads\"\n",
        "initial_members = [1]\n[debug]\ninject_bug = \"unbounded-clock\"\n",
        "initial_members = [1]\n[debug]\nclock_offset_endpoint = true\n",
    ] {
        let config = toml::from_str::<Config>(text).unwrap();
        assert!(config.debug.admitted_by(true).is_ok(), "{text}");
        let refused = config.debug.admitted_by(false).unwrap_err();
        assert!(refused.contains("test-switches"), "{text}: {refused}");
        // This build's own answer is the same rule with its own flag.
        assert_eq!(
            config.clone().resolve(7000).is_ok(),
            crate::config::TEST_SWITCHES_BUILT,
            "{text}"
        );
    }
    let none = Config::single_node(7000);
    assert!(none.debug.admitted_by(false).is_ok());
}

#[test]
fn tls_needs_cert_key_and_ca_together_and_names_a_missing_file() {
    for text in [
        "initial_members = [1]\n[tls]\ncert = \"c.pem\"\n",
        "initial_members = [1]\n[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n",
        "initial_members = [1]\n[tls]\npeer_client_auth = true\n",
    ] {
        let error = toml::from_str::<Config>(text)
            .unwrap()
            .resolve(7000)
            .unwrap_err();
        assert!(
            error.to_string().contains("cert, key and ca together"),
            "{error}"
        );
    }
    let missing = "initial_members = [1]\n[tls]\ncert = \"/nonexistent/c.pem\"\n\
                   key = \"/nonexistent/k.pem\"\nca = \"/nonexistent/ca.pem\"\n";
    let error = toml::from_str::<Config>(missing)
        .unwrap()
        .resolve(7000)
        .unwrap_err();
    assert!(error.to_string().contains("/nonexistent/c.pem"), "{error}");
    assert!(Config::single_node(7000)
        .resolve(7000)
        .unwrap()
        .tls
        .is_none());
}
