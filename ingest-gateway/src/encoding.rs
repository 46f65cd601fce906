//! `Content-Encoding` of ingest bodies: every major SDK compresses its batches.
//! `gzip` and `deflate` (zlib, or raw deflate as some clients send it) are
//! decoded; `identity` or none passes through; anything else is refused
//! (415 naming it). The body limit applies to the decoded size, and decoding
//! stops as soon as it is passed: a decompression bomb costs at most the limit
//! (plus one chunk) of memory before its 413, never what it would expand to.

use std::io::Read;

use crate::errors::ApiError;

/// Decoded in chunks of this size, so memory follows what decoding yields.
const CHUNK: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Deflate,
}

impl Encoding {
    /// The encoding a `Content-Encoding` value names.
    pub fn parse(value: Option<&str>) -> Result<Self, ApiError> {
        let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(Self::Identity);
        };
        match value.to_ascii_lowercase().as_str() {
            "identity" => Ok(Self::Identity),
            "gzip" | "x-gzip" => Ok(Self::Gzip),
            "deflate" => Ok(Self::Deflate),
            _ => Err(ApiError::UnsupportedEncoding(value.to_string())),
        }
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Gzip => "gzip",
            Self::Deflate => "deflate",
        }
    }

    /// `body` decoded, refused once it passes `limit` bytes.
    pub fn decode(self, body: &[u8], limit: usize) -> Result<Vec<u8>, ApiError> {
        match self {
            Self::Identity => Ok(body.to_vec()),
            Self::Gzip => bounded(flate2::read::MultiGzDecoder::new(body), limit),
            // HTTP's deflate is zlib-wrapped; some clients send it raw.
            Self::Deflate if looks_like_zlib(body) => {
                bounded(flate2::read::ZlibDecoder::new(body), limit)
            }
            Self::Deflate => bounded(flate2::read::DeflateDecoder::new(body), limit),
        }
    }
}

/// A zlib header: CM 8 (deflate), and the check bits of RFC 1950.
fn looks_like_zlib(body: &[u8]) -> bool {
    matches!(body, [cmf, flg, ..] if cmf & 0x0f == 8 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0)
}

fn bounded(mut decoder: impl Read, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    let mut chunk = vec![0u8; CHUNK];
    loop {
        let n = decoder.read(&mut chunk).map_err(|e| {
            ApiError::MalformedEncoding(format!("the body is not valid compressed data: {e}"))
        })?;
        if n == 0 {
            return Ok(out);
        }
        if out.len() + n > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        out.reserve_exact(n);
        out.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let _ = encoder.write_all(data);
        encoder.finish().unwrap_or_default()
    }

    #[test]
    fn gzip_and_both_deflates_decode() {
        let body = br#"{"events":[]}"#;
        assert_eq!(
            Encoding::Gzip.decode(&gzip(body), 100).ok(),
            Some(body.to_vec())
        );
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        let _ = zlib.write_all(body);
        let zlib = zlib.finish().unwrap_or_default();
        assert_eq!(
            Encoding::Deflate.decode(&zlib, 100).ok(),
            Some(body.to_vec())
        );
        let mut raw =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        let _ = raw.write_all(body);
        let raw = raw.finish().unwrap_or_default();
        assert_eq!(
            Encoding::Deflate.decode(&raw, 100).ok(),
            Some(body.to_vec())
        );
    }

    #[test]
    fn a_bomb_stops_at_the_limit_and_garbage_is_named() {
        let bomb = gzip(&vec![b' '; 10 * 1024 * 1024]);
        assert!(bomb.len() < 20_000, "{} bytes", bomb.len());
        let refused = Encoding::Gzip
            .decode(&bomb, 1024 * 1024)
            .err()
            .map(|e| e.code());
        assert_eq!(refused, Some("payload_too_large"));
        let garbage = Encoding::Gzip
            .decode(b"not gzip", 100)
            .err()
            .map(|e| e.code());
        assert_eq!(garbage, Some("malformed_encoding"));
    }

    #[test]
    fn unknown_encodings_are_named() {
        assert_eq!(Encoding::parse(None).ok(), Some(Encoding::Identity));
        assert_eq!(Encoding::parse(Some("GZIP")).ok(), Some(Encoding::Gzip));
        let br = Encoding::parse(Some("br")).err();
        assert_eq!(br.as_ref().map(|e| e.code()), Some("unsupported_encoding"));
        assert!(br
            .map(|e| e.to_string())
            .unwrap_or_default()
            .contains("\"br\""));
    }
}
