//! The `/v1/connections` page cache: each page's JSON as served, and its gzip'd form made
//! once (on the first request that asks for gzip) and kept beside it, until the next store
//! write. A dashboard's viewers ask for the same first page; compressing ~90 KB again for
//! every one of them was most of the CPU of a cached answer.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::{Arc, OnceLock};

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;

/// At most this many pages are cached (then the cache starts over).
const MAX_ENTRIES: usize = 256;

/// At most this many bytes of plain JSON are cached (then the cache starts over): 256 pages of
/// `limit=1000` would be ~220 MB.
const MAX_BYTES: usize = 32 << 20;

/// One cached page.
#[derive(Debug)]
pub(crate) struct CachedPage {
    plain: Bytes,
    gzip: OnceLock<Bytes>,
}

impl CachedPage {
    pub(crate) fn new(plain: Bytes) -> CachedPage {
        CachedPage {
            plain,
            gzip: OnceLock::new(),
        }
    }

    /// The page gzip'd, compressed on the first call and kept.
    pub(crate) fn gzip(&self) -> &Bytes {
        self.gzip.get_or_init(|| gzip(&self.plain))
    }

    /// The response for a request with `headers`: gzip'd bytes (`Content-Encoding: gzip`,
    /// which the compression layer leaves alone) when the client takes gzip, else plain JSON.
    /// Either way `Vary: Accept-Encoding`.
    pub(crate) fn response(&self, headers: &HeaderMap) -> Response {
        let mut r = if accepts_gzip(headers) {
            let mut r = crate::http::json_bytes(StatusCode::OK, self.gzip().clone());
            r.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            r
        } else {
            crate::http::json_bytes(StatusCode::OK, self.plain.clone())
        };
        r.headers_mut()
            .insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        r
    }
}

/// gzip at the compression layer's level (fastest): the same size class as a fresh answer.
fn gzip(plain: &[u8]) -> Bytes {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(plain.len() / 8),
        flate2::Compression::fast(),
    );
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(plain);
    Bytes::from(enc.finish().unwrap_or_default())
}

/// Whether `Accept-Encoding` takes gzip (`gzip`, `x-gzip` or `*`, with a q-value above 0).
pub(crate) fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .filter_map(|q| q.trim().parse::<f32>().ok())
                .next()
                .unwrap_or(1.0);
            q > 0.0
                && (coding.eq_ignore_ascii_case("gzip")
                    || coding.eq_ignore_ascii_case("x-gzip")
                    || coding == "*")
        })
}

/// Pages by query string, and the store generation they belong to.
#[derive(Debug, Default)]
pub(crate) struct PageCache {
    /// Bumped by every store write that worked or stored events.
    generation: u64,
    pages: HashMap<String, Arc<CachedPage>>,
    bytes: usize,
    /// One build at a time per query: the misses that arrive while a page is being built
    /// wait for it instead of each running the same store query (50 clients asking for an
    /// uncached grouped page at 370k connections ran it 50 times at once).
    gates: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
}

impl PageCache {
    /// The page for `query`, and the generation to hand back to [`PageCache::put`].
    pub(crate) fn get(&self, query: &str) -> (Option<Arc<CachedPage>>, u64) {
        (self.pages.get(query).cloned(), self.generation)
    }

    /// Keep `page` for `query`, unless the store was written since `generation`.
    pub(crate) fn put(&mut self, query: &str, generation: u64, page: Arc<CachedPage>) {
        if self.generation != generation {
            return;
        }
        let size = page.plain.len();
        if size > MAX_BYTES {
            return;
        }
        if self.pages.len() >= MAX_ENTRIES || self.bytes + size > MAX_BYTES {
            self.pages.clear();
            self.bytes = 0;
        }
        if let Some(old) = self.pages.insert(query.to_owned(), page) {
            self.bytes -= old.plain.len();
        }
        self.bytes += size;
    }

    /// The gate to hold while building the page for `query` (then look in the cache again:
    /// the build waited for may have made it).
    pub(crate) fn gate(&mut self, query: &str) -> Arc<tokio::sync::Mutex<()>> {
        if self.gates.len() >= MAX_ENTRIES && !self.gates.contains_key(query) {
            // Gates held now stay valid for their holders; later misses get new ones.
            self.gates.clear();
        }
        self.gates.entry(query.to_owned()).or_default().clone()
    }

    /// Forget every page (the store changed).
    pub(crate) fn invalidate(&mut self) {
        self.generation += 1;
        self.pages.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decompress(b: &[u8]) -> Vec<u8> {
        use std::io::Read as _;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(b)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn the_kept_gzip_is_the_page_and_is_made_once() {
        let plain = Bytes::from(r#"{"items":[],"total":0,"next_cursor":null}"#.repeat(50));
        let page = CachedPage::new(plain.clone());
        let first = page.gzip().clone();
        assert_eq!(decompress(&first), plain);
        assert!(first.len() < plain.len() / 4);
        // Kept: the same allocation, not compressed again.
        assert_eq!(page.gzip().as_ptr(), first.as_ptr());
    }

    #[test]
    fn accept_encoding_is_read_with_q_values() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
            accepts_gzip(&m)
        };
        assert!(h("gzip"));
        assert!(h("gzip, deflate, br, zstd"));
        assert!(h("br;q=1.0, GZIP;q=0.5"));
        assert!(h("*"));
        assert!(!h("br"));
        assert!(!h("gzip;q=0"));
        assert!(!h("identity"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn a_write_drops_every_page_and_a_stale_page_is_not_kept() {
        let mut c = PageCache::default();
        let (none, g) = c.get("limit=1");
        assert!(none.is_none());
        c.put(
            "limit=1",
            g,
            Arc::new(CachedPage::new(Bytes::from_static(b"[1]"))),
        );
        assert!(c.get("limit=1").0.is_some());
        c.invalidate();
        assert!(c.get("limit=1").0.is_none());
        // Read before the write, finished after it: not cached.
        c.put(
            "limit=1",
            g,
            Arc::new(CachedPage::new(Bytes::from_static(b"[1]"))),
        );
        assert!(c.get("limit=1").0.is_none());
    }

    #[tokio::test]
    async fn concurrent_misses_of_one_query_share_one_gate() {
        let mut c = PageCache::default();
        let a = c.gate("limit=1");
        let b = c.gate("limit=1");
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c.gate("limit=2")));
        let held = a.lock().await;
        assert!(b.try_lock().is_err(), "a second build of the same page ran");
        drop(held);
        assert!(b.try_lock().is_ok());
    }

    #[test]
    fn the_cache_is_bounded_in_bytes() {
        let mut c = PageCache::default();
        let big = Bytes::from(vec![b' '; MAX_BYTES / 2 + 1]);
        let g = c.get("a").1;
        c.put("a", g, Arc::new(CachedPage::new(big.clone())));
        c.put("b", g, Arc::new(CachedPage::new(big)));
        assert!(c.bytes <= MAX_BYTES);
        assert!(c.get("b").0.is_some() && c.get("a").0.is_none());
    }
}
