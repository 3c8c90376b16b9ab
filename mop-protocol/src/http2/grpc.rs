//! gRPC over HTTP/2: telling gRPC exchanges apart and naming their spans.
//!
//! A gRPC call is an HTTP/2 POST whose `content-type` is `application/grpc` or starts with
//! `application/grpc+` or `application/grpc;` and whose `:path` is `/{package.Service}/{Method}`.
//! The status is the `grpc-status` of the trailers (or of a trailers-only response).

/// True when a `content-type` value says gRPC (`application/grpc`, `application/grpc+proto`,
/// `application/grpc;charset=...`), ignoring ASCII case.
pub fn is_grpc_content_type(value: &str) -> bool {
    let v = value.as_bytes();
    let base = b"application/grpc";
    v.len() >= base.len()
        && v[..base.len()].eq_ignore_ascii_case(base)
        && matches!(v.get(base.len()), None | Some(b'+' | b';'))
}

/// Splits a gRPC `:path` `/package.Service/Method` into `("package.Service", "Method")`.
///
/// `None` unless the path is exactly a slash, a non-empty service, a slash and a non-empty
/// method, with no query, no further slash, and only visible ASCII (gRPC names are protobuf
/// identifiers joined by dots, but other implementations allow more; nothing is guessed).
pub fn split_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix('/')?;
    let (service, method) = rest.split_once('/')?;
    let ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'/' | b'?' | b'#'))
    };
    (ok(service) && ok(method)).then_some((service, method))
}

/// The gRPC status a client reports when the server resets a stream with HTTP/2 error `code`
/// before sending a status (gRPC's HTTP/2 protocol document, "Errors"). `None` where the code
/// maps to nothing or was sent by a client (a client's `CANCEL` is its own deadline or
/// cancellation, which the server cannot tell apart).
pub fn status_from_server_reset(code: u32) -> Option<u32> {
    const CANCELLED: u32 = 1;
    const RESOURCE_EXHAUSTED: u32 = 8;
    const PERMISSION_DENIED: u32 = 7;
    const INTERNAL: u32 = 13;
    const UNAVAILABLE: u32 = 14;
    match code {
        0x0..=0x4 | 0x6 | 0x9 | 0xa => Some(INTERNAL),
        0x7 => Some(UNAVAILABLE),
        0x8 => Some(CANCELLED),
        0xb => Some(RESOURCE_EXHAUSTED),
        0xc => Some(PERMISSION_DENIED),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        for yes in [
            "application/grpc",
            "application/grpc+proto",
            "application/grpc+json",
            "application/grpc;charset=utf-8",
            "Application/GRPC",
        ] {
            assert!(is_grpc_content_type(yes), "{yes}");
        }
        for no in [
            "application/grpc-web",
            "application/grpc-web+proto",
            "application/json",
            "application/grp",
            "",
        ] {
            assert!(!is_grpc_content_type(no), "{no}");
        }
    }

    #[test]
    fn paths() {
        assert_eq!(
            split_path("/helloworld.Greeter/SayHello"),
            Some(("helloworld.Greeter", "SayHello"))
        );
        assert_eq!(split_path("/Svc/M"), Some(("Svc", "M")));
        for bad in [
            "",
            "/",
            "//M",
            "/Svc/",
            "/Svc",
            "Svc/M",
            "/a/b/c",
            "/Svc/M?x=1",
            "/S vc/M",
            "/Svc/M\u{e9}",
        ] {
            assert_eq!(split_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn reset_codes() {
        assert_eq!(status_from_server_reset(0x8), Some(1));
        assert_eq!(status_from_server_reset(0x7), Some(14));
        assert_eq!(status_from_server_reset(0x2), Some(13));
        assert_eq!(status_from_server_reset(0x5), None);
        assert_eq!(status_from_server_reset(0xd), None);
    }
}
