//! The web dashboard (`/ui/`). Always: its files are served public, typed, revalidated
//! and under a strict Content-Security-Policy, nothing in them points to another origin,
//! `/` redirects to it, and the API behind it still wants a token. With a real headless
//! Chromium (`MOTA_TEST_CHROMIUM` names the binary): a fleet of simulated devices takes a
//! fine-tuned model in two cohorts over the embedded broker (the second waits for
//! approval, so the page is also checked mid-rollout, deterministically), and the rendered
//! pages (the DOM after the page's own scripts ran against the live API) show the rollout,
//! each cohort's progress, gates, device outcomes and histograms, and the device list with
//! its filters; screenshots are kept in `MOTA_ARTIFACTS` (default `target/artifacts`).

mod common;

use std::ffi::OsString;
use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::rollouts::{created, registered, rollout, setup, wait_state};
use common::{Api, BoxError, TestResult, eventually, fleet, model};
use serde_json::json;

const DEVICES: usize = 20;

#[tokio::test]
async fn the_files_are_public_typed_revalidated_and_locked_down() -> TestResult {
    let api = Api::new().await?;
    let get = |uri: &str, etag: Option<&str>| {
        let mut request = Request::get(uri);
        if let Some(tag) = etag {
            request = request.header(header::IF_NONE_MATCH, tag);
        }
        request.body(Body::empty())
    };
    for (path, content_type) in [
        ("/ui/", "text/html; charset=utf-8"),
        ("/ui/index.html", "text/html; charset=utf-8"),
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/style.css", "text/css; charset=utf-8"),
    ] {
        let r = api.send(get(path, None)?).await?;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        let h = |name: header::HeaderName| r.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        assert_eq!(h(header::CONTENT_TYPE), content_type, "{path}");
        assert_eq!(h(header::CACHE_CONTROL), "no-cache", "{path}");
        assert_eq!(h(header::X_CONTENT_TYPE_OPTIONS), "nosniff", "{path}");
        let csp = h(header::CONTENT_SECURITY_POLICY);
        for directive in ["default-src 'self'", "script-src 'self'", "style-src 'self'", "object-src 'none'"] {
            assert!(csp.split(';').any(|d| d.trim() == directive), "{path}: {directive} missing from {csp}");
        }
        assert!(!csp.contains("unsafe-") && !csp.contains('*') && !csp.contains("http"), "{path}: {csp}");
        // Revalidation: the same bytes answer 304 to their tag.
        let tag = h(header::ETAG);
        assert!(tag.starts_with('"') && tag.len() > 8, "{path}: ETag {tag:?}");
        let again = api.send(get(path, Some(&tag))?).await?;
        assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{path}");
        assert!(again.body.is_empty());

        // Works offline: no file names another origin (the SVG namespace is a name, not a
        // fetch), and the page runs no inline script.
        let text = String::from_utf8(r.body)?.replace("http://www.w3.org/2000/svg", "");
        for remote in ["http://", "https://", "//cdn", "@import", "url("] {
            assert!(!text.contains(remote), "{path} refers to {remote}");
        }
        if content_type.starts_with("text/html") {
            let scripts: Vec<&str> = text.split("<script").skip(1).collect();
            assert!(!scripts.is_empty(), "the page loads its script");
            for s in scripts {
                let tag = s.split('>').next().unwrap_or_default();
                assert!(tag.contains("src=\"app.js\""), "inline script: <script{tag}>");
                assert!(s.split_once('>').is_some_and(|(_, rest)| rest.starts_with("</script>")), "inline script body");
            }
            for handler in ["onclick=", "onload=", "onsubmit=", "onerror=", "javascript:"] {
                assert!(!text.contains(handler), "inline handler {handler}");
            }
            assert!(!text.contains(" style=\""), "no inline style");
        }
        if content_type.starts_with("text/javascript") {
            // API strings reach the DOM as text only.
            for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"] {
                assert!(!text.contains(sink), "app.js uses {sink}");
            }
        }
    }

    // `/` and `/ui` lead to the dashboard.
    for path in ["/", "/ui"] {
        let r = api.send(get(path, None)?).await?;
        assert!(r.status.is_redirection(), "{path}: {}", r.status);
        assert_eq!(r.headers.get(header::LOCATION).and_then(|v| v.to_str().ok()), Some("/ui/"), "{path}");
    }
    // Nothing else is served under /ui/, and the data is not public.
    assert_eq!(api.send(get("/ui/secret.json", None)?).await?.status, StatusCode::NOT_FOUND);
    for path in ["/v1/rollouts", "/v1/devices", "/v1/whoami", "/v1/rollouts/1/devices"] {
        let r = api.send(get(path, None)?).await?;
        assert_eq!((r.status, r.code()), (StatusCode::UNAUTHORIZED, "unauthorized".to_owned()), "{path}");
        let r = api.get(path, "mota_0000").await?;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    assert_eq!(api.get("/v1/whoami", &api.viewer).await?.status, StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn chromium_renders_a_rollout_of_a_simulated_fleet() -> TestResult {
    let Some(browser) = std::env::var_os("MOTA_TEST_CHROMIUM").filter(|b| !b.is_empty()) else {
        println!(
            "MOTA_TEST_CHROMIUM is not set: the dashboard is not rendered in a browser (.ci/run installs chromium)"
        );
        return Ok(());
    };
    tokio::task::LocalSet::new().run_until(in_chromium(browser)).await
}

async fn in_chromium(browser: OsString) -> TestResult {
    let _turn = common::broker_turn().await;
    let (api, backend, (host, port), _) =
        setup("dashboard", &[("1.0.0", "digits_cnn_v1", ""), ("1.1.0", "digits_cnn_v2", "")]).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let app = api.router.clone();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let chrome = Chromium::new(browser)?;
    let viewer = api.viewer.clone();
    let ui = |view: &str| format!("{base}/ui/#token={viewer}&view={view}");

    // No token: the form; a wrong one: the form with the API's own message.
    let dom = chrome.dom(&format!("{base}/ui/")).await?;
    assert!(!one(&dom, "id=\"login\"")?.contains("hidden"), "{dom}");
    let dom = chrome.dom(&format!("{base}/ui/#token=mota_0000")).await?;
    assert!(dom.contains("unknown or revoked token"), "{dom}");
    assert!(!dom.contains("mota_0000"), "the token is not in the page");

    let prefix = format!("d{}-", std::process::id());
    let v1 = model("digits_cnn_v1")?;
    let devices = fleet(&api.dir.path().join("data"), (&host, port), &prefix, DEVICES, &v1, Default::default()).await?;
    registered(&api, &prefix, DEVICES).await?;
    let ids: Vec<String> = devices.iter().map(|(id, _)| id.clone()).collect();
    for id in &ids[..3] {
        assert_eq!(api.send(tagged(id, "lab", &api.operator)?).await?.status, StatusCode::OK);
    }
    let body = json!({
        "model": "digits", "version": "1.1.0",
        "selector": { "ids": ids },
        "plan": { "cohorts": [{ "percent": 25 }, { "percent": 100 }], "canary": [ids[0], ids[1]], "approval": true },
        // Latency is wall-clock time on a busy test machine: a loose limit, still shown.
        "gates": { "min_reports": 2, "max_failure_permille": 0, "stuck_timeout_s": 120,
                   "min_accuracy_permille": 800, "max_accuracy_drop_permille": 20,
                   "max_latency_increase_permille": 10000 },
    });
    let id = created(&api.json("POST", "/v1/rollouts", &api.operator, body).await?)?;

    // While it runs: the first cohort passed, the second waits for approval.
    eventually(120, "the first cohort to pass", || async {
        Ok((rollout(&api, id).await?["awaiting_approval"] == true).then_some(()))
    })
    .await?;
    let dom = chrome.dom(&ui(&format!("/rollouts/{id}"))).await?;
    assert_eq!(start_tags(&dom, &format!("id=\"rollout-title\" data-rollout=\"{id}\"")).len(), 1, "{dom}");
    assert!(one(&dom, "id=\"rollout-state\"")?.contains("data-state=\"running\""), "{dom}");
    one(&dom, "id=\"awaiting-approval\"")?;
    let first = section(&dom, "id=\"cohort-0\"", "</section>");
    assert!(one(first, "id=\"cohort-0\"")?.contains("data-state=\"passed\""), "{first}");
    assert_eq!(bar(first), [("committed", 5)], "{first}");
    let second = section(&dom, "id=\"cohort-1\"", "</section>");
    assert!(one(second, "id=\"cohort-1\"")?.contains("data-state=\"pending\""), "{second}");
    assert_eq!(bar(second), [("pending", 15)], "{second}");
    let verdicts = start_tags(second, "data-gate=");
    assert_eq!(verdicts.len(), 5, "{second}");
    assert!(verdicts.iter().all(|g| g.contains("data-verdict=\"pending\"")), "not judged yet: {verdicts:?}");
    assert_eq!(count_attr(second, "data-attempt-state=\"pending\""), 15, "{second}");
    for kind in ["accuracy", "latency"] {
        assert!(one(second, &format!("data-histogram=\"{kind}\""))?.contains("data-n=\"0\""), "{second}");
    }
    let shot = chrome.screenshot(&ui(&format!("/rollouts/{id}")), "dashboard-rollout-awaiting.png").await?;
    println!("screenshot of rollout {id} awaiting approval: {}", shot.display());
    let dom = chrome.dom(&ui("/rollouts")).await?;
    let row = section(&dom, &format!("id=\"rollout-{id}\""), "</tr>");
    assert!(row.contains("data-state=\"running\"") && row.contains("awaiting approval"), "{row}");
    assert!(row.contains("data-cohorts-passed=\"1\" data-cohorts=\"2\""), "{row}");
    assert!(row.contains("data-committed=\"5\" data-devices=\"20\""), "{row}");

    let r = api.json("POST", &format!("/v1/rollouts/{id}/approve"), &api.operator, json!(null)).await?;
    assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
    let done = wait_state(&api, id, 240, "completed").await?;
    let sizes: Vec<i64> =
        done["cohorts"].as_array().ok_or("no cohorts")?.iter().filter_map(|c| c["size"].as_i64()).collect();
    assert_eq!(sizes, [5, 15]);

    // The list: one row, both cohorts passed, every device committed.
    let dom = chrome.dom(&ui("/rollouts")).await?;
    let row = one(&dom, &format!("id=\"rollout-{id}\""))?;
    assert!(row.contains("data-state=\"completed\""), "{row}");
    let row_cells = section(&dom, &format!("id=\"rollout-{id}\""), "</tr>");
    assert!(row_cells.contains("data-cohorts-passed=\"2\" data-cohorts=\"2\""), "{row_cells}");
    assert!(row_cells.contains("data-committed=\"20\" data-devices=\"20\""), "{row_cells}");
    assert!(row_cells.contains(">digits<") && row_cells.contains(">1.1.0<"), "{row_cells}");
    let shot = chrome.screenshot(&ui("/rollouts"), "dashboard-rollouts.png").await?;
    println!("screenshot of the rollouts: {}", shot.display());

    // The rollout: header, and per cohort its progress, gates, outcomes and histograms.
    let dom = chrome.dom(&ui(&format!("/rollouts/{id}"))).await?;
    assert!(one(&dom, "id=\"rollout-state\"")?.contains("data-state=\"completed\""), "{dom}");
    assert!(
        section(&dom, "id=\"rollout-plan\"", "</span>").contains("25 % → 100 % (2 canaries, approval between cohorts)"),
        "{dom}"
    );
    for (c, size) in [(0, 5), (1, 15)] {
        let card = section(&dom, &format!("id=\"cohort-{c}\""), "</section>");
        let head = one(&dom, &format!("id=\"cohort-{c}\""))?;
        assert!(head.contains("data-state=\"passed\"") && head.contains(&format!("data-size=\"{size}\"")), "{head}");
        assert_eq!(bar(card), [("committed", size)], "{card}");
        // Every gate is shown with its verdict: all hold.
        for gate in ["failure_rate", "min_accuracy", "accuracy_drop", "latency_increase", "min_reports"] {
            let row = one(card, &format!("data-gate=\"{gate}\""))?;
            assert!(row.contains("data-verdict=\"holds\""), "cohort {c}: {row}");
        }
        assert!(section(card, "data-gate=\"min_reports\"", "</tr>").contains(">holds<"), "{card}");
        // Outcomes: every device committed, as a patch or the full image.
        let committed = one(card, "data-attempt-state=")?;
        assert!(committed.contains("\"committed\"") && committed.contains(&format!("data-count=\"{size}\"")), "{card}");
        let images: u64 = ["patch", "full"].iter().map(|i| count_attr(card, &format!("data-image=\"{i}\""))).sum();
        assert_eq!(images, size, "{card}");
        // Histograms over the devices that reported, bars adding up to them, with the
        // previous model's mean marked.
        for kind in ["accuracy", "latency"] {
            let svg = section(card, &format!("data-histogram=\"{kind}\""), "</svg>");
            let head = one(svg, "data-histogram=")?;
            assert!(head.contains(&format!("data-n=\"{size}\"")), "{kind}: {head}");
            let bars = start_tags(svg, "class=\"hbar\"");
            assert!(!bars.is_empty(), "{kind}: no bars in {svg}");
            let total: u64 = bars.iter().map(|b| attr(b, "data-count").and_then(|v| v.parse().ok()).unwrap_or(0)).sum();
            assert_eq!(total, size, "{kind}: {svg}");
            assert_eq!(start_tags(svg, "class=\"mean-prev\"").len(), 1, "{kind}: {svg}");
        }
    }
    let shot = chrome.screenshot(&ui(&format!("/rollouts/{id}")), "dashboard-rollout.png").await?;
    println!("screenshot of rollout {id}: {}", shot.display());

    // Devices: all of them on 1.1.0; the tag filter narrows to the tagged ones.
    let dom = chrome.dom(&ui("/devices")).await?;
    let rows = start_tags(&dom, "data-device=");
    assert_eq!(rows.len(), DEVICES, "{dom}");
    for id in &ids {
        let row = section(&dom, &format!("id=\"device-{id}\""), "</tr>");
        assert!(row.contains(">digits<") && row.contains(">1.1.0<") && row.contains(">mcu<"), "{row}");
    }
    let dom = chrome.dom(&ui("/devices?tag=lab&class=mcu")).await?;
    let listed: Vec<String> =
        start_tags(&dom, "data-device=").iter().filter_map(|t| attr(t, "data-device").map(str::to_owned)).collect();
    assert_eq!(listed, ids[..3], "{dom}");
    assert!(section(&dom, &format!("id=\"device-{}\"", ids[0]), "</tr>").contains(">lab<"));
    let dom = chrome.dom(&ui("/devices?class=other")).await?;
    assert!(start_tags(&dom, "data-device=").is_empty() && dom.contains("No devices match."), "{dom}");
    let shot = chrome.screenshot(&ui("/devices"), "dashboard-devices.png").await?;
    println!("screenshot of the devices: {}", shot.display());

    server.abort();
    backend.stop().await;
    Ok(())
}

fn tagged(id: &str, tag: &str, token: &str) -> Result<Request<Body>, BoxError> {
    Ok(Request::put(format!("/v1/devices/{id}/tags/{tag}"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())?)
}

/// The segments of a cohort's progress bar: (what, devices).
fn bar(card: &str) -> Vec<(&str, u64)> {
    start_tags(card, "data-segment=")
        .into_iter()
        .filter(|t| t.starts_with("<rect"))
        .filter_map(|t| Some((attr(t, "data-segment")?, attr(t, "data-count")?.parse().ok()?)))
        .collect()
}

/// Every start tag (`<name ...>`) in `html` that contains `needle`.
fn start_tags<'a>(html: &'a str, needle: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = html[from..].find(needle) {
        let at = from + at;
        let start = html[..at].rfind('<').unwrap_or(0);
        let end = html[at..].find('>').map_or(html.len(), |e| at + e + 1);
        out.push(&html[start..end]);
        from = end;
    }
    out
}

/// The only start tag containing `needle`.
fn one<'a>(html: &'a str, needle: &str) -> Result<&'a str, BoxError> {
    match start_tags(html, needle).as_slice() {
        [tag] => Ok(*tag),
        tags => Err(format!("{} tags with {needle}: {tags:?}", tags.len()).into()),
    }
}

/// From the start tag containing `needle` to the first `end` after it (empty if absent).
fn section<'a>(html: &'a str, needle: &str, end: &str) -> &'a str {
    let Some(at) = html.find(needle) else { return "" };
    let start = html[..at].rfind('<').unwrap_or(0);
    let stop = html[at..].find(end).map_or(html.len(), |e| at + e + end.len());
    &html[start..stop]
}

/// The value of `name="..."` in a start tag.
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=\"");
    let at = tag.find(&key)? + key.len();
    tag[at..].split('"').next()
}

/// The `data-count` of the start tag containing `needle`, 0 if none.
fn count_attr(html: &str, needle: &str) -> u64 {
    start_tags(html, needle).first().and_then(|t| attr(t, "data-count")).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// A headless Chromium, run once per page: the DOM after the page's scripts ran for a
/// few seconds of virtual time (waiting for the network is not counted), or a screenshot.
struct Chromium {
    binary: OsString,
    artifacts: PathBuf,
}

impl Chromium {
    fn new(binary: OsString) -> Result<Self, BoxError> {
        let artifacts = std::env::var_os("MOTA_ARTIFACTS")
            .filter(|a| !a.is_empty())
            .map_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/artifacts")), PathBuf::from);
        std::fs::create_dir_all(&artifacts)?;
        Ok(Self { binary, artifacts: artifacts.canonicalize()? })
    }

    async fn dom(&self, url: &str) -> Result<String, BoxError> {
        let out = self.run(vec!["--dump-dom".into(), url.into()]).await?;
        let dom = String::from_utf8(out)?;
        if !dom.contains("</html>") {
            return Err(format!("chromium printed no page for {url}: {dom}").into());
        }
        Ok(dom)
    }

    async fn screenshot(&self, url: &str, name: &str) -> Result<PathBuf, BoxError> {
        let path = self.artifacts.join(name);
        let _ = std::fs::remove_file(&path);
        self.run(vec![format!("--screenshot={}", path.display()), url.into()]).await?;
        let png = std::fs::read(&path).map_err(|e| format!("no screenshot {}: {e}", path.display()))?;
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000, "{}: not a page", path.display());
        Ok(path)
    }

    /// Runs the browser on a blocking thread (the devices and the server share this
    /// test's thread), killing it if it hangs; its standard output.
    async fn run(&self, args: Vec<String>) -> Result<Vec<u8>, BoxError> {
        let profile = tempfile::tempdir()?;
        let mut command = std::process::Command::new(&self.binary);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-quic",
                "--hide-scrollbars",
                "--window-size=1280,1600",
                "--virtual-time-budget=6000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        let what = args.join(" ");
        tokio::task::spawn_blocking(move || -> Result<Vec<u8>, BoxError> {
            let _profile = profile;
            let mut child = command.spawn()?;
            let mut stdout = child.stdout.take().ok_or("no stdout")?;
            let reader = std::thread::spawn(move || {
                let mut out = Vec::new();
                stdout.read_to_end(&mut out).map(|_| out)
            });
            let deadline = Instant::now() + Duration::from_secs(120);
            let status = loop {
                if let Some(status) = child.try_wait()? {
                    break status;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("chromium hung on {what}").into());
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            let out = reader.join().map_err(|_| "reading chromium's output")??;
            if !status.success() {
                return Err(format!("chromium {what}: {status}").into());
            }
            Ok(out)
        })
        .await?
    }
}
