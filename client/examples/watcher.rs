//! Prints every KV event under a prefix, resuming across node failures; resumes
//! from an id given on the command line.
//!
//! ```sh
//! CONCLAVE_ENDPOINTS=http://127.0.0.1:7001,http://127.0.0.1:7002 CONCLAVE_TOKEN=... \
//!   cargo run -p conclave-client --example watcher -- jobs/ [after-id]
//! ```

use conclave_client::{Client, Error, WatchOptions, WatchStart};
use futures_util::StreamExt;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let prefix = args.next().unwrap_or_default();
    let start = match args.next() {
        Some(id) => WatchStart::After(id),
        None => WatchStart::Now,
    };
    let options = WatchOptions {
        types: Some("kv".into()),
        prefix: (!prefix.is_empty()).then_some(prefix),
        start,
        ..WatchOptions::default()
    };
    let mut events = client()?.watch(options);
    while let Some(item) = events.next().await {
        match item {
            Ok(event) => println!(
                "{} {} {} = {}",
                event.id.as_deref().unwrap_or("-"),
                event.event_type,
                event.field("key"),
                event.field("value")
            ),
            // Fell behind the node's history: the stream resumes from its last id.
            Err(Error::Lagged { last_event_id }) => eprintln!("lagged after {last_event_id:?}"),
            // 410 compacted or a refusal: read the state again, then watch from it.
            Err(error) => {
                eprintln!(
                    "watch ended: {error} (last event {:?})",
                    events.last_event_id()
                );
                return Err(error);
            }
        }
    }
    Ok(())
}

/// A client of `CONCLAVE_ENDPOINTS` (default one local node) with `CONCLAVE_TOKEN`.
fn client() -> Result<Client, Error> {
    let endpoints =
        std::env::var("CONCLAVE_ENDPOINTS").unwrap_or_else(|_| "http://127.0.0.1:7000".into());
    let mut builder = Client::builder().endpoints(endpoints.split(',').map(str::to_owned));
    if let Ok(token) = std::env::var("CONCLAVE_TOKEN") {
        builder = builder.token(token);
    }
    builder.build()
}
