//! The `v1.kernel.websocket.jupyter.org` framing of kernel messages: a count,
//! that many little-endian u64 offsets, then the channel name and the message
//! parts (header, parent header, metadata, content, buffers).
//!
//! Shared by the integration tests (`support::kernel`) and the benchmark
//! (`benches/front`), which includes this file by path.

use serde_json::Value;

pub const SUBPROTOCOL: &str = "v1.kernel.websocket.jupyter.org";

/// Packs `parts` (header, parent, metadata, content) for `channel`.
pub fn pack_v1(channel: &str, parts: &[Vec<u8>]) -> Vec<u8> {
    let n = 2 + parts.len();
    let mut offsets = Vec::with_capacity(n);
    let mut at = 8 * (1 + n) as u64;
    offsets.push(at);
    at += channel.len() as u64;
    offsets.push(at);
    for p in parts {
        at += p.len() as u64;
        offsets.push(at);
    }
    let mut out = Vec::with_capacity(at as usize);
    out.extend_from_slice(&(n as u64).to_le_bytes());
    for o in &offsets {
        out.extend_from_slice(&o.to_le_bytes());
    }
    out.extend_from_slice(channel.as_bytes());
    for p in parts {
        out.extend_from_slice(p);
    }
    out
}

/// The channel and the parts of a v1 message, each parsed as JSON (`Null`
/// where a part is not JSON); `None` for a frame that is not v1.
pub fn unpack_v1(data: &[u8]) -> Option<(String, Vec<Value>)> {
    let word = |i: usize| -> Option<usize> {
        Some(u64::from_le_bytes(data.get(8 * i..8 * i + 8)?.try_into().ok()?) as usize)
    };
    let n = word(0)?;
    let offsets: Vec<usize> = (1..=n).map(word).collect::<Option<_>>()?;
    let channel = data.get(*offsets.first()?..*offsets.get(1)?)?;
    let channel = std::str::from_utf8(channel).ok()?.to_string();
    let parts = offsets[1..]
        .windows(2)
        .map(|w| {
            let bytes = data.get(w[0]..w[1])?;
            Some(serde_json::from_slice(bytes).unwrap_or(Value::Null))
        })
        .collect::<Option<_>>()?;
    Some((channel, parts))
}
