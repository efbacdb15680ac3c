//! Header lists to bytes and back: for each header, name length (u16 BE), name, value
//! length (u32 BE), value. Values are kept as raw bytes: header values need not be UTF-8.

pub fn encode(headers: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(headers.iter().map(|(n, v)| 6 + n.len() + v.len()).sum());
    for (n, v) in headers {
        let nl = u16::try_from(n.len()).unwrap_or(u16::MAX);
        let vl = u32::try_from(v.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&nl.to_be_bytes());
        out.extend_from_slice(&n.as_bytes()[..usize::from(nl)]);
        out.extend_from_slice(&vl.to_be_bytes());
        out.extend_from_slice(&v[..vl as usize]);
    }
    out
}

/// `None` when the bytes are not a valid encoding (a corrupted row).
pub fn decode(mut b: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let nl = usize::from(u16::from_be_bytes(b.get(..2)?.try_into().ok()?));
        b = &b[2..];
        let name = std::str::from_utf8(b.get(..nl)?).ok()?.to_owned();
        b = &b[nl..];
        let vl = u32::from_be_bytes(b.get(..4)?.try_into().ok()?) as usize;
        b = &b[4..];
        let value = b.get(..vl)?.to_vec();
        b = &b[vl..];
        out.push((name, value));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let h = vec![
            ("content-type".to_owned(), b"application/json".to_vec()),
            ("x-bin".to_owned(), vec![0xff, 0x00, 0x80]),
            ("empty".to_owned(), vec![]),
        ];
        assert_eq!(decode(&encode(&h)).unwrap(), h);
        assert_eq!(decode(&[]).unwrap(), vec![]);
        assert!(decode(&[0, 5, b'a']).is_none());
    }
}
