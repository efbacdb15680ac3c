//! Route matching: host (when the route names one), then path — exact before prefix, the
//! longest prefix first — then method. No path → 404; path without the method → 405.

use super::error::IngressError;
use crate::config::PathMatch;
use http::Method;

pub trait Routable {
    fn host(&self) -> Option<&str>;
    fn path(&self) -> &PathMatch;
    fn methods(&self) -> &[Method];
}

/// The request's host name, lower-cased, without port: `:authority` (HTTP/2) or `Host`.
pub fn request_host(uri: &http::Uri, headers: &http::HeaderMap) -> Option<String> {
    let raw = uri.host().map(str::to_owned).or_else(|| {
        headers
            .get(http::header::HOST)?
            .to_str()
            .ok()
            .map(str::to_owned)
    })?;
    let host = if raw.starts_with('[') {
        raw.split(']')
            .next()
            .map(|h| format!("{h}]"))
            .unwrap_or(raw)
    } else {
        raw.split(':').next().unwrap_or_default().to_owned()
    };
    Some(host.to_ascii_lowercase())
}

fn rank<R: Routable>(r: &R) -> (bool, bool, usize) {
    match r.path() {
        PathMatch::Exact(p) => (r.host().is_some(), true, p.len()),
        PathMatch::Prefix(p) => (r.host().is_some(), false, p.len()),
    }
}

/// The index of the route that serves this request. Allocates nothing unless the answer
/// is 405 (which lists the allowed methods).
pub fn find<R: Routable>(
    routes: &[R],
    host: Option<&str>,
    path: &str,
    method: &Method,
) -> Result<usize, IngressError> {
    let candidate = |r: &R| (r.host().is_none() || r.host() == host) && r.path().matches(path);
    // Most specific first: a named host over any host, exact over prefix, longer prefix
    // first; between equals, the one listed first.
    let mut best: Option<(usize, (bool, bool, usize))> = None;
    let mut any = false;
    for (i, r) in routes.iter().enumerate() {
        if !candidate(r) {
            continue;
        }
        any = true;
        if r.methods().contains(method) && best.is_none_or(|(_, b)| rank(r) > b) {
            best = Some((i, rank(r)));
        }
    }
    if let Some((i, _)) = best {
        return Ok(i);
    }
    if !any {
        return Err(IngressError::NotFound);
    }
    let mut allow: Vec<Method> = Vec::new();
    for r in routes.iter().filter(|r| candidate(r)) {
        for m in r.methods() {
            if !allow.contains(m) {
                allow.push(m.clone());
            }
        }
    }
    Err(IngressError::MethodNotAllowed { allow })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct R(Option<&'static str>, PathMatch, Vec<Method>, &'static str);
    impl Routable for R {
        fn host(&self) -> Option<&str> {
            self.0
        }
        fn path(&self) -> &PathMatch {
            &self.1
        }
        fn methods(&self) -> &[Method] {
            &self.2
        }
    }

    fn routes() -> Vec<R> {
        vec![
            R(
                None,
                PathMatch::Prefix("/api/".into()),
                vec![Method::POST],
                "prefix",
            ),
            R(
                None,
                PathMatch::Prefix("/api/v2/".into()),
                vec![Method::POST],
                "longer",
            ),
            R(
                None,
                PathMatch::Exact("/api/x".into()),
                vec![Method::PUT],
                "exact",
            ),
            R(
                Some("a.example"),
                PathMatch::Exact("/h".into()),
                vec![Method::POST],
                "host-a",
            ),
            R(
                None,
                PathMatch::Exact("/h".into()),
                vec![Method::POST],
                "any-host",
            ),
        ]
    }

    #[test]
    fn most_specific_wins() {
        let rs = routes();
        let f = |h: Option<&str>, p: &str, m: Method| find(&rs, h, p, &m).map(|i| rs[i].3);
        assert_eq!(f(None, "/api/v2/z", Method::POST).unwrap(), "longer");
        assert_eq!(f(None, "/api/q", Method::POST).unwrap(), "prefix");
        assert_eq!(f(None, "/api/x", Method::PUT).unwrap(), "exact");
        // The exact route lacks POST, so the prefix route serves it.
        assert_eq!(f(None, "/api/x", Method::POST).unwrap(), "prefix");
        assert_eq!(f(Some("a.example"), "/h", Method::POST).unwrap(), "host-a");
        assert_eq!(
            f(Some("b.example"), "/h", Method::POST).unwrap(),
            "any-host"
        );
        assert!(matches!(
            f(None, "/nope", Method::POST),
            Err(IngressError::NotFound)
        ));
        match find(&rs, None, "/h", &Method::GET) {
            Err(IngressError::MethodNotAllowed { allow }) => assert_eq!(allow, vec![Method::POST]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn host_parsing() {
        let h = |v: &str| {
            let mut m = http::HeaderMap::new();
            m.insert(http::header::HOST, v.parse().unwrap());
            request_host(&"/x".parse().unwrap(), &m)
        };
        assert_eq!(h("Example.COM:8443").as_deref(), Some("example.com"));
        assert_eq!(h("[::1]:8443").as_deref(), Some("[::1]"));
    }
}
