//! The routes of `basic_server`: the demo page, its assets, `/config.json` and signaling at
//! `/ws`, as one warp filter (so that tests can run requests through it).

use std::convert::Infallible;

use signaling_warp::Hub;
use signaling_warp::warp::http::header::{ALLOW, CONTENT_TYPE};
use signaling_warp::warp::http::{HeaderValue, Method, StatusCode};
use signaling_warp::warp::reply::Response;
use signaling_warp::warp::{self, Filter, Rejection, Reply};

use crate::ice_config_json;

const INDEX_HTML: &str = include_str!("../demo/index.html");
const APP_JS: &str = include_str!("../demo/app.js");
const STYLE_CSS: &str = include_str!("../demo/style.css");

/// The demo page at `/`, `/app.js`, `/style.css`, `/config.json` (the ICE servers for the
/// page, see [`ice_config_json`]), signaling at `/ws` ([`signaling_warp::routes`]) and the
/// health checks `/healthz` and `/readyz` ([`signaling_warp::health`]).
///
/// The page's routes answer `GET` and `HEAD`; any other method gets `405` with
/// `Allow: GET, HEAD`.
pub fn routes(
    hub: Hub,
    ice_servers: Vec<String>,
) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    let ice = ice_config_json(&ice_servers);
    let index = warp::path::end().and(read_only(|| warp::reply::html(INDEX_HTML)));
    let config_json = warp::path("config.json")
        .and(warp::path::end())
        .and(read_only(move || {
            warp::reply::with_header(ice.clone(), CONTENT_TYPE, "application/json")
        }));
    index
        .or(asset("app.js", APP_JS, "text/javascript; charset=utf-8"))
        .or(asset("style.css", STYLE_CSS, "text/css; charset=utf-8"))
        .or(config_json)
        .or(signaling_warp::health(hub.clone()))
        .or(signaling_warp::routes(hub))
}

fn asset(
    path: &'static str,
    body: &'static str,
    content_type: &'static str,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path(path)
        .and(warp::path::end())
        .and(read_only(move || {
            warp::reply::with_header(body, CONTENT_TYPE, content_type)
        }))
}

/// `reply()` for `GET` and `HEAD` (hyper leaves out the body of the latter), `405` with
/// `Allow: GET, HEAD` for every other method.
fn read_only<R: Reply>(
    reply: impl Fn() -> R + Clone + Send + Sync + 'static,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    warp::method().map(move |method: Method| {
        if method == Method::GET || method == Method::HEAD {
            return reply().into_response();
        }
        let mut response =
            warp::reply::with_status("method not allowed\n", StatusCode::METHOD_NOT_ALLOWED)
                .into_response();
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        response
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn page_routes_answer_get_and_head_only() {
        let app = routes(Hub::default(), vec!["stun:stun.example.org".into()]);
        for path in ["/", "/app.js", "/style.css", "/config.json"] {
            for method in ["GET", "HEAD"] {
                let res = warp::test::request()
                    .method(method)
                    .path(path)
                    .reply(&app)
                    .await;
                assert_eq!(res.status(), 200, "{method} {path}");
            }
            for method in ["POST", "PUT", "DELETE", "TRACE", "PATCH", "OPTIONS"] {
                let res = warp::test::request()
                    .method(method)
                    .path(path)
                    .body("x")
                    .reply(&app)
                    .await;
                assert_eq!(res.status(), 405, "{method} {path}");
                assert_eq!(res.headers()[ALLOW], "GET, HEAD", "{method} {path}");
            }
        }
        let res = warp::test::request().path("/config.json").reply(&app).await;
        assert_eq!(res.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(
            res.body().as_ref(),
            br#"{"iceServers":[{"urls":"stun:stun.example.org"}]}"#
        );
        // Signaling is still at /ws (a plain GET there is not an upgrade), nothing elsewhere.
        let res = warp::test::request().path("/ws").reply(&app).await;
        assert_eq!(res.status(), 400);
        let res = warp::test::request().path("/nope").reply(&app).await;
        assert_eq!(res.status(), 404);
    }
}
