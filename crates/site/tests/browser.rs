//! The web UI in a real browser (Debian chromium driven through chromedriver): log in,
//! register a runtime (bad values first: the form names the field, both for what it checks
//! itself and for what only the server knows, and nothing is stored), look a library up in
//! the manifest viewer, start a session, and see JupyterLab load through the site's proxy;
//! then the operator's actions: deprecate, edit a runtime, page through a manifest, stop a
//! runtime's sessions, every page at 1280 and 800 pixels, tokens and users; a session's CPU and
//! memory in its row; JupyterLab's File menu back to the site (Hub Control Panel, Log Out).
//! Screenshots are kept in target/test-artifacts/.

mod common;

use std::panic::AssertUnwindSafe;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt;
use serde_json::json;

/// chromedriver, killed (with the browsers it started) when the test ends.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn artifacts() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts");
    std::fs::create_dir_all(&dir).expect("creating target/test-artifacts");
    dir
}

/// Upper bound for any one wait in the browser; the site's own start timeout ends a session
/// that never answers long before this.
const WAIT: Duration = Duration::from_secs(300);

async fn screenshot(c: &Client, name: &str) -> Vec<u8> {
    let png = c.screenshot().await.expect("a screenshot");
    std::fs::write(artifacts().join(name), &png).expect("writing the screenshot");
    png
}

async fn text(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
}

async fn fill(c: &Client, id: &str, value: &str) {
    let el = c
        .find(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("#{id}: {e}"));
    el.clear().await.unwrap();
    el.send_keys(value).await.unwrap();
}

/// Clicks the element once it is there: pages fill their tables from the API after loading,
/// so an immediate lookup races the fetch.
async fn click(c: &Client, css: &str) {
    wait_for(c, css)
        .await
        .click()
        .await
        .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
}

async fn wait_for(c: &Client, css: &str) -> fantoccini::elements::Element {
    match c.wait().at_most(WAIT).for_element(Locator::Css(css)).await {
        Ok(e) => e,
        Err(e) => {
            let name = format!(
                "site-waiting-{}.png",
                css.replace(|ch: char| !ch.is_ascii_alphanumeric(), "_")
            );
            screenshot(c, &name).await;
            panic!("waiting for {css}: {e} (screenshot {name})");
        }
    }
}

/// Log in through the site's login form, which the page shows.
async fn log_in(c: &Client, token: &str) {
    wait_for(c, "#login-token")
        .await
        .send_keys(token)
        .await
        .unwrap();
    click(c, "#login-submit").await;
    wait_for(c, "#nav:not([hidden])").await;
}

/// Open JupyterLab's File menu and click the item of `command`.
async fn file_menu_item(c: &Client, command: &str) {
    let file = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::XPath(
            "//li[contains(@class, 'lm-MenuBar-item')][.//*[text()='File']]",
        ))
        .await
        .expect("JupyterLab's File menu");
    file.click().await.expect("opening the File menu");
    click(c, &format!("li.lm-Menu-item[data-command='{command}']")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_registers_a_runtime_and_opens_jupyterlab() {
    if !nbrt_testkit::require_docker()
        || !nbrt_testkit::require("chromium", &["--version"], "chromium")
        || !nbrt_testkit::require("chromedriver", &["--version"], "chromium-driver")
    {
        return;
    }
    let image = jupyter_image();
    let t = start_site(|_| {}).await;
    let port = nbrt_testkit::free_port();
    let _driver = Driver(
        Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver"),
    );
    let webdriver = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if reqwest::get(format!("{webdriver}/status")).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let profile = tempfile::tempdir().expect("a browser profile directory");
    let caps = json!({"goog:chromeOptions": {
        "binary": "/usr/bin/chromium",
        "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1000",
                 format!("--user-data-dir={}", profile.path().display())]}});
    let caps = caps.as_object().expect("an object").clone();
    let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&webdriver)
        .await
        .expect("a chromium session through chromedriver");
    // Close the browser whatever happens, then report.
    let result = AssertUnwindSafe(drive(&c, &t, &image)).catch_unwind().await;
    let _ = c.clone().close().await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

async fn drive(c: &Client, t: &TestSite, image: &str) {
    // Log in with the admin token.
    c.goto(&t.base).await.unwrap();
    log_in(c, &t.admin).await;
    let who = text(c, "#who").await;
    assert!(who.starts_with("admin"), "{who}");

    // Register. First a zero memory: the form's own check names the field, nothing is sent.
    fill(c, "r-name", "Python (browser)").await;
    fill(c, "r-imageId", image).await;
    fill(c, "r-maxCpu", "1").await;
    fill(c, "r-maxMemory", "0").await;
    click(c, "#register-submit").await;
    wait_for(c, "#register-error:not(:empty)").await;
    let msg = text(c, "#register-error").await;
    assert!(msg.contains("maxMemory"), "{msg}");
    let by_field = text(c, ".field-error[data-for='maxMemory']").await;
    assert!(by_field.contains("greater than zero"), "{by_field}");
    let class = c
        .find(Locator::Id("r-maxMemory"))
        .await
        .unwrap()
        .attr("class")
        .await
        .unwrap();
    assert_eq!(class.as_deref(), Some("invalid"));
    let listed = t.call("GET", "/api/runtimes", Some(&t.admin), None).await;
    assert_eq!(listed.body["runtimes"], json!([]));
    screenshot(c, "site-register-invalid.png").await;

    // Then an image the engine does not have: only the server knows, and its answer lands
    // next to the image field.
    fill(c, "r-maxMemory", "1").await;
    fill(c, "r-imageId", &format!("sha256:{}", "0".repeat(64))).await;
    click(c, "#register-submit").await;
    let slot = wait_for(c, ".field-error[data-for='imageId']:not(:empty)").await;
    let by_field = slot.text().await.unwrap();
    assert!(by_field.contains("no image"), "{by_field}");
    let msg = text(c, "#register-error").await;
    assert!(msg.contains("imageId"), "{msg}");
    assert_eq!(
        text(c, ".field-error[data-for='maxMemory']").await,
        "",
        "the fixed field's error is gone"
    );
    let listed = t.call("GET", "/api/runtimes", Some(&t.admin), None).await;
    assert_eq!(listed.body["runtimes"], json!([]));

    // The real image, with an uploaded manifest.
    let manifest = t.dir.path().join("manifest.json");
    std::fs::write(
        &manifest,
        json!([{"name": "numpy", "version": "2.1.0", "channel": "conda-forge"},
               {"name": "pandas", "version": "2.2.3", "channel": "conda-forge"},
               {"name": "scipy", "version": "1.14.1", "channel": "conda-forge"}])
        .to_string(),
    )
    .unwrap();
    fill(c, "r-imageId", image).await;
    c.find(Locator::Id("r-manifest"))
        .await
        .unwrap()
        .send_keys(&manifest.display().to_string())
        .await
        .unwrap();
    click(c, "#register-submit").await;
    let row = wait_for(c, "tr[data-name='Python (browser)']").await;
    let listed = t.call("GET", "/api/runtimes", Some(&t.admin), None).await;
    let rt = &listed.body["runtimes"][0];
    assert_eq!(rt["maxMemory"], 1.0);
    assert_eq!(rt["maxMemoryUnit"], "g");
    assert_eq!(rt["maxSwapMemory"], 2.0, "twice the memory by default");
    assert_eq!(rt["libraryCount"], 3);

    // The manifest viewer finds a library.
    wait_for(c, "#manifest-table tbody tr").await;
    fill(c, "manifest-search", "pand").await;
    assert_eq!(text(c, "#manifest-count").await, "1 of 3");
    assert!(text(c, "#manifest-table tbody").await.contains("2.2.3"));
    screenshot(c, "site-runtimes.png").await;

    // Start a session from the runtime's row; the sessions page shows it ready.
    row.find(Locator::Css("button.start"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let open = match c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("a.open"))
        .await
    {
        Ok(o) => o,
        Err(e) => {
            screenshot(c, "site-sessions-failed.png").await;
            let s = t
                .call("GET", "/api/sessions?all=true", Some(&t.admin), None)
                .await;
            panic!("no ready session in the UI ({e}); sessions: {}", s.text);
        }
    };
    let href = open.attr("href").await.unwrap().expect("the open link");
    let cull = text(c, "tr[data-state='ready'] td[data-label='culled at']").await;
    assert_ne!(cull, "—", "a ready session shows when it would be culled");
    // What it uses now, from the engine, refreshed while the page is open.
    let usage = wait_for(c, "tr[data-state='ready'] td.usage[data-available='true']")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        usage.starts_with("CPU ") && usage.contains(" MiB of 1.0 GiB"),
        "{usage}"
    );
    screenshot(c, "site-sessions.png").await;

    // JupyterLab through the proxy (cookie login; the proxy sends the session's token).
    let url = if href.starts_with("http") {
        href
    } else {
        format!("{}{href}", t.base)
    };
    assert!(url.contains("/user/admin/"), "{url}");
    c.goto(&url).await.unwrap();
    wait_for(c, "#jp-main-dock-panel").await;
    // The launcher appears once Lab has talked to the server (kernelspecs through the proxy).
    wait_for(c, ".jp-Launcher").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let png = screenshot(c, "site-jupyterlab.png").await;
    assert!(png.len() > 10_000, "a real screenshot");
    let title = c.title().await.unwrap();
    assert!(title.contains("JupyterLab"), "{title}");

    // JupyterLab's way back: File › Hub Control Panel opens the site's sessions page in a new
    // tab; File › Log Out logs out of the site.
    let lab_window = c.window().await.unwrap();
    file_menu_item(c, "hub:control-panel").await;
    let mut panel = None;
    for _ in 0..100 {
        let windows = c.windows().await.unwrap();
        if let Some(w) = windows.into_iter().find(|w| *w != lab_window) {
            panel = Some(w);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let panel = panel.expect("Hub Control Panel opened no tab");
    c.switch_to_window(panel).await.unwrap();
    wait_for(c, "#page-sessions:not([hidden])").await;
    let at = c.current_url().await.unwrap();
    assert_eq!(at.as_str(), format!("{}/#sessions", t.base), "{at}");
    screenshot(c, "site-hub-control-panel.png").await;
    c.close_window().await.unwrap();
    c.switch_to_window(lab_window).await.unwrap();
    file_menu_item(c, "hub:logout").await;
    wait_for(c, "#login-token").await;
    let at = c.current_url().await.unwrap();
    assert_eq!(at.as_str(), format!("{}/", t.base), "{at}");
    let me = c
        .execute(
            "return fetch('/api/me', {credentials: 'same-origin'}).then(r => r.status)",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(me, json!(401), "logged out of the site");
    // In again, for the rest.
    log_in(c, &t.admin).await;

    // Deprecated (issue 18): the row offers no "Start session" any more; the session that
    // runs on it goes on.
    c.goto(&format!("{}/#runtimes", t.base)).await.unwrap();
    let row = "tr[data-name='Python (browser)']";
    click(c, &format!("{row} button.deprecate")).await;
    wait_for(c, &format!("{row} .tag.deprecated")).await;
    assert!(
        c.find(Locator::Css(&format!("{row} button.start")))
            .await
            .is_err(),
        "a deprecated runtime shows no Start session"
    );
    let sessions = t.call("GET", "/api/sessions", Some(&t.admin), None).await;
    assert_eq!(
        sessions.body["sessions"][0]["state"], "ready",
        "{}",
        sessions.text
    );

    // Runtime edit (issue 18): a bad value lands by its field and changes nothing; a good one
    // is saved, and only it changes.
    click(c, &format!("{row} button.edit")).await;
    wait_for(c, "#edit-section:not([hidden])").await;
    fill(c, "e-maxCpu", "-1").await;
    click(c, "#edit-submit").await;
    wait_for(c, "#edit-error:not(:empty)").await;
    let by_field = text(c, "#edit-form .field-error[data-for='maxCpu']").await;
    assert!(by_field.contains("greater than zero"), "{by_field}");
    let rt = t.call("GET", "/api/runtimes", Some(&t.admin), None).await;
    assert_eq!(rt.body["runtimes"][0]["maxCpu"], 1.0, "nothing saved");
    fill(c, "e-maxCpu", "2").await;
    click(c, "#edit-submit").await;
    wait_for(c, "#edit-section[hidden]").await;
    let rt = t.call("GET", "/api/runtimes", Some(&t.admin), None).await;
    let rt = &rt.body["runtimes"][0];
    assert_eq!(
        (&rt["maxCpu"], &rt["maxMemory"], &rt["maxSwapMemory"]),
        (&json!(2.0), &json!(1.0), &json!(2.0)),
        "only the CPU changed: {rt}"
    );

    // The warm pool's size in the same form: out of range is refused by its field; a size is
    // saved and shown in the runtime's row, and 0 turns the pool off. (The runtime is
    // deprecated here, so the site starts no member for it.)
    click(c, &format!("{row} button.edit")).await;
    wait_for(c, "#edit-section:not([hidden])").await;
    fill(c, "e-warmPool", "20").await;
    click(c, "#edit-submit").await;
    wait_for(
        c,
        "#edit-form .field-error[data-for='warmPool']:not(:empty)",
    )
    .await;
    fill(c, "e-warmPool", "1").await;
    click(c, "#edit-submit").await;
    wait_for(c, "#edit-section[hidden]").await;
    let saved = t.call("GET", "/api/runtimes", Some(&t.admin), None).await;
    assert_eq!(saved.body["runtimes"][0]["warmPool"], 1, "{}", saved.text);
    let cell = text(c, &format!("{row} td[data-label='warm pool']")).await;
    assert!(cell.contains("of 1 ready"), "{cell}");
    click(c, &format!("{row} button.edit")).await;
    wait_for(c, "#edit-section:not([hidden])").await;
    fill(c, "e-warmPool", "0").await;
    click(c, "#edit-submit").await;
    wait_for(c, "#edit-section[hidden]").await;
    let saved = t.call("GET", "/api/runtimes", Some(&t.admin), None).await;
    assert_eq!(saved.body["runtimes"][0]["warmPool"], 0, "{}", saved.text);

    // The manifest a page at a time.
    let libraries: Vec<_> = (0..120)
        .map(|i| json!({"name": format!("lib{i:03}"), "version": "1.0"}))
        .collect();
    let id = rt["id"].as_str().unwrap().to_string();
    let put = t
        .call(
            "PUT",
            &format!("/api/runtimes/{id}/manifest"),
            Some(&t.admin),
            Some(json!(libraries)),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.text);
    c.refresh().await.unwrap();
    wait_for(c, "#manifest-table tbody tr").await;
    let page_is = |want: &'static str| async move {
        for _ in 0..100 {
            if text(c, "#manifest-page").await == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "the manifest pager never said {want}: {}",
            text(c, "#manifest-page").await
        );
    };
    page_is("1–50 of 120").await;
    click(c, "#manifest-next").await;
    page_is("51–100 of 120").await;
    assert!(text(c, "#manifest-table tbody").await.contains("lib050"));

    // Stop every session of the runtime.
    click(c, &format!("{row} button.stop-all")).await;
    // The confirmation comes once the page has fetched the runtime's sessions.
    let mut confirmed = Err(None);
    for _ in 0..100 {
        match c.accept_alert().await {
            Ok(()) => {
                confirmed = Ok(());
                break;
            }
            Err(e) => confirmed = Err(Some(e)),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    confirmed.unwrap_or_else(|e| panic!("no confirmation to stop the sessions: {e:?}"));
    let mut said = String::new();
    for _ in 0..600 {
        said = text(c, "#runtimes-ok").await;
        if said.starts_with("stopped") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(said.starts_with("stopped 1 session"), "{said}");
    let active = t.call("GET", "/api/sessions", Some(&t.admin), None).await;
    assert_eq!(active.body["sessions"], json!([]), "{}", active.text);

    // Every page at 1280 and 800 pixels: nothing wider than the window (wide tables scroll
    // in their own box); the screenshots are kept to look at.
    for width in [1280u32, 800] {
        c.set_window_size(width, 1000).await.unwrap();
        for page in [
            "runtimes",
            "sessions",
            "notebooks",
            "migration",
            "sessionenv",
            "account",
        ] {
            c.goto(&format!("{}/#{page}", t.base)).await.unwrap();
            wait_for(c, &format!("#page-{page}:not([hidden])")).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let fits = c
                .execute(
                    "return [document.documentElement.scrollWidth, window.innerWidth]",
                    vec![],
                )
                .await
                .unwrap();
            let (scroll, inner) = (fits[0].as_u64().unwrap(), fits[1].as_u64().unwrap());
            assert!(
                scroll <= inner,
                "#{page} at {width} px: {scroll} px wide in {inner}"
            );
            if page == "runtimes" {
                let edit = c.find(Locator::Id("edit-section")).await.unwrap();
                assert!(
                    !edit.is_displayed().await.unwrap(),
                    "the edit form shows only when asked"
                );
            }
            screenshot(c, &format!("site-{width}-{page}.png")).await;
        }
    }
    c.set_window_size(1400, 1000).await.unwrap();

    // Tokens and users (issue 17): the login's own token is listed and marked; a new token is
    // shown once; an admin creates a user and disables it, and the API agrees.
    c.goto(&format!("{}/#account", t.base)).await.unwrap();
    wait_for(c, "#tokens-table tbody tr .tag").await;
    let tokens = text(c, "#tokens-table tbody").await;
    assert!(
        tokens.contains("web login") && tokens.contains("initial"),
        "{tokens}"
    );
    fill(c, "token-label", "from the browser").await;
    click(c, "#token-form button").await;
    wait_for(c, "#token-new:not(:empty)").await;
    assert!(text(c, "#token-new").await.contains("nbrt_"));
    fill(c, "user-name", "carol").await;
    click(c, "#user-form button").await;
    wait_for(c, "#user-new:not(:empty)").await;
    wait_for(c, "button[data-toggle='carol']").await;
    click(c, "button[data-toggle='carol']").await;
    wait_for(c, "button[data-toggle='carol'][data-disabled='true']").await;
    let carol = t
        .call("GET", "/api/users/carol", Some(&t.admin), None)
        .await;
    assert_eq!(carol.body["user"]["disabled"], true, "{}", carol.text);
    screenshot(c, "site-account.png").await;
}
