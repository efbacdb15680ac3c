//! What the gateway and a jq worker say to each other over their socket: frames of a
//! little-endian `u32` length and a body. A request names its set of plans by a key and
//! carries the plans' programs only the first time a worker sees that key; an answer is one
//! verdict per plan. The format is private to one build of hookgate (the worker is the same
//! binary), so it has no version.

use super::job::{Input, Plan, RunError, Verdict};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

/// A frame that does not decode: a bug or a worker that died mid-write.
#[derive(Debug, thiserror::Error)]
#[error("malformed jq worker frame")]
pub struct Malformed;

/// A request as the worker reads it.
pub struct Request {
    pub key: u64,
    /// Forget every set of plans known so far before this one.
    pub reset: bool,
    /// The programs of `key`, when the worker does not know them yet.
    pub plans: Option<Vec<Plan>>,
    pub max_output: usize,
    pub input: Input,
}

/// Appends one request frame to `out`.
pub fn put_request(
    out: &mut Vec<u8>,
    key: u64,
    plans: Option<(&[Plan], bool)>,
    max_output: usize,
    input: &Input,
) {
    let start = begin(out);
    out.extend_from_slice(&key.to_le_bytes());
    match plans {
        None => out.push(0),
        Some((list, reset)) => {
            out.push(if reset { 2 } else { 1 });
            put_u32(out, list.len());
            for p in list {
                put_opt_str(out, p.filter.as_deref());
                put_opt_str(out, p.transform.as_deref());
            }
        }
    }
    put_u32(out, max_output.min(u32::MAX as usize));
    put_bytes(out, &input.body);
    put_u32(out, input.headers.len());
    for (n, v) in &input.headers {
        put_bytes(out, n.as_bytes());
        put_bytes(out, v.as_bytes());
    }
    put_opt_str(out, input.query.as_deref());
    put_bytes(out, input.route.as_bytes());
    end(out, start);
}

/// Reads a request frame's body (without its length); the event's body is a view of it.
pub fn request(frame: &Bytes) -> Result<Request, Malformed> {
    let mut r = Reader(frame);
    let key = r.u64()?;
    let (plans, reset) = match r.u8()? {
        0 => (None, false),
        flag @ (1 | 2) => {
            let n = r.u32()?;
            let mut list = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                list.push(Plan {
                    filter: r.opt_str()?.map(Arc::from),
                    transform: r.opt_str()?.map(Arc::from),
                });
            }
            (Some(list), flag == 2)
        }
        _ => return Err(Malformed),
    };
    let max_output = r.u32()?;
    let body = frame.slice_ref(r.bytes()?);
    let n = r.u32()?;
    let mut headers = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        headers.push((r.str()?.to_owned(), r.str()?.to_owned()));
    }
    let query = r.opt_str()?.map(str::to_owned);
    let route = Arc::from(r.str()?);
    Ok(Request {
        key,
        reset,
        plans,
        max_output,
        input: Input {
            body,
            headers,
            query,
            route,
        },
    })
}

/// Appends one answer frame to `out`.
pub fn put_verdicts(out: &mut Vec<u8>, verdicts: &[Verdict]) {
    let start = begin(out);
    put_u32(out, verdicts.len());
    for v in verdicts {
        match &v.filter {
            None => out.push(0),
            Some(Ok(false)) => out.push(1),
            Some(Ok(true)) => out.push(2),
            Some(Err(e)) => {
                out.push(3);
                put_error(out, e);
            }
        }
        match &v.transform {
            None => out.push(0),
            Some(Ok(b)) => {
                out.push(1);
                put_bytes(out, b);
            }
            Some(Err(e)) => {
                out.push(2);
                put_error(out, e);
            }
        }
    }
    end(out, start);
}

/// Reads an answer frame's body (without its length).
pub fn verdicts(body: &[u8]) -> Result<Vec<Verdict>, Malformed> {
    let mut r = Reader(body);
    let n = r.u32()?;
    let mut out = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let filter = match r.u8()? {
            0 => None,
            1 => Some(Ok(false)),
            2 => Some(Ok(true)),
            3 => Some(Err(r.error()?)),
            _ => return Err(Malformed),
        };
        let transform = match r.u8()? {
            0 => None,
            1 => Some(Ok(Bytes::copy_from_slice(r.bytes()?))),
            2 => Some(Err(r.error()?)),
            _ => return Err(Malformed),
        };
        out.push(Verdict { filter, transform });
    }
    Ok(out)
}

/// The length of a frame from its 4-byte prefix.
pub fn frame_len(prefix: [u8; 4]) -> usize {
    u32::from_le_bytes(prefix) as usize
}

fn begin(out: &mut Vec<u8>) -> usize {
    out.extend_from_slice(&[0; 4]);
    out.len()
}

fn end(out: &mut [u8], start: usize) {
    let len = u32::try_from(out.len() - start).unwrap_or(u32::MAX);
    out[start - 4..start].copy_from_slice(&len.to_le_bytes());
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len());
    out.extend_from_slice(b);
}

fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_bytes(out, s.as_bytes());
        }
    }
}

fn put_error(out: &mut Vec<u8>, e: &RunError) {
    let (kind, n, text): (u8, u64, &str) = match e {
        RunError::Jq(s) => (0, 0, s),
        RunError::Timeout(d) => (1, d.as_millis() as u64, ""),
        RunError::OverMemory(n) => (2, *n as u64, ""),
        RunError::Worker(s) => (3, 0, s),
        RunError::TooLarge(n) => (4, *n as u64, ""),
        RunError::TooDeep(n) => (5, *n as u64, ""),
        RunError::Outputs(n) => (6, *n as u64, ""),
        RunError::Busy(d) => (7, d.as_millis() as u64, ""),
        RunError::QueueFull(n) => (8, *n as u64, ""),
    };
    out.push(kind);
    out.extend_from_slice(&n.to_le_bytes());
    put_bytes(out, text.as_bytes());
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.0.len() < n {
            return Err(Malformed);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<usize, Malformed> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    fn u64(&mut self) -> Result<u64, Malformed> {
        let b = self.take(8)?;
        let mut a = [0; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn bytes(&mut self) -> Result<&'a [u8], Malformed> {
        let n = self.u32()?;
        self.take(n)
    }

    fn str(&mut self) -> Result<&'a str, Malformed> {
        std::str::from_utf8(self.bytes()?).map_err(|_| Malformed)
    }

    fn opt_str(&mut self) -> Result<Option<&'a str>, Malformed> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.str().map(Some),
            _ => Err(Malformed),
        }
    }

    fn error(&mut self) -> Result<RunError, Malformed> {
        let kind = self.u8()?;
        let n = self.u64()?;
        let text = self.str()?.to_owned();
        let size = usize::try_from(n).unwrap_or(usize::MAX);
        Ok(match kind {
            0 => RunError::Jq(text),
            1 => RunError::Timeout(Duration::from_millis(n)),
            2 => RunError::OverMemory(size),
            3 => RunError::Worker(text),
            4 => RunError::TooLarge(size),
            5 => RunError::TooDeep(size),
            6 => RunError::Outputs(size),
            7 => RunError::Busy(Duration::from_millis(n)),
            8 => RunError::QueueFull(size),
            _ => return Err(Malformed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_answers_round_trip() {
        let input = Input::new(
            Bytes::from_static(b"{\"a\":1}"),
            [
                ("X-Kind", &b"push"[..]),
                ("Content-Type", b"application/json"),
            ],
            Some("x=1"),
            Arc::from("gh"),
            true,
        );
        let plans = [Plan {
            filter: Some(Arc::from(".a == 1")),
            transform: None,
        }];
        let mut out = Vec::new();
        put_request(&mut out, 7, Some((&plans, true)), 99, &input);
        let len = frame_len([out[0], out[1], out[2], out[3]]);
        assert_eq!(len, out.len() - 4);
        let r = request(&Bytes::copy_from_slice(&out[4..])).unwrap();
        assert_eq!((r.key, r.reset, r.max_output), (7, true, 99));
        assert_eq!(r.plans.unwrap()[0].filter.as_deref(), Some(".a == 1"));
        assert_eq!(r.input.headers, input.headers);
        assert_eq!(
            (r.input.body, r.input.query, r.input.route),
            (input.body.clone(), input.query.clone(), input.route.clone())
        );

        let errors = [
            RunError::Jq("boom".into()),
            RunError::Timeout(Duration::from_millis(250)),
            RunError::OverMemory(1 << 28),
            RunError::Worker("gone".into()),
            RunError::TooLarge(10),
            RunError::TooDeep(1000),
            RunError::Outputs(2),
            RunError::Busy(Duration::from_secs(2)),
            RunError::QueueFull(1024),
        ];
        let mut vs: Vec<Verdict> = errors
            .iter()
            .map(|e| Verdict {
                filter: Some(Err(e.clone())),
                transform: Some(Err(e.clone())),
            })
            .collect();
        vs.push(Verdict {
            filter: Some(Ok(true)),
            transform: Some(Ok(Bytes::from_static(b"[1]"))),
        });
        vs.push(Verdict {
            filter: None,
            transform: None,
        });
        let mut out = Vec::new();
        put_verdicts(&mut out, &vs);
        assert_eq!(verdicts(&out[4..]).unwrap(), vs);
        assert!(verdicts(&out[4..out.len() - 1]).is_err());
        assert!(request(&Bytes::from_static(&[1, 2, 3])).is_err());
    }
}
