//! Request bodies: reading with a size limit, decompressing with a size limit, and NDJSON.

use std::io::Read;

use axum::body::Body;
use futures_util::StreamExt;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Reads a whole body, failing with 413 as soon as it passes `limit` bytes.
pub async fn read_limited(body: Body, limit: u64) -> Result<Vec<u8>> {
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| Error::BadRequest(format!("reading the request body failed: {e}")))?;
        if (buf.len() + chunk.len()) as u64 > limit {
            return Err(Error::TooLarge {
                what: "request body",
                limit,
            });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// Undoes `Content-Encoding`, never holding more than `limit` decompressed bytes: a
/// compression bomb fails with 413 instead of filling memory.
pub fn decode(encoding: Option<&str>, raw: Vec<u8>, limit: u64) -> Result<Vec<u8>> {
    let enc = encoding.map(|e| e.trim().to_ascii_lowercase());
    match enc.as_deref() {
        None | Some("") | Some("identity") => Ok(raw),
        Some("gzip") | Some("x-gzip") => {
            take_limited(flate2::read::MultiGzDecoder::new(&raw[..]), limit)
        }
        Some("deflate") => take_limited(flate2::read::ZlibDecoder::new(&raw[..]), limit),
        Some("zstd") => {
            let d = zstd::stream::read::Decoder::new(&raw[..])
                .map_err(|e| Error::BadEncoding(e.to_string()))?;
            take_limited(d, limit)
        }
        Some(other) => Err(Error::UnsupportedEncoding(other.to_string())),
    }
}

fn take_limited(r: impl Read, limit: u64) -> Result<Vec<u8>> {
    let mut r = r.take(limit + 1);
    let mut out: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = r
            .read(&mut chunk)
            .map_err(|e| Error::BadEncoding(e.to_string()))?;
        if n == 0 {
            break;
        }
        if (out.len() + n) as u64 > limit {
            return Err(Error::TooLarge {
                what: "decompressed request body",
                limit,
            });
        }
        if out.capacity() - out.len() < n {
            // Grow by doubling, but never past the limit.
            let want = (out.capacity() * 2)
                .max(n)
                .min(limit as usize + 1 - out.len());
            out.reserve_exact(want.max(n));
        }
        out.extend_from_slice(&chunk[..n]);
    }
    Ok(out)
}

/// Splits NDJSON into (1-based line number, object or reason). Blank lines are skipped.
pub fn ndjson_objects(
    body: &[u8],
) -> impl Iterator<Item = (usize, std::result::Result<Map<String, Value>, String>)> + '_ {
    body.split(|b| *b == b'\n')
        .enumerate()
        .filter_map(|(i, line)| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(u8::is_ascii_whitespace) {
                return None;
            }
            Some((i + 1, parse_object(line)))
        })
}

/// One JSON object. Invalid UTF-8 is replaced rather than costing the record.
pub fn parse_object(line: &[u8]) -> std::result::Result<Map<String, Value>, String> {
    let parsed = match serde_json::from_slice::<Value>(line) {
        Ok(v) => Ok(v),
        Err(e) if std::str::from_utf8(line).is_err() => {
            serde_json::from_str::<Value>(&String::from_utf8_lossy(line)).map_err(|_| e)
        }
        Err(e) => Err(e),
    };
    match parsed {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(format!("expected a JSON object, got {}", kind(&other))),
        Err(e) => Err(format!("invalid JSON: {e}")),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_gzip_bomb_stops_at_the_limit() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&vec![b'a'; 10 << 20]).unwrap();
        let bomb = enc.finish().unwrap();
        assert!(bomb.len() < 100_000);
        match decode(Some("gzip"), bomb, 1 << 20) {
            Err(Error::TooLarge { .. }) => {}
            other => panic!("expected TooLarge, got {:?}", other.map(|v| v.len())),
        }
    }

    #[test]
    fn lines_are_numbered_and_bad_utf8_is_replaced() {
        let body = b"{\"message\":\"a\"}\n\n[1]\n{\"message\":\"b\xff\"}\n";
        let got: Vec<_> = ndjson_objects(body).collect();
        assert_eq!(got.len(), 3);
        assert_eq!(got[1].0, 3);
        assert!(got[1].1.as_ref().unwrap_err().contains("array"));
        assert_eq!(got[2].1.as_ref().unwrap()["message"], "b\u{fffd}");
    }
}
