//! Globs, port sets and route patterns.

use crate::config::{
    Glob, PortSet, RoutePattern, RoutesConfig, UnmatchedRoutes, routes::heuristic_route,
};

#[test]
fn glob_table() {
    let cases: &[(&str, &str, bool)] = &[
        ("*", "", true),
        ("*", "/usr/bin/python3", true),
        ("*/python3*", "/usr/bin/python3.11", true),
        ("*/python3*", "/usr/bin/python2", false),
        ("/usr/*/nginx", "/usr/local/sbin/nginx", true),
        ("*java", "/opt/jdk/bin/java", true),
        ("*java", "/opt/jdk/bin/javac", false),
        ("server", "server", true),
        ("server", "/app/server", false),
        ("?", "a", true),
        ("?", "", false),
        ("a?c", "abc", true),
        ("a?c", "ac", false),
        ("[abc]x", "bx", true),
        ("[abc]x", "dx", false),
        ("[a-c]x", "cx", true),
        ("[!a-c]x", "dx", true),
        ("[!a-c]x", "ax", false),
        ("[^/]*", "abc", true),
        ("[^/]*", "/abc", false),
        ("{a,b}*", "b/c", true),
        ("{a,b}*", "c", false),
        ("*{otelcol,otelcol-contrib}", "/bin/otelcol-contrib", true),
        ("*otelcol-contrib[!/]*", "/bin/otelcol-contrib2", true),
        ("{x{1,2},y}", "x2", true),
        ("{x{1,2},y}", "x3", false),
        ("\\*", "*", true),
        ("\\*", "a", false),
        ("a,b", "a,b", true),
        ("prod-*-db", "prod-eu-1-db", true),
        ("prod-*-db", "prod-db", false),
        ("**", "a/b/c", true),
        ("*a*b*c*", "xaybzc", true),
        ("*a*b*c*", "xaybz", false),
    ];
    for (pattern, input, want) in cases {
        assert_eq!(
            Glob::new(pattern).unwrap().matches(input),
            *want,
            "{pattern} vs {input}"
        );
    }
}

#[test]
fn glob_errors() {
    assert_eq!(Glob::new("[abc").unwrap_err(), "unclosed `[`");
    assert_eq!(Glob::new("{a,b").unwrap_err(), "unclosed `{`");
    assert_eq!(Glob::new("a\\").unwrap_err(), "trailing `\\`");
    assert_eq!(Glob::new("[]").unwrap_err(), "empty `[]`");
    assert_eq!(
        Glob::new("[z-a]").unwrap_err(),
        "bad range `z-a` in `[...]`"
    );
    let bomb = "{a,b}".repeat(9);
    assert_eq!(
        Glob::new(&bomb).unwrap_err(),
        "more than 256 alternatives in `{...}`"
    );
}

#[test]
fn glob_matching_has_no_backtracking_blowup() {
    let pattern = Glob::new(&"*a".repeat(30)).unwrap();
    let input = "a".repeat(29) + &"b".repeat(10_000);
    let start = std::time::Instant::now();
    assert!(!pattern.matches(&input));
    assert!(
        start.elapsed() < std::time::Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn port_sets() {
    let p = PortSet::parse("80, 443,8000-8999").unwrap();
    for (port, want) in [
        (80, true),
        (443, true),
        (8000, true),
        (8500, true),
        (8999, true),
        (81, false),
        (9000, false),
        (7999, false),
    ] {
        assert_eq!(p.contains(port), want, "{port}");
    }
    assert_eq!(p.to_string(), "80,443,8000-8999");
    assert_eq!(p.ranges(), [(80, 80), (443, 443), (8000, 8999)]);
    assert!(PortSet::parse("1-65535").unwrap().contains(65535));
    assert!(PortSet::parse("8080-8080").unwrap().contains(8080));
    for bad in [
        "", "80-70", "70000", "0", "-5", "80-", "a", "80;443", "1-2-3",
    ] {
        assert!(PortSet::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn route_patterns() {
    let cases: &[(&str, &str, bool)] = &[
        ("/users/{id}", "/users/123", true),
        ("/users/{id}", "/users/123/", true),
        ("/users/{id}", "/users", false),
        ("/users/{id}", "/users/1/cart", false),
        ("/users/:id/cart", "/users/9/cart", true),
        ("/static/*", "/static", true),
        ("/static/*", "/static/css/a.css", true),
        ("/static/*", "/statics", false),
        ("/a/*/c", "/a/b/c", true),
        ("/", "/", true),
        ("/", "/x", false),
    ];
    for (pattern, path, want) in cases {
        assert_eq!(
            RoutePattern::parse(pattern).unwrap().matches(path),
            *want,
            "{pattern} vs {path}"
        );
    }
    assert_eq!(
        RoutePattern::parse("users").unwrap_err(),
        "must start with `/`"
    );
    assert_eq!(
        RoutePattern::parse("/u/{}").unwrap_err(),
        "bad parameter `{}`: write `{name}` or `:name`"
    );
    assert_eq!(
        RoutePattern::parse("/u/x{id}").unwrap_err(),
        "a parameter must be a whole segment, like `{id}`, not `x{id}`"
    );
}

#[test]
fn route_for_each_unmatched_mode() {
    let mut routes = RoutesConfig {
        patterns: vec![RoutePattern::parse("/users/{id}").unwrap()],
        ignored_patterns: vec![RoutePattern::parse("/health").unwrap()],
        ..RoutesConfig::default()
    };
    assert_eq!(
        routes.route_for("/users/42").as_deref(),
        Some("/users/{id}")
    );
    assert_eq!(routes.route_for("/orders/42").as_deref(), Some("/orders/*"));
    routes.unmatched = UnmatchedRoutes::Path;
    assert_eq!(
        routes.route_for("/orders/42").as_deref(),
        Some("/orders/42")
    );
    routes.unmatched = UnmatchedRoutes::Wildcard;
    assert_eq!(routes.route_for("/orders/42").as_deref(), Some("/**"));
    routes.unmatched = UnmatchedRoutes::Unset;
    assert_eq!(routes.route_for("/orders/42"), None);
    assert!(routes.is_ignored("/health"));
    assert!(!routes.is_ignored("/healthz"));
}

#[test]
fn heuristic_replaces_ids_only() {
    for (path, want) in [
        ("/users/123", "/users/*"),
        ("/api/v1/orders", "/api/*/orders"),
        (
            "/document/d/CfMkAGbE_aivhFydEpaRafPuGWbmHfG/edit",
            "/document/d/*/edit",
        ),
        ("/items/550e8400-e29b-41d4-a716-446655440000", "/items/*"),
        ("/shopping-cart/checkout", "/shopping-cart/checkout"),
        ("/", "/"),
        ("/xkcd", "/*"),
    ] {
        assert_eq!(heuristic_route(path, '*'), want, "{path}");
    }
}
