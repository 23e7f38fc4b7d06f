//! With the `serde` feature, a report serialises to JSON that CI can keep as an artifact: the
//! verdict, figures and grouped items per resource, and the text as printed.
#![cfg(target_os = "linux")]

mod common;

use std::time::Duration;

use common::Planted;
use leakcheck::LeakCheck;

#[leakcheck::isolated]
fn a_leak_report_serialises_with_its_figures_and_items() {
    let planted = Planted::new();
    let leak = LeakCheck::new()
        .cycles(4)
        .settle(Duration::from_millis(50))
        .probe("registry", || 2)
        .run(|| planted.parked_thread("serialised"))
        .unwrap_err();
    let json = serde_json::to_value(leak.report()).unwrap();
    assert_eq!(json["clean"], false);
    assert_eq!(json["cycles"], 4);
    let threads = &json["resources"][0];
    assert_eq!(threads["resource"], "threads");
    assert_eq!(threads["verdict"], "leaking");
    assert_eq!(threads["leaked"], 4);
    assert_eq!(threads["per_cycle"], 1.0);
    // The label carries the origin after the name where this build knows one.
    let label = threads["items"][0]["label"].as_str().unwrap();
    assert!(
        label == "serialised" || label.starts_with("serialised "),
        "{label}"
    );
    assert_eq!(threads["items"][0]["count"], 4);
    let probe = json["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "registry")
        .unwrap();
    assert_eq!(probe["resource"]["custom"], "registry");
    assert_eq!(probe["verdict"], "clean");
    assert_eq!(json["text"], leak.report().to_string());
}
