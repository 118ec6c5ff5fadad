//! Media bytes: a content-addressed blob store under the data directory, and fetching media
//! by URL through the same address guard as webhooks.

use std::path::PathBuf;
use std::time::Duration;

use wagate_egress::{AddressGuard, EgressClient};

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    wagate_core::hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// Blobs named by the SHA-256 of their bytes (`<dir>/<first two hex digits>/<hex>`): the same
/// bytes are stored once, whichever messages carry them. Written to a temporary file and renamed,
/// so a blob is whole or absent.
#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
}

impl BlobStore {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn path(&self, sha256: &str) -> Option<PathBuf> {
        let valid = sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        valid.then(|| self.dir.join(&sha256[..2]).join(sha256))
    }

    /// Stores `bytes`; returns their hex SHA-256.
    pub async fn put(&self, bytes: &[u8]) -> std::io::Result<String> {
        let sha = sha256_hex(bytes);
        let path = self.path(&sha).expect("a SHA-256 in hex is a valid name");
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok(sha);
        }
        let parent = path.parent().expect("blobs live in a subdirectory");
        tokio::fs::create_dir_all(parent).await?;
        let tmp = parent.join(format!(".{sha}.{}.tmp", rand::random::<u64>()));
        tokio::fs::write(&tmp, bytes).await?;
        if let Err(e) = tokio::fs::rename(&tmp, &path).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        Ok(sha)
    }

    /// The bytes of the blob `sha256`, if stored.
    pub async fn get(&self, sha256: &str) -> std::io::Result<Option<Vec<u8>>> {
        let Some(path) = self.path(sha256) else { return Ok(None) };
        match tokio::fs::read(&path).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Why media could not be fetched: `code` is the message error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchError {
    pub code: &'static str,
    pub message: String,
}

/// Fetches media by URL under the address guard, at most `max_bytes`.
#[derive(Clone)]
pub struct MediaFetcher {
    client: EgressClient,
    max_bytes: usize,
}

impl MediaFetcher {
    pub fn new(allow_private: bool, max_bytes: usize) -> Self {
        Self { client: EgressClient::new(AddressGuard::new(allow_private), Duration::from_secs(60), "wagate"), max_bytes }
    }

    /// The bytes at `url` and their `Content-Type`.
    pub async fn fetch(&self, url: &str) -> Result<(Vec<u8>, Option<String>), FetchError> {
        let unreachable = |message: String| FetchError { code: "media_unreachable", message };
        let url = wagate_egress::Url::parse(url).map_err(|_| unreachable("not a valid URL".into()))?;
        let request = self.client.request(reqwest::Method::GET, &url).map_err(|e| unreachable(e.to_string()))?;
        let mut res = request.send().await.map_err(|e| unreachable(wagate_egress::describe(&e)))?;
        if !res.status().is_success() {
            return Err(unreachable(format!("the media URL answered HTTP {}", res.status().as_u16())));
        }
        let too_large = || FetchError { code: "media_too_large", message: format!("the media is larger than {} bytes", self.max_bytes) };
        if res.content_length().is_some_and(|n| n > self.max_bytes as u64) {
            return Err(too_large());
        }
        let content_type = res
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned())
            .filter(|v| !v.is_empty());
        let mut bytes = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(|e| unreachable(wagate_egress::describe(&e)))? {
            if bytes.len() + chunk.len() > self.max_bytes {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok((bytes, content_type))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn blobs_are_stored_once_by_their_hash() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::new(dir.path().join("media"));
        let sha = blobs.put(b"hello").await.unwrap();
        assert_eq!(sha, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
        assert_eq!(blobs.put(b"hello").await.unwrap(), sha);
        assert_eq!(blobs.get(&sha).await.unwrap().as_deref(), Some(&b"hello"[..]));
        assert_eq!(blobs.get(&"0".repeat(64)).await.unwrap(), None);
        assert_eq!(blobs.get("../../etc/passwd").await.unwrap(), None, "only hashes name blobs");
    }

    #[tokio::test]
    async fn private_addresses_are_refused_unless_allowed() {
        let fetcher = MediaFetcher::new(false, 1024);
        let err = fetcher.fetch("http://127.0.0.1:9/a.png").await.unwrap_err();
        assert_eq!(err.code, "media_unreachable");
        let err = fetcher.fetch("ftp://example.com/a.png").await.unwrap_err();
        assert_eq!(err.code, "media_unreachable");
    }
}
