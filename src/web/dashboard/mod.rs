//! The web dashboard: a page and its ES modules, compiled into the binary (no build step,
//! nothing fetched from elsewhere).
//!
//! - `GET /`: `index.html`.
//! - `GET /assets/{file}`: the scripts, the style sheet and the icon of [`ASSETS`].
//!
//! Every answer carries a Content-Security-Policy that allows this origin only (no inline
//! script or style, no other host, no framing), `X-Content-Type-Options: nosniff` and
//! `Referrer-Policy: no-referrer` (and, from the server's layers, `X-Frame-Options: DENY`;
//! the server's stricter API policy is not set where this one is). The files hold no data, so they are served without the
//! token (see the auth middleware); the page asks for the token and sends it with its API
//! calls.
//!
//! The page (hash routes `#/`, `#/alerts`, `#/alerts/<id>`, `#/stream`, `#/silences`,
//! `#/bans`) reads the JSON API: the pipeline graph with live counters and the last
//! reload, the alert history with samples, top-N and deliveries (and a silence made from
//! an alert), the live stream, silences, and the bans of the `nftables_ban` sinks (each
//! with a Remove button, and a form to ban by hand); a Tetragon event (in the stream, or as an alert's
//! sample) shows its process tree before its JSON (`assets/process.js`). Light and dark
//! theme, English and 繁體中文; every UI string is in `assets/i18n.js`.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The policy: this origin only. Scripts are modules from `/assets`; the SVG graph is
/// drawn with presentation attributes, never inline styles.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; \
                   frame-ancestors 'none'";

const INDEX: &str = include_str!("assets/index.html");

/// The files under `/assets/`: name, content type, bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/app.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/app.js"),
    ),
    (
        "alerts.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/alerts.js"),
    ),
    (
        "graph.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/graph.js"),
    ),
    (
        "i18n.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/i18n.js"),
    ),
    (
        "overview.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/overview.js"),
    ),
    (
        "process.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/process.js"),
    ),
    (
        "bans.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/bans.js"),
    ),
    (
        "silences.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/silences.js"),
    ),
    (
        "stream.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/stream.js"),
    ),
    (
        "theme.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/theme.js"),
    ),
    (
        "ui.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/ui.js"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("assets/favicon.svg"),
    ),
];

/// The dashboard's routes, to merge into the server's router.
pub(super) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/assets/{file}", get(asset))
}

async fn index() -> Response {
    with_headers("text/html; charset=utf-8", INDEX.as_bytes())
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => with_headers(content_type, body),
        None => (StatusCode::NOT_FOUND, "no such file\n").into_response(),
    }
}

fn with_headers(content_type: &'static str, body: &'static [u8]) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // The files change with the binary: always ask.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn text(name: &str) -> &'static str {
        let (_, _, body) = ASSETS
            .iter()
            .find(|(n, _, _)| *n == name)
            .unwrap_or_else(|| panic!("no asset {name}"));
        std::str::from_utf8(body).expect("UTF-8")
    }

    /// Every `/assets/...` the page and the modules refer to is served.
    #[test]
    fn every_referenced_file_is_served() {
        let mut sources: Vec<&str> = vec![INDEX];
        sources.extend(
            ASSETS
                .iter()
                .filter(|(n, _, _)| n.ends_with(".js"))
                .map(|(n, _, _)| text(n)),
        );
        let re = regex::Regex::new(r#"(?:/assets/|from '\./)([a-z0-9_-]+\.[a-z]+)"#).expect("re");
        let mut seen = BTreeSet::new();
        for s in sources {
            for c in re.captures_iter(s) {
                seen.insert(c[1].to_string());
            }
        }
        for name in &seen {
            assert!(
                ASSETS.iter().any(|(n, _, _)| n == name),
                "{name} is referred to but not served"
            );
        }
        for (name, _, _) in ASSETS {
            assert!(seen.contains(*name), "{name} is served but never used");
        }
    }

    /// The two dictionaries have the same keys, and every key the page uses is in them.
    #[test]
    fn every_ui_string_is_in_both_languages() {
        let src = text("i18n.js");
        let start = src.find("export const STRINGS = ").expect("the dictionary")
            + "export const STRINGS = ".len();
        let end = start + src[start..].find("\n};").expect("its end") + 2;
        let dict: serde_json::Value =
            serde_json::from_str(&src[start..end]).expect("the dictionary is JSON");
        let keys = |lang: &str| -> BTreeSet<String> {
            dict[lang]
                .as_object()
                .unwrap_or_else(|| panic!("no {lang}"))
                .keys()
                .cloned()
                .collect()
        };
        let en = keys("en");
        let zh = keys("zh-TW");
        assert_eq!(
            en.symmetric_difference(&zh).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "keys in one language only"
        );
        // `t('key')`, `data-i18n="key"`, `data-i18n-attr="key"`, and any quoted
        // `namespace.key` whose namespace the dictionary has (keys listed in arrays).
        let used = regex::Regex::new(
            r#"(?:\bt\(|data-i18n(?:-[a-z]+)*=)["']([a-z0-9_.]+)["']|["']([a-z]+\.[a-z0-9_]+)["']"#,
        )
        .expect("re");
        let namespaces: BTreeSet<&str> = en.iter().filter_map(|k| k.split('.').next()).collect();
        let mut n = 0;
        for s in std::iter::once(INDEX).chain(
            ASSETS
                .iter()
                .filter(|(name, _, _)| name.ends_with(".js") && *name != "i18n.js")
                .map(|(name, _, _)| text(name)),
        ) {
            for c in used.captures_iter(s) {
                let key = match (c.get(1), c.get(2)) {
                    (Some(k), _) => k.as_str(),
                    (None, Some(k))
                        if namespaces.contains(k.as_str().split('.').next().unwrap_or("")) =>
                    {
                        k.as_str()
                    }
                    _ => continue,
                };
                n += 1;
                assert!(
                    en.contains(key),
                    "`{key}` is used but not in the dictionary"
                );
            }
        }
        // Keys made from data (`t(`sev.${s}`)`).
        for family in [
            ("sev", &["info", "low", "medium", "high", "critical"][..]),
            ("role", &["source", "stage", "sink"]),
            (
                "state",
                &["gathering", "pending", "sending", "sent", "dead"],
            ),
            (
                "status",
                &["firing", "resolved", "firing_help", "resolved_help"],
            ),
            ("change", &["new", "firing", "resolved"]),
            ("type", &["event", "alert"]),
            ("stream", &["connecting", "live", "reconnecting", "closed"]),
            ("silences", &["active", "pending", "expired"]),
            (
                "banstate",
                &["active", "expired", "removed", "extended", "vanished"],
            ),
            ("origin", &["alert", "api", "adopted"]),
        ] {
            for v in family.1 {
                let key = format!("{}.{v}", family.0);
                assert!(en.contains(&key), "`{key}` is not in the dictionary");
            }
        }
        assert!(n > 50, "only {n} uses of the dictionary found");
    }

    #[tokio::test]
    async fn files_have_their_type_and_a_strict_policy() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app: Router = routes();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = reqwest::Client::new();
        for (path, want) in [
            ("/", "text/html; charset=utf-8"),
            ("/assets/app.js", "text/javascript; charset=utf-8"),
            ("/assets/app.css", "text/css; charset=utf-8"),
            ("/assets/favicon.svg", "image/svg+xml"),
        ] {
            let resp = client
                .get(format!("http://{addr}{path}"))
                .send()
                .await
                .expect("answer");
            assert_eq!(resp.status().as_u16(), 200, "{path}");
            assert_eq!(resp.headers()[header::CONTENT_TYPE], want, "{path}");
            assert_eq!(resp.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            let csp = resp.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .expect("ascii");
            assert!(csp.contains("default-src 'none'"), "{csp}");
            assert!(csp.contains("script-src 'self';"), "{csp}");
            assert!(!csp.contains("unsafe"), "{csp}");
        }
        let resp = client
            .get(format!("http://{addr}/assets/nope.js"))
            .send()
            .await
            .expect("answer");
        assert_eq!(resp.status().as_u16(), 404);
    }
}
