//! `serde::Serialize` for [`Report`] (feature `serde`), so that CI can keep reports as
//! artifacts. The shape is a view made for readers, not the report's internals: per resource
//! its name, verdict, figures and grouped items, plus the text as `Display` prints it.

use serde::ser::{Serialize, Serializer};

use crate::report::{Line, Report, Verdict};
use crate::resource::Resource;

#[derive(serde::Serialize)]
struct ReportView<'a> {
    clean: bool,
    cycles: usize,
    warmup: usize,
    settled_secs: f64,
    budget_secs: f64,
    snapshots: usize,
    resources: Vec<LineView<'a>>,
    notes: &'a [String],
    text: String,
}

#[derive(serde::Serialize)]
struct LineView<'a> {
    resource: Resource,
    name: &'static str,
    verdict: &'a Verdict,
    start: i64,
    end: i64,
    growth: i64,
    leaked: usize,
    per_cycle: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes: Option<i64>,
    items: Vec<ItemView<'a>>,
}

#[derive(serde::Serialize)]
struct ItemView<'a> {
    label: &'a str,
    count: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    remark: Option<&'a str>,
}

impl Serialize for Report {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        ReportView {
            clean: self.is_clean(),
            cycles: self.cycles,
            warmup: self.warmup,
            settled_secs: self.settled.as_secs_f64(),
            budget_secs: self.budget.as_secs_f64(),
            snapshots: self.snapshots,
            resources: self.lines.iter().map(|l| self.line_view(l)).collect(),
            notes: &self.notes,
            text: self.to_string(),
        }
        .serialize(serializer)
    }
}

impl Report {
    fn line_view<'a>(&'a self, l: &'a Line) -> LineView<'a> {
        LineView {
            resource: l.resource,
            name: l.resource.name(),
            verdict: &l.verdict,
            start: l.start,
            end: l.end,
            growth: l.growth,
            leaked: self.leaked(l.resource),
            per_cycle: self.per_cycle(l.resource),
            bytes: self.bytes(l.resource),
            items: l
                .items
                .iter()
                .zip(
                    l.remarks
                        .iter()
                        .map(Option::as_deref)
                        .chain(std::iter::repeat(None)),
                )
                .map(|((label, count), remark)| ItemView {
                    label,
                    count: *count,
                    remark,
                })
                .collect(),
        }
    }
}
