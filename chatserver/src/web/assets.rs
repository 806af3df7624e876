//! The web client's files, embedded in the binary from `chatserver/web/`.
//! Adding a file to the client is one line in [`FILES`].

use sha2::{Digest, Sha256};

/// Path served, content type, contents.
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "/index.html",
        "text/html; charset=utf-8",
        include_bytes!("../../web/index.html"),
    ),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/app.js"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_bytes!("../../web/style.css"),
    ),
    (
        "/connection.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/connection.js"),
    ),
    (
        "/model.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/model.js"),
    ),
    (
        "/storage.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/storage.js"),
    ),
    (
        "/view.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/view.js"),
    ),
    (
        "/words.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/words.js"),
    ),
];

/// The page `/` serves.
const INDEX: &str = "/index.html";

/// One embedded file, with the validator browsers revalidate it by.
#[derive(Debug)]
pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static [u8],
    /// A strong ETag: the start of the contents' SHA-256, quoted.
    pub etag: String,
}

/// Every embedded file, hashed once at start-up.
#[derive(Debug)]
pub struct Assets {
    files: Vec<(&'static str, Asset)>,
}

impl Default for Assets {
    fn default() -> Self {
        let files = FILES
            .iter()
            .map(|&(path, content_type, body)| {
                let digest = Sha256::digest(body);
                let etag = format!("\"{}\"", hex::encode(&digest[..12]));
                (
                    path,
                    Asset {
                        content_type,
                        body,
                        etag,
                    },
                )
            })
            .collect();
        Self { files }
    }
}

impl Assets {
    /// The file at `path` (`/` is the index page).
    pub fn get(&self, path: &str) -> Option<&Asset> {
        let path = if path == "/" { INDEX } else { path };
        self.files
            .iter()
            .find(|(served, _)| *served == path)
            .map(|(_, asset)| asset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_served_with_a_type_and_a_distinct_etag() {
        let assets = Assets::default();
        assert!(assets.get("/").is_some());
        assert!(assets.get("/nope.js").is_none());
        let mut etags: Vec<_> = FILES
            .iter()
            .map(|(path, ..)| assets.get(path).unwrap().etag.clone())
            .collect();
        etags.sort();
        etags.dedup();
        assert_eq!(etags.len(), FILES.len());
    }
}
