//! What a check found, in a form a developer can act on without a debugger.

use std::fmt;
use std::time::Duration;

pub use crate::finding::Verdict;
use crate::finding::{Item, Lingering, Sites, Style, Unit};
use crate::resource::Resource;

/// One resource's figures.
#[derive(Clone, Debug)]
pub(crate) struct Line {
    pub(crate) resource: Resource,
    pub(crate) verdict: Verdict,
    /// Counts at the baseline and at the end (B0 and B2).
    pub(crate) start: i64,
    pub(crate) end: i64,
    /// What the source judged as growth: by default B2 − B0, with warm-up transients that
    /// have since gone taken out of B0.
    pub(crate) growth: i64,
    /// The items new since the baseline, grouped by name or target, most frequent first.
    pub(crate) items: Vec<(String, usize)>,
    /// Per item, what the report adds after it (`zombie ×3`), if anything.
    pub(crate) remarks: Vec<Option<String>>,
    /// Per item, where it was created, if known; its label then ends with it.
    pub(crate) origins: Vec<Option<String>>,
    /// How item labels print.
    pub(crate) style: Style,
    /// What the figures count.
    pub(crate) unit: Unit,
    /// Live bytes at the baseline and at the end, for the heap.
    pub(crate) bytes: Option<(i64, i64)>,
    /// Lines of their own after this one, for what the check did not count (`global: 2 threads
    /// created once by …`).
    pub(crate) own_lines: Vec<String>,
}

impl Line {
    pub(crate) fn new(resource: Resource, style: Style, unit: Unit) -> Self {
        Line {
            resource,
            verdict: Verdict::Clean,
            start: 0,
            end: 0,
            growth: 0,
            items: Vec::new(),
            remarks: Vec::new(),
            origins: Vec::new(),
            style,
            unit,
            bytes: None,
            own_lines: Vec::new(),
        }
    }

    /// Bytes grown from the baseline to the end, where counted.
    fn byte_growth(&self) -> Option<i64> {
        self.bytes.map(|(start, end)| end - start)
    }

    /// ` blocks` after a heap count; nothing after a count of items.
    fn unit_suffix(&self, n: i64) -> &'static str {
        match (self.unit, n.abs()) {
            (Unit::Items, _) => "",
            (Unit::Blocks, 1) => " block",
            (Unit::Blocks, _) => " blocks",
        }
    }

    pub(crate) fn set_items(&mut self, items: Vec<Item>) {
        self.items.clear();
        self.remarks.clear();
        self.origins.clear();
        for item in items {
            let label = match &item.origin {
                Some(origin) if item.label.is_empty() => origin.clone(),
                Some(origin) => format!("{} {origin}", item.label),
                None => item.label,
            };
            self.items.push((label, item.count));
            self.remarks.push(item.remark);
            self.origins.push(item.origin);
        }
    }

    fn has_origins(&self) -> bool {
        self.origins.iter().any(Option::is_some)
    }
}

/// The result of a check: per resource, the verdict, the counts and what was left behind.
///
/// With the `serde` feature it implements `serde::Serialize` (to keep reports as CI
/// artifacts): the figures per resource, the verdict, the grouped items, the notes and the
/// text as `Display` prints it.
///
/// `Display` prints the report as a test failure shows it:
///
/// ```text
/// leakcheck: leak after 20 cycles (warm-up 1, settled in 1.0 s)
///   threads  +40 (+2.00/cycle)  "cleanup" ×20, "file-state" ×20
///   fds      +20 (+1.00/cycle)  anon_inode:inotify ×20
///   tasks    +0
/// ```
#[derive(Debug)]
pub struct Report {
    pub(crate) cycles: usize,
    pub(crate) warmup: usize,
    pub(crate) settled: Duration,
    pub(crate) budget: Duration,
    pub(crate) budget_ran_out: bool,
    /// Whether the leaked items' waits end of themselves (threads in timed waits).
    pub(crate) lingering: Lingering,
    pub(crate) snapshots: usize,
    pub(crate) lines: Vec<Line>,
    pub(crate) notes: Vec<String>,
}

// A report is the harness's memory, wherever it goes: it is made, cloned and freed with heap
// counting paused on the calling thread, so that a report held, cloned or dropped while
// another check counts the heap (a check inside a checked body) changes nothing there.
impl Clone for Report {
    fn clone(&self) -> Self {
        let _paused = crate::alloc::pause();
        Report {
            cycles: self.cycles,
            warmup: self.warmup,
            settled: self.settled,
            budget: self.budget,
            budget_ran_out: self.budget_ran_out,
            lingering: self.lingering,
            snapshots: self.snapshots,
            lines: self.lines.clone(),
            notes: self.notes.clone(),
        }
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        let _paused = crate::alloc::pause();
        drop(std::mem::take(&mut self.lines));
        drop(std::mem::take(&mut self.notes));
    }
}

impl Report {
    /// `Ok` when clean, else the [`Leak`] that carries it.
    pub(crate) fn into_result(self) -> Result<Report, Leak> {
        if self.is_clean() {
            Ok(self)
        } else {
            Err(Leak::new(self))
        }
    }

    /// True when no resource leaked and every requested resource could be read.
    /// Bounded growth and resources this platform cannot see do not make a report unclean.
    pub fn is_clean(&self) -> bool {
        self.lines
            .iter()
            .all(|l| !matches!(l.verdict, Verdict::Leaking | Verdict::Failed(_)))
    }

    /// How many of `r` were left behind (B2 − B0) if `r` was judged leaking, else 0.
    pub fn leaked(&self, r: Resource) -> usize {
        self.line(r)
            .filter(|l| l.verdict == Verdict::Leaking)
            .map_or(0, |l| l.growth.max(0) as usize)
    }

    /// The number of measured cycles.
    pub fn cycles(&self) -> usize {
        self.cycles
    }

    /// The number of warm-up cycles run before the baseline.
    pub fn warmup(&self) -> usize {
        self.warmup
    }

    /// The verdict on `r`, or `None` if it was not part of the check.
    pub fn verdict(&self, r: Resource) -> Option<&Verdict> {
        self.line(r).map(|l| &l.verdict)
    }

    /// Net growth of `r` from the baseline to the end (negative if it shrank; 0 if unmeasured).
    pub fn growth(&self, r: Resource) -> isize {
        self.line(r).map_or(0, |l| l.growth as isize)
    }

    /// Net growth of live heap bytes from the baseline to the end, for [`Resource::Heap`]
    /// (`None` for other resources, or when the heap was not measured). Bytes are shown,
    /// not judged: the verdict is on blocks.
    pub fn bytes(&self, r: Resource) -> Option<i64> {
        self.line(r)
            .filter(|l| {
                matches!(
                    l.verdict,
                    Verdict::Clean | Verdict::Bounded | Verdict::Leaking
                )
            })
            .and_then(Line::byte_growth)
    }

    /// Growth of `r` per measured cycle.
    pub fn per_cycle(&self, r: Resource) -> f64 {
        self.growth(r) as f64 / self.cycles as f64
    }

    /// The items of `r` new since the baseline, as (name or target, count), most frequent
    /// first. Filled for resources that grew.
    pub fn items(&self, r: Resource) -> &[(String, usize)] {
        self.line(r).map_or(&[], |l| &l.items)
    }

    /// Total real time spent waiting for resources to settle.
    pub fn settled(&self) -> Duration {
        self.settled
    }

    /// How many snapshots the check took: 2 for a single clean cycle where nothing lingered
    /// (one before, one after), more when it had to wait.
    pub fn snapshots(&self) -> usize {
        self.snapshots
    }

    /// Remarks that qualify the verdict (for example, other tests running in the process).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Whether the heap was judged leaking over at least 2 cycles: the case a check runs
    /// further cycles for, to record where the blocks that stay are allocated.
    pub(crate) fn wants_heap_sites(&self) -> bool {
        self.cycles >= 2 && self.verdict(Resource::Heap) == Some(&Verdict::Leaking)
    }

    /// Adds where the leaked heap blocks were allocated: the heap line's items, and notes.
    pub(crate) fn add_heap_sites(&mut self, sites: Sites) {
        let _paused = crate::alloc::pause();
        if let Some(line) = self.lines.iter_mut().find(|l| l.resource == Resource::Heap) {
            line.set_items(sites.items);
        }
        self.notes.extend(sites.notes);
    }

    fn line(&self, r: Resource) -> Option<&Line> {
        self.lines.iter().find(|l| l.resource == r)
    }

    /// The lines of their own of every resource (`global: …`), after the figures.
    fn write_own_lines(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in self.lines.iter().flat_map(|l| &l.own_lines) {
            write!(f, "\n  {line}")?;
        }
        Ok(())
    }

    fn write_notes(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for note in &self.notes {
            write!(f, "\n  note: {note}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cycles = match self.cycles {
            1 => "1 cycle".to_owned(),
            n => format!("{n} cycles"),
        };
        let warmup = match self.warmup {
            0 => String::new(),
            n => format!("warm-up {n}, "),
        };
        let settled = Secs(self.settled);
        if self.is_clean() {
            write!(
                f,
                "leakcheck: clean after {cycles} ({warmup}settled in {settled}):"
            )?;
            self.write_clean_figures(f)?;
            self.write_own_lines(f)?;
            return self.write_notes(f);
        }
        let leaked = self.lines.iter().any(|l| l.verdict == Verdict::Leaking);
        let what = if leaked { "leak" } else { "check failed" };
        write!(
            f,
            "leakcheck: {what} after {cycles} ({warmup}settled in {settled})"
        )?;
        for l in &self.lines {
            self.write_line(f, l)?;
        }
        self.write_own_lines(f)?;
        if leaked {
            self.write_settle_advice(f)?;
        }
        self.write_notes(f)
    }
}

impl Report {
    /// A clean report's figures on its first line: `, threads 3→3, heap 10→12 blocks`.
    fn write_clean_figures(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, l) in self.lines.iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            match &l.verdict {
                Verdict::NotMeasured(why) => write!(f, "{sep}{} not measured ({why})", l.resource)?,
                Verdict::Bounded => write!(
                    f,
                    "{sep}{} {}→{}{} (bounded growth {:+})",
                    l.resource,
                    l.start,
                    l.end,
                    l.unit_suffix(l.end),
                    l.growth
                )?,
                _ => write!(
                    f,
                    "{sep}{} {}→{}{}",
                    l.resource,
                    l.start,
                    l.end,
                    l.unit_suffix(l.end)
                )?,
            }
        }
        Ok(())
    }

    /// One resource's line of a report that is not clean: its growth, per cycle when it
    /// leaks, bytes for the heap, then its grouped items.
    fn write_line(&self, f: &mut fmt::Formatter<'_>, l: &Line) -> fmt::Result {
        write!(f, "\n  {:<8} ", l.resource.name())?;
        let verdict = match &l.verdict {
            Verdict::NotMeasured(why) => return write!(f, "not measured ({why})"),
            Verdict::Failed(why) => return write!(f, "could not be read: {why}"),
            verdict => verdict,
        };
        let per_cycle = *verdict == Verdict::Leaking && self.cycles > 1;
        write!(f, "{:+}{}", l.growth, l.unit_suffix(l.growth))?;
        match l.unit {
            Unit::Items if per_cycle => write!(f, " ({:+.2}/cycle)", self.per_cycle(l.resource))?,
            Unit::Blocks if per_cycle => write!(f, " ({:+.1}/cycle)", self.per_cycle(l.resource))?,
            Unit::Items | Unit::Blocks => {}
        }
        if let Some(bytes) = l.byte_growth() {
            write!(f, ", {}", Bytes(bytes))?;
            if per_cycle {
                write!(f, " ({}/cycle)", Bytes(bytes / self.cycles as i64))?;
            }
        }
        if *verdict == Verdict::Bounded {
            write!(f, " bounded (grew, then stopped: not a leak)")?;
        }
        write_items(f, l)
    }

    /// After a leak, whether a longer settle could help: the budget that covers every leaked
    /// thread's timed wait, or a budget that ran out while something may only be slow.
    fn write_settle_advice(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.lingering {
            // Every leaked thread's wait has an end: a budget that reaches past it may pass.
            Lingering::Within(left) => {
                let ms = settle_ms_to_cover(self.budget, left);
                write!(
                    f,
                    "\n  note: every leaked thread is in a timed wait that ends within {:.1} s; \
                     if they exit then, a settle budget of {ms} ms covers it: settle_ms = {ms} \
                     (attribute), .settle(Duration::from_millis({ms})) or \
                     LEAKCHECK_SETTLE_MS={ms}",
                    left.as_secs_f64()
                )
            }
            // A thread in a wait with no end: no budget helps.
            Lingering::Never => Ok(()),
            Lingering::Unknown if self.budget_ran_out => write!(
                f,
                "\n  note: waited the whole settle budget ({}); if these only exit slowly, \
                 raise it with .settle(..) or LEAKCHECK_SETTLE_MS",
                Secs(self.budget)
            ),
            Lingering::Unknown => Ok(()),
        }
    }
}

/// A settle budget that reaches past a wait ending `left` after a settle of `budget` ran out,
/// in whole seconds: the settle that ran out began `budget` before the wait was read, and a
/// thread needs a moment to exit once its wait ends (a quarter of a second is ample).
fn settle_ms_to_cover(budget: Duration, left: Duration) -> u128 {
    (budget + left + Duration::from_millis(250))
        .as_millis()
        .div_ceil(1000)
        * 1000
}

/// Lists the grouped items after a line: `"cleanup" ×20, "file-state" ×20`; with origins,
/// one group per line, counts first:
///
/// ```text
///   threads  +20 (+1.00/cycle)
///            ×20 "audit-flusher" spawned at src/audit.rs:31 (blocked in futex)
/// ```
fn write_items(f: &mut fmt::Formatter<'_>, l: &Line) -> fmt::Result {
    const SHOWN: usize = 8;
    if l.has_origins() {
        for (i, (label, n)) in l.items.iter().take(SHOWN).enumerate() {
            write!(f, "\n           ×{n:<3} ")?;
            match l.origins.get(i).and_then(Option::as_deref) {
                Some(origin) => {
                    let name = label
                        .strip_suffix(origin)
                        .map(str::trim_end)
                        .filter(|name| !name.is_empty());
                    match (name, l.style) {
                        (Some(name), Style::Quoted) => write!(f, "{name:?} ")?,
                        (Some(name), Style::Plain) => write!(f, "{name} ")?,
                        (None, _) => {}
                    }
                    write!(f, "{origin}")?;
                }
                None => match l.style {
                    Style::Quoted => write!(f, "{label:?}")?,
                    Style::Plain => write!(f, "{label}")?,
                },
            }
            if let Some(remark) = l.remarks.get(i).and_then(Option::as_deref) {
                write!(f, " ({remark})")?;
            }
        }
        if l.items.len() > SHOWN {
            let rest: usize = l.items[SHOWN..].iter().map(|(_, n)| n).sum();
            write!(f, "\n           and {rest} more")?;
        }
        return Ok(());
    }
    for (i, (label, n)) in l.items.iter().take(SHOWN).enumerate() {
        let sep = if i == 0 { "  " } else { ", " };
        match l.style {
            Style::Quoted => write!(f, "{sep}{label:?} ×{n}")?,
            Style::Plain => write!(f, "{sep}{label} ×{n}")?,
        }
        if let Some(remark) = l.remarks.get(i).and_then(Option::as_deref) {
            write!(f, " ({remark})")?;
        }
    }
    if l.items.len() > SHOWN {
        let rest: usize = l.items[SHOWN..].iter().map(|(_, n)| n).sum();
        write!(f, ", and {rest} more")?;
    }
    Ok(())
}

/// A signed byte count as a person reads it: `+480 B`, `+9.4 KiB`, `-1.2 MiB`.
struct Bytes(i64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { '-' } else { '+' };
        let n = self.0.unsigned_abs() as f64;
        const KIB: f64 = 1024.0;
        if n < KIB {
            write!(f, "{sign}{n} B")
        } else if n < KIB * KIB {
            write!(f, "{sign}{:.1} KiB", n / KIB)
        } else if n < KIB * KIB * KIB {
            write!(f, "{sign}{:.1} MiB", n / (KIB * KIB))
        } else {
            write!(f, "{sign}{:.1} GiB", n / (KIB * KIB * KIB))
        }
    }
}

/// A duration as a person reads it: `850 µs`, `12.3 ms`, `1.0 s`.
struct Secs(Duration);

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.as_secs_f64();
        if s >= 1.0 {
            write!(f, "{s:.1} s")
        } else if s >= 1e-3 {
            write!(f, "{:.1} ms", s * 1e3)
        } else {
            write!(f, "{:.0} µs", s * 1e6)
        }
    }
}

/// A check that failed: something leaked, or a resource could not be read.
///
/// ```
/// # #[cfg(target_os = "linux")] {
/// let leaked = leakcheck::LeakCheck::new()
///     .settle(std::time::Duration::from_millis(50))
///     .run(|| std::mem::forget(std::fs::File::open("Cargo.toml").unwrap()))
///     .unwrap_err();
/// assert_eq!(leaked.report().leaked(leakcheck::Resource::Fds), 1);
/// # }
/// ```
pub struct Leak {
    /// Dropped by hand, with heap counting paused (see `Report`'s `Drop`).
    report: std::mem::ManuallyDrop<Box<Report>>,
}

impl Leak {
    pub(crate) fn new(report: Report) -> Self {
        let _paused = crate::alloc::pause();
        Leak {
            report: std::mem::ManuallyDrop::new(Box::new(report)),
        }
    }

    /// The full report.
    pub fn report(&self) -> &Report {
        &self.report
    }
}

impl Clone for Leak {
    fn clone(&self) -> Self {
        Leak::new(Report::clone(&self.report))
    }
}

impl Drop for Leak {
    fn drop(&mut self) {
        let _paused = crate::alloc::pause();
        // SAFETY: dropped once, here; never used again.
        unsafe { std::mem::ManuallyDrop::drop(&mut self.report) };
    }
}

impl fmt::Display for Leak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.report(), f)
    }
}

// Debug shows the report as text: `unwrap()` and `expect()` on a check then print something
// a developer can read.
impl fmt::Debug for Leak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\n{}", self.report())
    }
}

impl std::error::Error for Leak {}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(lines: Vec<Line>) -> Report {
        Report {
            cycles: 20,
            warmup: 1,
            settled: Duration::from_millis(1000),
            budget: Duration::from_secs(1),
            budget_ran_out: false,
            lingering: Lingering::Unknown,
            snapshots: 4,
            lines,
            notes: vec![],
        }
    }

    fn line(resource: Resource, verdict: Verdict, growth: i64, items: &[(&str, usize)]) -> Line {
        let style = match resource {
            Resource::Threads | Resource::Children => Style::Quoted,
            Resource::Fds | Resource::Tasks | Resource::Heap | Resource::Custom(_) => Style::Plain,
        };
        let mut line = Line::new(resource, style, Unit::Items);
        line.verdict = verdict;
        line.start = 10;
        line.end = 10 + growth;
        line.growth = growth;
        line.set_items(
            items
                .iter()
                .map(|(s, n)| Item::new(s.to_string(), *n))
                .collect(),
        );
        line
    }

    #[test]
    fn leak_report_reads_like_the_example() {
        let r = report(vec![
            line(
                Resource::Threads,
                Verdict::Leaking,
                40,
                &[("cleanup", 20), ("file-state", 20)],
            ),
            line(
                Resource::Fds,
                Verdict::Leaking,
                20,
                &[("anon_inode:inotify", 20)],
            ),
            line(Resource::Tasks, Verdict::Clean, 0, &[]),
        ]);
        assert_eq!(
            r.to_string(),
            "leakcheck: leak after 20 cycles (warm-up 1, settled in 1.0 s)\n  \
             threads  +40 (+2.00/cycle)  \"cleanup\" ×20, \"file-state\" ×20\n  \
             fds      +20 (+1.00/cycle)  anon_inode:inotify ×20\n  \
             tasks    +0"
        );
        assert!(!r.is_clean());
        assert_eq!(r.leaked(Resource::Threads), 40);
        assert_eq!(r.leaked(Resource::Tasks), 0);
    }

    #[test]
    fn heap_line_shows_blocks_and_bytes_per_cycle() {
        let mut heap = line(Resource::Heap, Verdict::Leaking, 200, &[]);
        heap.unit = Unit::Blocks;
        heap.bytes = Some((50_000, 50_000 + 9_600));
        let r = report(vec![heap]);
        assert_eq!(
            r.to_string(),
            "leakcheck: leak after 20 cycles (warm-up 1, settled in 1.0 s)\n  \
             heap     +200 blocks (+10.0/cycle), +9.4 KiB (+480 B/cycle)"
        );
        assert_eq!(r.leaked(Resource::Heap), 200);
        assert_eq!(r.bytes(Resource::Heap), Some(9_600));
    }

    #[test]
    fn clean_report_is_one_line() {
        let mut r = report(vec![
            line(Resource::Threads, Verdict::Clean, 0, &[]),
            line(Resource::Fds, Verdict::Bounded, 2, &[]),
        ]);
        r.settled = Duration::from_micros(1200);
        assert_eq!(
            r.to_string(),
            "leakcheck: clean after 20 cycles (warm-up 1, settled in 1.2 ms): \
             threads 10→10, fds 10→12 (bounded growth +2)"
        );
        assert!(r.is_clean());
    }

    #[test]
    fn failed_read_is_not_clean_and_names_the_path() {
        let r = report(vec![line(
            Resource::Fds,
            Verdict::Failed("cannot read /proc/self/fd: Permission denied".into()),
            0,
            &[],
        )]);
        assert!(!r.is_clean());
        assert!(r.to_string().contains("check failed"));
        assert!(r.to_string().contains("/proc/self/fd: Permission denied"));
    }
}
