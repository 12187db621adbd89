//! The status page in a real browser: headless Debian `chromium` loads
//! `http://127.0.0.1:8080/status#token=…` from a running lab appliance with one live call, runs
//! the page's script (token from the fragment, `/status.json` with the bearer header) and dumps
//! the DOM: the site, gw1 and gw2 with their health and the live call count are there. Without
//! the token the DOM holds no gateway, site or domain name. Skipped (one SKIPPED line) when
//! chromium is missing outside CI; a failure under CI.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed test

mod common;
#[path = "common/ops_support.rs"]
mod ops_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Lab;
use ops_support::*;

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
}

/// The DOM of `url` after the page's script ran (virtual time: its timers fire at once).
fn dump_dom(browser: &str, url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out_path = profile.path().join("dom.html");
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-dev-shm-usage",
        ])
        .arg(format!(
            "--user-data-dir={}",
            profile.path().join("p").display()
        ))
        .arg("--virtual-time-budget=5000")
        .arg("--dump-dom")
        .arg(url)
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            assert!(st.success(), "chromium exited with {st}");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 90 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::read_to_string(&out_path).unwrap()
}

/// The `<tr …data-name="name"…>…</tr>` of the DOM.
fn row<'a>(dom: &'a str, name: &str) -> &'a str {
    let at = dom
        .find(&format!("data-name=\"{name}\""))
        .unwrap_or_else(|| panic!("no row for {name}:\n{dom}"));
    let rest = &dom[at..];
    &rest[..rest.find("</tr>").unwrap_or(rest.len())]
}

#[test]
fn the_status_page_shows_the_site_gateways_health_and_live_calls_only_with_the_token() {
    let Some(browser) = chromium() else {
        common::skip_without("chromium", "apt-get install chromium");
        return;
    };
    let lab = Lab::start();
    let token = token(&lab);
    // One call in progress (answered, media anchored).
    let mut call = LabCall::new("status-page-1@test");
    call.establish(true);
    assert!(eventually(T, || {
        let (_, b) = http_get("/status.json", Some(&token));
        serde_json::from_str::<serde_json::Value>(&b)
            .map(|v| v["calls"]["live"] == 1)
            .unwrap_or(false)
    }));

    let dom = dump_dom(
        browser,
        &format!("http://127.0.0.1:8080/status#token={token}"),
    );
    assert!(
        dom.contains("<div class=\"v\" id=\"live-calls\">1</div>"),
        "live calls:\n{dom}"
    );
    assert!(dom.contains("data-name=\"lab\""), "site lab:\n{dom}");
    assert!(dom.contains("site (this appliance)"), "{dom}");
    for gw in ["gw1.lab.example", "gw2.lab.example"] {
        assert!(
            dom.contains(&format!("<tr class=\"gateway\" data-name=\"{gw}\">")),
            "{gw}:\n{dom}"
        );
        let r = row(&dom, gw);
        assert!(r.contains("badge healthy"), "{gw} health: {r}");
    }
    assert!(row(&dom, "sip.cloud.lab.example").contains("cloud peer"));
    assert!(
        dom.contains("data-name=\"cloud_side\""),
        "certificates:\n{dom}"
    );
    assert!(dom.contains("badge ready"), "{dom}");
    // The token is not in the page (the fragment was dropped from the address bar).
    assert!(!dom.contains(&token), "the token is in the DOM");

    let dom = dump_dom(browser, "http://127.0.0.1:8080/status");
    assert!(dom.contains("needs the admin token"), "{dom}");
    assert!(
        dom.contains("badge ready"),
        "readiness without the token:\n{dom}"
    );
    for name in ["gw1", "gw2", "lab.example", "remote"] {
        assert!(
            !dom.contains(name),
            "{name} shown without the token:\n{dom}"
        );
    }
    // A wrong token shows nothing either, and says so.
    let dom = dump_dom(browser, "http://127.0.0.1:8080/status#token=wrong");
    assert!(dom.contains("token was refused"), "{dom}");
    assert!(!dom.contains("gw1"), "{dom}");

    assert!(!lab.log_text().contains(&token), "the token is in the log");
    drop(call);
}
