//! Holds a lock while doing guarded work, and stops the moment it is lost.
//!
//! ```sh
//! CONCLAVE_ENDPOINTS=http://127.0.0.1:7001,http://127.0.0.1:7002 CONCLAVE_TOKEN=... \
//!   cargo run -p conclave-client --example lock_holder -- db-migration
//! ```

use std::time::Duration;

use conclave_client::{Client, KvPut, Session, SessionCreate, SessionOptions, SessionState};
use serde_json::json;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), conclave_client::Error> {
    let name = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "example-lock".into());
    let client = client()?;
    let create = SessionCreate {
        name: "lock-holder".into(),
        capacity: Some(0), // takes no tasks
        ttl_ms: Some(10_000),
        ..SessionCreate::default()
    };
    let session = Session::create(&client, &create, SessionOptions::default()).await?;
    let guard = session.lock(&name).await?;
    println!(
        "holding {name} with fencing token {}",
        guard.fencing_token()
    );
    for step in 0..10 {
        // Do nothing that needs the lock once the lease is in doubt.
        if session.state() != SessionState::Live {
            println!("session in {:?}: stopping", session.state());
            break;
        }
        // Writes the lock protects carry its guard: a stale holder's are refused.
        let guarded = KvPut {
            guard: Some(guard.guard()),
            ..KvPut::default()
        };
        let (key, value) = (format!("{name}/progress"), json!(step));
        tokio::select! {
            written = client.kv_put_with(&key, &value, &guarded) => {
                println!("step {step}: version {}", written?.version);
            }
            loss = guard.lost() => {
                println!("lost the lock: {loss:?}");
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    guard.release().await?;
    session.close().await
}

/// A client of `CONCLAVE_ENDPOINTS` (default one local node) with `CONCLAVE_TOKEN`.
fn client() -> Result<Client, conclave_client::Error> {
    let endpoints =
        std::env::var("CONCLAVE_ENDPOINTS").unwrap_or_else(|_| "http://127.0.0.1:7000".into());
    let mut builder = Client::builder().endpoints(endpoints.split(',').map(str::to_owned));
    if let Ok(token) = std::env::var("CONCLAVE_TOKEN") {
        builder = builder.token(token);
    }
    builder.build()
}
