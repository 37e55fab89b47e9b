//! A worker: takes `resize` tasks assigned to its session, reports progress, honours
//! cancellation, and completes or fails each by the handler's result.
//!
//! ```sh
//! CONCLAVE_ENDPOINTS=http://127.0.0.1:7001,http://127.0.0.1:7002 CONCLAVE_TOKEN=... \
//!   cargo run -p conclave-client --example worker
//! ```

use std::time::Duration;

use conclave_client::{
    Client, Session, SessionCreate, SessionOptions, TaskContext, TaskFailure, WorkerOptions,
};
use serde_json::{json, Value};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), conclave_client::Error> {
    let client = client()?;
    let create = SessionCreate {
        name: "resizer".into(),
        capabilities: Some(vec!["images".into()]),
        capacity: Some(1),
        ttl_ms: Some(15_000),
        ..SessionCreate::default()
    };
    let session = Session::create(&client, &create, SessionOptions::default()).await?;
    println!("session {} waiting for tasks", session.id());
    let options = WorkerOptions {
        wait_ms: 20_000,
        ..WorkerOptions::default()
    };
    let report = session.work(options, handle).await;
    println!("worker stopped: {report:?}");
    session.close().await
}

/// Pretends to resize an image in ten steps.
async fn handle(task: TaskContext) -> Result<Value, TaskFailure> {
    let Some(image) = task.payload()["image"].as_str().map(str::to_owned) else {
        return Err(TaskFailure::permanent("no image in the payload"));
    };
    for step in 1..=10 {
        tokio::select! {
            _ = task.cancelled() => return Err("cancelled".into()),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        task.set_progress(json!({"image": image, "percent": step * 10}));
    }
    Ok(json!({"image": image, "resized": true}))
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
