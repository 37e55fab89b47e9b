//! Binary downloads to a file (`snapshot save`'s backup, `log export`'s export):
//! the body is streamed to `FILE.partial` as it arrives, with progress on stderr
//! (`super::progress`: a bar on a terminal, else a line every MiB or second, and a
//! final line), and renamed to `FILE` only once
//! the caller has checked what it holds, so a failed or cut download never leaves
//! a file under the name asked for.
//!
//! Must not depend on the server's internals; the caller decodes the file.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;

use super::progress::{Progress, MIB};
use super::Remote;

/// A download written to its `.partial` file, not yet under its final name.
pub struct Partial {
    pub path: PathBuf,
    target: PathBuf,
    pub bytes: u64,
}

impl Partial {
    /// Renames it to the name asked for.
    pub fn keep(self) -> anyhow::Result<()> {
        std::fs::rename(&self.path, &self.target)
            .with_context(|| format!("renaming to {}", self.target.display()))
    }

    /// Removes it (what it holds was refused).
    pub fn discard(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// `FILE` + `.partial`, beside it.
fn partial_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// `GET {endpoint}{path}` streamed into `file`'s `.partial` file, with progress on
/// stderr. A refusal is the API's `status code: message`.
pub fn download(remote: &Remote, path: &str, file: &Path) -> anyhow::Result<Partial> {
    let http = remote.http()?;
    let first = remote.endpoints().next().unwrap_or_default();
    let url = format!("{}{path}", remote.url_of(first));
    let partial = partial_path(file);
    super::runtime()?.block_on(async {
        let mut response = http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.bytes().await.unwrap_or_default();
            let error = conclave_client::Error::from_answer(status.as_u16(), &body);
            anyhow::bail!("GET {url}: {error}");
        }
        let mut out = std::fs::File::create(&partial)
            .with_context(|| format!("creating {}", partial.display()))?;
        let started = Instant::now();
        let progress = Progress::bytes(response.content_length());
        let mut bytes = 0u64;
        let written: anyhow::Result<()> = async {
            while let Some(chunk) = response.chunk().await.context("receiving the body")? {
                out.write_all(&chunk)
                    .with_context(|| format!("writing {}", partial.display()))?;
                bytes += chunk.len() as u64;
                progress.received(bytes);
            }
            out.sync_all()
                .with_context(|| format!("syncing {}", partial.display()))
        }
        .await;
        if let Err(error) = written {
            let _ = std::fs::remove_file(&partial);
            return Err(error);
        }
        progress.finish(&format!(
            "received {bytes} bytes ({:.1} MiB) in {:.1} s",
            bytes as f64 / MIB as f64,
            started.elapsed().as_secs_f64()
        ));
        Ok(Partial {
            path: partial.clone(),
            target: file.to_owned(),
            bytes,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_partial_file_is_beside_the_target() {
        assert_eq!(
            partial_path(Path::new("/tmp/b/backup.bin")),
            PathBuf::from("/tmp/b/backup.bin.partial")
        );
    }
}
