//! The web page in a real browser: a relay process serves a store filled by replaying real
//! captures (an SMDR day with a webhook sink that accepts some calls and rejects the rest, and
//! an Asterisk blind transfer), and headless Chromium loads the pages. What is checked is the
//! DOM Chromium built after parsing the HTML and the inline SVG (`--dump-dom`), and screenshots
//! of the laid-out pages (`--screenshot`).
//!
//! Chromium is required: without it the test fails and says to run `scripts/test.sh`, which
//! installs it (Debian's `chromium`). Set `CHROMIUM` to use another binary, and
//! `BROWSER_SHOTS` to a directory to keep the screenshots somewhere else than the test's temp
//! directory (their paths are printed either way).
#![cfg(unix)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    missing_docs
)]

mod common;

use std::collections::BTreeMap;
use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Receiver, Relay, fixture, tempdir};
use rusqlite::Connection;

/// How long one Chromium run may take before it is killed and the test fails.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(30);

/// The size of the screenshots.
const WINDOW: (u32, u32) = (1280, 900);

/// A screenshot of a blank 1280×900 page is about 5 KB; the pages here are well over 50 KB.
const MIN_SCREENSHOT_BYTES: u64 = 30_000;

/// The Chromium binary: `$CHROMIUM`, else the first of the usual names on `PATH`.
fn find_chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(path);
    }
    let names = [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ];
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "chromium not found (looked for {names:?} on PATH, and $CHROMIUM is not set): this test \
         drives a real headless browser; run scripts/test.sh, which installs it (Debian package \
         `chromium`), or `apt-get install chromium`"
    );
}

/// Headless Chromium with a fresh profile per run, killed (with everything it started) after
/// [`CHROMIUM_TIMEOUT`].
struct Browser {
    bin: PathBuf,
    dir: PathBuf,
    runs: AtomicUsize,
}

impl Browser {
    fn new(dir: &Path) -> Self {
        Self {
            bin: find_chromium(),
            dir: dir.to_path_buf(),
            runs: AtomicUsize::new(0),
        }
    }

    /// Runs Chromium with `args` then `url`; returns its standard output.
    fn run(&self, args: &[String], url: &str) -> String {
        let n = self.runs.fetch_add(1, Ordering::Relaxed);
        let profile = self.dir.join(format!("profile-{n}"));
        std::fs::create_dir_all(&profile).unwrap();
        let mut cmd = Command::new(&self.bin);
        cmd.args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--mute-audio",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that a hung run is killed with its helper processes.
        .process_group(0);
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.bin.display()));
        let pid = child.id();
        let mut stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let out = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            s
        });
        let err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if started.elapsed() > CHROMIUM_TIMEOUT {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // Whatever of the group is left (helpers of a finished run, or all of a hung one).
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .stderr(Stdio::null())
            .status();
        let _ = child.wait();
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        let _ = std::fs::remove_dir_all(&profile);
        match status {
            Some(s) if s.success() => {
                println!(
                    "chromium {} {url}: {:.1} s",
                    args.join(" "),
                    started.elapsed().as_secs_f64()
                );
                stdout
            }
            Some(s) => panic!("chromium {args:?} {url} failed ({s}):\n{stderr}"),
            None => panic!(
                "chromium {args:?} {url} did not finish in {CHROMIUM_TIMEOUT:?}; killed:\n{stderr}"
            ),
        }
    }

    /// The DOM after the page loaded, as Chromium serialises it.
    fn dom(&self, url: &str) -> String {
        let dom = self.run(&["--dump-dom".to_owned()], url);
        assert!(dom.contains("</html>"), "no DOM from {url}: {dom}");
        dom
    }

    /// A screenshot of the page in a [`WINDOW`]-sized window; checks it is a PNG of that size
    /// with something on it, and returns its path.
    fn screenshot(&self, url: &str, png: &Path) -> PathBuf {
        let _ = std::fs::remove_file(png);
        self.run(
            &[
                format!("--screenshot={}", png.display()),
                format!("--window-size={},{}", WINDOW.0, WINDOW.1),
            ],
            url,
        );
        let bytes = std::fs::read(png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
        assert_eq!(bytes.get(..8), Some(&b"\x89PNG\r\n\x1a\n"[..]), "not a PNG");
        assert_eq!(bytes.get(12..16), Some(&b"IHDR"[..]), "no IHDR first");
        let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
        assert_eq!((be(16), be(20)), WINDOW, "screenshot size");
        assert!(
            bytes.len() as u64 >= MIN_SCREENSHOT_BYTES,
            "{} is {} bytes: a blank page?",
            png.display(),
            bytes.len()
        );
        println!("screenshot {} ({} bytes)", png.display(), bytes.len());
        png.to_path_buf()
    }
}

/// Runs a relay binary to completion (a replay), at most two minutes.
fn replay(bin: &str, args: &[&str]) {
    let mut child = Command::new(bin)
        .args(args)
        .env_remove("WEBHOOK_URL")
        .env_remove("SMDR_WEBHOOK_URL")
        .env_remove("REDIS_URL")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the replay");
    let mut stderr = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{bin} {args:?} did not finish: {}", err.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        status.success(),
        "{bin} {args:?}: {status}: {}",
        err.join().unwrap()
    );
}

/// The text between the first `start` and the next `end` after it.
fn between<'a>(s: &'a str, start: &str, end: &str) -> &'a str {
    let from = s
        .find(start)
        .unwrap_or_else(|| panic!("no {start:?} in:\n{s}"))
        + start.len();
    let rest = &s[from..];
    &rest[..rest
        .find(end)
        .unwrap_or_else(|| panic!("no {end:?} after {start:?}"))]
}

/// Every `/calls/<id>` link target, in document order.
fn call_links(dom: &str) -> Vec<String> {
    dom.split("href=\"/calls/")
        .skip(1)
        .map(|s| s[..s.find('"').unwrap()].to_owned())
        .collect()
}

/// The numbers of the hour bars' titles: (answered, not answered) per hour.
fn hour_bars(dom: &str) -> Vec<(u64, u64)> {
    dom.split("<g class=\"hour\"><title>")
        .skip(1)
        .map(|g| {
            let title = &g[..g.find("</title>").unwrap()];
            // "2018-01-05 14:00–15:00: 25 calls, 22 answered, 3 not answered"
            let words: Vec<&str> = title.split([' ', ',']).filter(|w| !w.is_empty()).collect();
            let before = |word: &str| -> u64 {
                let i = words
                    .windows(2)
                    .position(|w| w[1] == word && w[0].parse::<u64>().is_ok())
                    .unwrap_or_else(|| panic!("no count before {word:?} in {title:?}"));
                words[i].parse().unwrap()
            };
            (before("answered"), before("not"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_page_in_a_real_browser() {
    let browser = Browser::new(&tempdir("browser-chromium"));
    let dir = tempdir("browser");
    let shots = std::env::var_os("BROWSER_SHOTS").map_or_else(|| dir.clone(), PathBuf::from);
    std::fs::create_dir_all(&shots).unwrap();
    let db = dir.join("calls.db");
    let db_arg = db.to_str().unwrap();

    // An SMDR day through a webhook that takes the first 200 calls and rejects the rest (400:
    // dead at once), then an Asterisk blind transfer (store only) into the same store.
    let hook = Receiver::start(None, 400).await;
    hook.script
        .lock()
        .unwrap()
        .queue
        .extend(std::iter::repeat_n((200, None), 200));
    let smdr = fixture("ccbc_rw180105_day_34fields.txt");
    let url = hook.url();
    replay(
        env!("CARGO_BIN_EXE_smdr-relay"),
        &[
            "--replay",
            smdr.to_str().unwrap(),
            "--db",
            db_arg,
            "--http",
            "off",
            "--webhook-url",
            &url,
            "--webhook-retry-delay",
            "1",
        ],
    );
    let ami = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/asterisk/05_blind_transfer/ami.raw");
    replay(
        env!("CARGO_BIN_EXE_ami-relay"),
        &[
            "--replay",
            ami.to_str().unwrap(),
            "--db",
            db_arg,
            "--http",
            "off",
        ],
    );
    hook.stop();

    // What the store holds, read independently of the web server.
    let conn = Connection::open(&db).unwrap();
    let (day_answered, day_unanswered): (u64, u64) = conn
        .query_row(
            "SELECT SUM(answered), SUM(NOT answered) FROM calls
             WHERE start_time >= '2018-01-05' AND start_time < '2018-01-06'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let day_calls: u64 = conn
        .query_row(
            "SELECT COUNT(*) FROM calls WHERE start_time < '2018-01-06'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let states: BTreeMap<String, u64> = conn
        .prepare("SELECT state, COUNT(*) FROM deliveries WHERE sink = 'webhook' GROUP BY state")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let state = |s: &str| states.get(s).copied().unwrap_or(0);
    assert_eq!(state("delivered"), 200, "{states:?}");
    assert!(state("dead") > 50, "{states:?}");
    let body = |id: &str| -> serde_json::Value {
        let bytes: Vec<u8> = conn
            .query_row("SELECT body FROM calls WHERE id = ?1", [id], |r| r.get(0))
            .unwrap();
        serde_json::from_slice(&cdr_sinks::body::decode(&bytes).unwrap()).unwrap()
    };
    let length = |v: &serde_json::Value, key: &str| v[key].as_array().map_or(0, Vec::len);
    let ami_id: String = conn
        .query_row("SELECT id FROM calls WHERE source = 'ami'", [], |r| {
            r.get(0)
        })
        .unwrap();
    let legs = length(&body(&ami_id), "legs");
    assert!(legs >= 2, "the blind transfer has {legs} legs");
    let records = |id: &str| length(&body(id), "records");

    // The relay, serving the store on a free port.
    let relay = Relay::start(
        &[
            "--db",
            db_arg,
            "--http",
            "127.0.0.1:0",
            "--smdr-listen",
            "127.0.0.1:0",
        ],
        &[],
        true,
        true,
    );
    let base = format!("http://{}", relay.http.unwrap());

    // The list, filtered to the SMDR day.
    let list_url = format!("{base}/?to=2018-01-05");
    let dom = browser.dom(&list_url);
    // The chart of calls per hour: an SVG with a title, one bar group per hour whose numbers
    // add up to the store's, stacked answered / not answered rects, axis and legend text.
    let chart = between(
        &dom,
        "<figure class=\"chart\" id=\"calls-per-hour\">",
        "</figure>",
    );
    assert!(chart.contains("<svg"), "{chart}");
    assert!(chart.contains("role=\"img\""));
    assert!(chart.contains("<title id=\"hours-title\">Calls per hour"));
    assert!(chart.contains("<figcaption>Calls per hour, 2018-01-05 00:00 to 2018-01-06 00:00"));
    let bars = hour_bars(chart);
    assert_eq!(bars.len(), 24);
    let answered: u64 = bars.iter().map(|b| b.0).sum();
    let unanswered: u64 = bars.iter().map(|b| b.1).sum();
    assert_eq!((answered, unanswered), (day_answered, day_unanswered));
    assert_eq!(
        chart.matches("<rect class=\"answered\"").count(),
        bars.iter().filter(|b| b.0 > 0).count()
    );
    assert_eq!(
        chart.matches("<rect class=\"unanswered\"").count(),
        bars.iter().filter(|b| b.1 > 0).count()
    );
    assert!(unanswered > 0 && answered > 0);
    assert!(chart.contains(&format!(">answered ({answered})</text>")));
    assert!(chart.contains(&format!(">not answered ({unanswered})</text>")));
    assert!(chart.contains(">12:00</text>"), "{chart}");
    // Delivery state per sink: a table row with the counts and a bar.
    let sinks = between(
        &dom,
        "<figure class=\"chart\" id=\"deliveries\">",
        "</figure>",
    );
    let webhook = between(sinks, "<th scope=\"row\">webhook</th>", "</tr>");
    assert!(
        webhook.contains(&format!(
            "<td class=\"n delivered\">{}</td><td class=\"n pending\">{}</td><td class=\"n dead\">{}</td>",
            state("delivered"),
            state("pending"),
            state("dead")
        )),
        "{webhook}"
    );
    assert!(webhook.contains("<svg"), "{webhook}");
    assert!(webhook.contains("<rect class=\"delivered\""));
    assert!(webhook.contains("<rect class=\"dead\""));
    // The filter form, filled in, and the calls table with its headers and a page of rows.
    let form = between(&dom, "<form method=\"get\" action=\"/\">", "</form>");
    for name in ["from", "number"] {
        assert!(
            form.contains(&format!("name=\"{name}\" value=\"\"")),
            "{form}"
        );
    }
    assert!(form.contains("name=\"to\" value=\"2018-01-05\""), "{form}");
    assert!(form.contains("<select name=\"direction\">"));
    assert!(form.contains("<select name=\"complete\">"));
    assert!(
        dom.contains(&format!("{day_calls} calls · page 1 of")),
        "{dom}"
    );
    let table = between(&dom, "<th>Start</th>", "</table>");
    assert!(table.contains("<th>Direction</th>") && table.contains("<th>webhook</th>"));
    let links = call_links(table);
    assert_eq!(links.len(), 50);
    assert!(
        !links.contains(&ami_id),
        "the filter leaves the Asterisk call out"
    );
    assert!(dom.contains("href=\"/?to=2018-01-05&amp;page=2\">Older ›</a>"));
    // Follow the first call of the page made of several SMDR records.
    let smdr_id = links
        .iter()
        .find(|id| records(id) >= 2)
        .expect("a call with several records on the first page")
        .clone();
    let n_records = records(&smdr_id);
    let list_png = browser.screenshot(&list_url, &shots.join("calls-list.png"));

    // The unfiltered list starts with the Asterisk call (the newest); follow its link.
    let dom = browser.dom(&format!("{base}/"));
    let table = between(&dom, "<th>Start</th>", "</table>");
    let first = call_links(table).into_iter().next().expect("a first row");
    assert_eq!(first, ami_id);
    let bars = hour_bars(between(&dom, "id=\"calls-per-hour\"", "</figure>"));
    assert_eq!(bars.iter().map(|b| b.0 + b.1).sum::<u64>(), 1, "{bars:?}");

    // The SMDR call: one timeline row per record, the records table, the JSON.
    let smdr_url = format!("{base}/calls/{smdr_id}");
    let dom = browser.dom(&smdr_url);
    let timeline = between(
        &dom,
        "<figure class=\"chart\" id=\"timeline\">",
        "</figure>",
    );
    assert!(timeline.contains("<svg"), "{timeline}");
    assert!(
        timeline.contains(
            "<title id=\"timeline-title\">Timeline of the call: one row per record</title>"
        )
    );
    assert_eq!(timeline.matches("<g class=\"lane\">").count(), n_records);
    for i in 1..=n_records {
        assert!(
            timeline.contains(&format!("<g class=\"lane\"><title>Record {i}: ")),
            "{timeline}"
        );
    }
    assert!(timeline.contains("<rect class=\"connected\""), "{timeline}");
    assert!(timeline.contains(">connected</text>"), "the legend");
    assert!(dom.contains(&format!("<h3>Records ({n_records})</h3>")));
    let json = between(&dom, "<pre>", "</pre>");
    assert!(json.contains(&format!("\"id\": \"{smdr_id}\"")), "{json}");
    assert!(json.contains("\"records\": ["));

    // The Asterisk call: one row per leg, the transfer marked, the legs table, the JSON.
    let ami_url = format!("{base}/calls/{ami_id}");
    let dom = browser.dom(&ami_url);
    let timeline = between(
        &dom,
        "<figure class=\"chart\" id=\"timeline\">",
        "</figure>",
    );
    assert!(timeline.contains("one row per leg</title>"), "{timeline}");
    assert_eq!(timeline.matches("<g class=\"lane\">").count(), legs);
    assert!(timeline.contains("<rect class=\"ringing\""));
    assert!(timeline.contains("<rect class=\"connected\""));
    assert!(timeline.contains(">blind transfer</text>"), "{timeline}");
    assert!(timeline.contains("; hangup cause Normal Clearing"));
    assert!(dom.contains(&format!("<h3>Legs ({legs})</h3>")));
    let json = between(&dom, "<pre>", "</pre>");
    assert!(json.contains(&format!("\"id\": \"{ami_id}\"")), "{json}");
    assert!(json.contains("\"legs\": ["));
    let ami_png = browser.screenshot(&ami_url, &shots.join("call-asterisk.png"));
    let smdr_png = browser.screenshot(&smdr_url, &shots.join("call-smdr.png"));

    println!(
        "screenshots: {}, {}, {}",
        list_png.display(),
        ami_png.display(),
        smdr_png.display()
    );
    relay.terminate();
}
