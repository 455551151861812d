//! A small, strict HTTP/1.x request parser for `httpd`.
//!
//! Every byte it reads comes from the network, so it trusts none of
//! them: the request head is bounded ([`MAX_HEAD`] bytes, [`MAX_HEADERS`]
//! header fields), only the characters RFC 9110/9112 allow are accepted,
//! and anything else is an [`Error`] that maps to a 4xx/5xx status. It
//! never panics and never allocates more than the head it was given.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

/// Largest request head (request line and header fields) accepted.
pub const MAX_HEAD: usize = 16 * 1024;
/// Most header fields accepted in one request.
pub const MAX_HEADERS: usize = 64;
/// Largest request body accepted (and discarded: this server only reads).
pub const MAX_BODY: u64 = 1 << 20;
/// Longest method token accepted.
const MAX_METHOD: usize = 16;

/// The request methods the server tells apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// `HEAD`.
    Head,
    /// Any other (syntactically valid) method.
    Other(String),
}

impl Method {
    /// The method as sent.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Other(m) => m,
        }
    }
}

/// A parsed request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The request target as sent (origin-form or absolute-form).
    pub target: String,
    /// The minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    /// Header fields, names lower-cased, values trimmed.
    pub headers: Vec<(String, String)>,
    /// Whether the connection may carry another request after this one.
    pub keep_alive: bool,
    /// Bytes of body that follow the head (`Content-Length`, else 0).
    pub content_length: u64,
}

impl Request {
    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a request was refused; each maps to a status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// 400: malformed.
    BadRequest(&'static str),
    /// 431: head larger than [`MAX_HEAD`] or more than [`MAX_HEADERS`] fields.
    HeadTooLarge,
    /// 413: a body larger than [`MAX_BODY`].
    BodyTooLarge,
    /// 501: a request body in a transfer coding (chunked).
    NotImplemented,
    /// 505: not HTTP/1.0 or HTTP/1.1.
    VersionNotSupported,
}

impl Error {
    /// The status code and reason phrase.
    pub fn status(self) -> (u16, &'static str) {
        match self {
            Error::BadRequest(_) => (400, "Bad Request"),
            Error::HeadTooLarge => (431, "Request Header Fields Too Large"),
            Error::BodyTooLarge => (413, "Content Too Large"),
            Error::NotImplemented => (501, "Not Implemented"),
            Error::VersionNotSupported => (505, "HTTP Version Not Supported"),
        }
    }
}

/// `tchar` of RFC 9110 §5.6.2.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Field-value bytes (RFC 9110 §5.5): visible ASCII, space, tab, obs-text.
fn is_field_byte(b: u8) -> bool {
    b == b'\t' || (0x20..0x7f).contains(&b) || b >= 0x80
}

/// Where the head ends: the index just past the empty line that closes
/// it (CRLF CRLF, or bare LFs, which RFC 9112 §2.2 lets a server accept).
fn head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(off) = buf[i..].iter().position(|&b| b == b'\n') {
        let nl = i + off;
        match buf.get(nl + 1) {
            Some(b'\n') => return Some(nl + 2),
            Some(b'\r') if buf.get(nl + 2) == Some(&b'\n') => return Some(nl + 3),
            _ => i = nl + 1,
        }
    }
    None
}

/// Parses one request head from the front of `buf`.
///
/// `Ok(None)`: incomplete, read more (unless `buf` is already
/// [`MAX_HEAD`] long, which is reported as [`Error::HeadTooLarge`]).
/// `Ok(Some((req, n)))`: a request whose head is `buf[..n]`; its body
/// (`req.content_length` bytes) follows.
pub fn parse_request(buf: &[u8]) -> Result<Option<(Request, usize)>, Error> {
    // RFC 9112 §2.2: ignore empty lines before the request line.
    let skip = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    if skip > 8 {
        return Err(Error::BadRequest("empty lines before the request"));
    }
    let rest = &buf[skip..];
    let end = match head_end(rest) {
        Some(e) if e <= MAX_HEAD => e,
        Some(_) => return Err(Error::HeadTooLarge),
        None if rest.len() >= MAX_HEAD => return Err(Error::HeadTooLarge),
        None => {
            // Fail early on bytes that can never start a request.
            if let Some(&b) = rest.first() {
                if !is_tchar(b) {
                    return Err(Error::BadRequest("request line"));
                }
            }
            return Ok(None);
        }
    };
    let head = &rest[..end];
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let (method, target, minor) = request_line(lines.next().unwrap_or_default())?;

    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            break;
        }
        if headers.len() == MAX_HEADERS {
            return Err(Error::HeadTooLarge);
        }
        headers.push(header_line(line)?);
    }

    let mut req = Request {
        method,
        target,
        minor,
        headers,
        keep_alive: minor >= 1,
        content_length: 0,
    };
    semantics(&mut req)?;
    Ok(Some((req, skip + end)))
}

/// `method SP request-target SP HTTP-version`.
fn request_line(line: &[u8]) -> Result<(Method, String, u8), Error> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(m), Some(t), Some(v), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Error::BadRequest("request line"));
    };
    if m.is_empty() || m.len() > MAX_METHOD || !m.iter().all(|&b| is_tchar(b)) {
        return Err(Error::BadRequest("method"));
    }
    if t.is_empty() || !t.iter().all(|&b| (0x21..0x7f).contains(&b)) {
        return Err(Error::BadRequest("request target"));
    }
    let minor = match v {
        b"HTTP/1.1" => 1,
        b"HTTP/1.0" => 0,
        [b'H', b'T', b'T', b'P', b'/', a, b'.', b] if a.is_ascii_digit() && b.is_ascii_digit() => {
            return Err(Error::VersionNotSupported)
        }
        _ => return Err(Error::BadRequest("version")),
    };
    // Both checked to be ASCII above.
    let m = String::from_utf8_lossy(m).into_owned();
    let method = match m.as_str() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        _ => Method::Other(m),
    };
    Ok((method, String::from_utf8_lossy(t).into_owned(), minor))
}

/// `field-name ":" OWS field-value OWS`.
fn header_line(line: &[u8]) -> Result<(String, String), Error> {
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(Error::BadRequest("header without a colon"))?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    // Also refuses obs-fold (a line starting with whitespace) and
    // whitespace before the colon (RFC 9112 §5.1).
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(Error::BadRequest("header name"));
    }
    if !value.iter().all(|&b| is_field_byte(b)) {
        return Err(Error::BadRequest("header value"));
    }
    let value = value.trim_ascii();
    Ok((
        String::from_utf8_lossy(name).to_ascii_lowercase(),
        String::from_utf8_lossy(value).into_owned(),
    ))
}

/// Host, Content-Length, Transfer-Encoding and Connection.
fn semantics(req: &mut Request) -> Result<(), Error> {
    let hosts = req.headers.iter().filter(|(n, _)| n == "host").count();
    if hosts > 1 || (req.minor >= 1 && hosts == 0) {
        return Err(Error::BadRequest("exactly one Host is required"));
    }
    if req.header("transfer-encoding").is_some() {
        return Err(Error::NotImplemented);
    }
    let mut length: Option<u64> = None;
    for (_, v) in req.headers.iter().filter(|(n, _)| n == "content-length") {
        // RFC 9110 §8.6: a list of identical values may be folded; accept
        // only plain digits, and refuse disagreement.
        for item in v.split(',').map(str::trim) {
            if item.is_empty() || item.len() > 19 || !item.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Error::BadRequest("content-length"));
            }
            let n: u64 = item
                .parse()
                .map_err(|_| Error::BadRequest("content-length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(Error::BadRequest("conflicting content-length"));
            }
            length = Some(n);
        }
    }
    req.content_length = length.unwrap_or(0);
    if req.content_length > MAX_BODY {
        return Err(Error::BodyTooLarge);
    }
    let options = || {
        req.headers
            .iter()
            .filter(|(n, _)| n == "connection")
            .flat_map(|(_, v)| v.split(',').map(str::trim))
    };
    let close = options().any(|o| o.eq_ignore_ascii_case("close"));
    let keep = options().any(|o| o.eq_ignore_ascii_case("keep-alive"));
    // "close" wins; HTTP/1.0 keeps the connection only when asked to.
    req.keep_alive = !close && (req.minor >= 1 || keep);
    Ok(())
}

/// Why a request target does not name a file under the root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathError {
    /// 400: not a path (bad escapes, NUL, not starting with `/`).
    Bad,
    /// 403: tries to leave the root (`..`).
    Traversal,
}

/// The file-system path segments a request target names, relative to
/// the document root: query and fragment removed, percent-escapes
/// decoded per segment, `.` and empty segments dropped, `..` refused
/// (also when escaped), as is any decoded `/` or NUL inside a segment.
pub fn target_segments(target: &str) -> Result<Vec<OsString>, PathError> {
    let mut path = target;
    // absolute-form: http://authority/path (RFC 9112 §3.2.2).
    for scheme in ["http://", "https://"] {
        let b = path.as_bytes();
        if b.len() >= scheme.len() && b[..scheme.len()].eq_ignore_ascii_case(scheme.as_bytes()) {
            // The scheme is ASCII, so this is a character boundary.
            let rest = &path[scheme.len()..];
            path = rest.find('/').map_or("/", |i| &rest[i..]);
            break;
        }
    }
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let Some(path) = path.strip_prefix('/') else {
        return Err(PathError::Bad);
    };
    let mut out = Vec::new();
    for raw in path.split('/') {
        let seg = percent_decode(raw.as_bytes()).ok_or(PathError::Bad)?;
        if seg.iter().any(|&b| b == 0 || b == b'/') {
            return Err(PathError::Bad);
        }
        match seg.as_slice() {
            b"" | b"." => {}
            b".." => return Err(PathError::Traversal),
            _ => out.push(OsString::from_vec(seg)),
        }
    }
    Ok(out)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn percent_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let h = hex(*s.get(i + 1)?)?;
            let l = hex(*s.get(i + 2)?)?;
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Some(out)
}

/// An IMF-fixdate (RFC 9110 §5.6.7) for `secs` since the Unix epoch:
/// `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn http_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86400;
    let sod = secs % 86400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        d,
        MONTHS[(m - 1) as usize],
        y,
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &[u8]) -> (Request, usize) {
        parse_request(s)
            .unwrap_or_else(|e| panic!("{e:?} for {:?}", String::from_utf8_lossy(s)))
            .expect("complete")
    }

    fn err(s: &[u8]) -> Error {
        match parse_request(s) {
            Err(e) => e,
            other => panic!("{other:?} for {:?}", String::from_utf8_lossy(s)),
        }
    }

    #[test]
    fn a_plain_get() {
        let s = b"GET /a/b.txt?x=1 HTTP/1.1\r\nHost: h\r\nUser-Agent: t\r\n\r\nGET";
        let (r, n) = ok(s);
        assert_eq!(n, s.len() - 3);
        assert_eq!(r.method, Method::Get);
        assert_eq!(r.target, "/a/b.txt?x=1");
        assert_eq!(r.minor, 1);
        assert!(r.keep_alive);
        assert_eq!(r.header("user-agent"), Some("t"));
        assert_eq!(r.content_length, 0);
    }

    #[test]
    fn incomplete_heads_ask_for_more() {
        let s = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n";
        for i in 0..s.len() {
            assert_eq!(parse_request(&s[..i]), Ok(None), "prefix {i}");
        }
        ok(s);
    }

    #[test]
    fn keep_alive_rules() {
        let ka = |s: &[u8]| ok(s).0.keep_alive;
        assert!(!ka(
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
        ));
        assert!(!ka(
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Close\r\n\r\n"
        ));
        assert!(!ka(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(ka(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
        assert!(ka(
            b"HEAD / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\n\r\n"
        ));
    }

    #[test]
    fn bare_lf_and_leading_empty_lines_are_accepted() {
        let (r, n) = ok(b"\r\n\nGET /x HTTP/1.1\nHost: h\n\n");
        assert_eq!(r.target, "/x");
        assert_eq!(n, 28);
    }

    #[test]
    fn malformed_requests_are_400() {
        for s in [
            &b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n"[..],
            b"GET / HTTP/1.1 \r\nHost: h\r\n\r\n",
            b"GET /\r\n\r\n",
            b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET / HTTP/x.1\r\nHost: h\r\n\r\n",
            b"GET / http/1.1\r\nHost: h\r\n\r\n",
            b"GET /\x01 HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET /\xff HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : h\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\x00\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1, 2\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
        ] {
            assert!(
                matches!(err(s), Error::BadRequest(_)),
                "{:?}",
                String::from_utf8_lossy(s)
            );
        }
    }

    #[test]
    fn other_refusals() {
        assert_eq!(err(b"GET / HTTP/2.0\r\n\r\n"), Error::VersionNotSupported);
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Error::NotImplemented
        );
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2000000\r\n\r\n"),
            Error::BodyTooLarge
        );
        let (r, _) = ok(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\n");
        assert_eq!(r.content_length, 5);
        assert_eq!(r.method, Method::Other("POST".into()));
    }

    #[test]
    fn heads_are_bounded() {
        let mut big = b"GET / HTTP/1.1\r\nHost: h\r\nX: ".to_vec();
        big.resize(MAX_HEAD, b'a');
        assert_eq!(err(&big), Error::HeadTooLarge);
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(err(&big), Error::HeadTooLarge);
        let mut many = b"GET / HTTP/1.1\r\nHost: h\r\n".to_vec();
        for i in 0..MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(err(&many), Error::HeadTooLarge);
    }

    /// Random and mutated input never panics, and whatever is accepted
    /// has a consumed length within the input and a bounded head.
    #[test]
    fn garbage_never_panics() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let seed = b"GET /a%20b/../c?q HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nConnection: close\r\n\r\n";
        let alphabet = b"GET HTTP/1.0\r\n:%./ \t\x00\xffHost,content-length";
        for round in 0..200_000 {
            let mut buf: Vec<u8> = if round % 2 == 0 {
                seed.to_vec()
            } else {
                (0..next() % 128).map(|_| next() as u8).collect()
            };
            for _ in 0..next() % 6 {
                let r = next();
                let i = (r >> 8) as usize % (buf.len() + 1);
                match r % 4 {
                    0 if i < buf.len() => buf[i] = alphabet[(r >> 32) as usize % alphabet.len()],
                    1 if i < buf.len() => {
                        buf.remove(i);
                    }
                    2 => buf.insert(i, alphabet[(r >> 32) as usize % alphabet.len()]),
                    _ => buf.truncate(i),
                }
            }
            if let Ok(Some((r, n))) = parse_request(&buf) {
                assert!(n <= buf.len() && n <= MAX_HEAD + 8);
                assert!(r.content_length <= MAX_BODY);
                let _ = target_segments(&r.target);
            }
            let _ = target_segments(&String::from_utf8_lossy(&buf));
        }
    }

    #[test]
    fn targets_map_to_segments() {
        let seg = |t| {
            target_segments(t).map(|v| {
                v.into_iter()
                    .map(|s| s.into_string().unwrap())
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(seg("/"), Ok(vec![]));
        assert_eq!(
            seg("/a//b/./c.txt?x#y"),
            Ok(vec!["a".into(), "b".into(), "c.txt".into()])
        );
        assert_eq!(seg("/a%20b"), Ok(vec!["a b".into()]));
        assert_eq!(
            seg("http://host:8080/x/y"),
            Ok(vec!["x".into(), "y".into()])
        );
        assert_eq!(seg("HTTP://host"), Ok(vec![]));
        assert_eq!(seg("/../etc/passwd"), Err(PathError::Traversal));
        assert_eq!(seg("/a/%2e%2e/%2E%2e/x"), Err(PathError::Traversal));
        assert_eq!(seg("/a/.."), Err(PathError::Traversal));
        assert_eq!(seg("/a%2f..%2fb"), Err(PathError::Bad));
        assert_eq!(seg("/a%00"), Err(PathError::Bad));
        assert_eq!(seg("/a%zz"), Err(PathError::Bad));
        assert_eq!(seg("/a%4"), Err(PathError::Bad));
        assert_eq!(seg("*"), Err(PathError::Bad));
        assert_eq!(seg("a/b"), Err(PathError::Bad));
    }

    #[test]
    fn dates() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(http_date(1_709_251_199), "Thu, 29 Feb 2024 23:59:59 GMT");
    }
}
